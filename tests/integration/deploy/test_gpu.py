"""`lowdose run --gpus 0` (the local-cuda backend) end to end on a GPU machine (skipped without CUDA)."""

from __future__ import annotations

import pytest

from tests.integration.deploy.conftest import assert_same_outputs, child_env, lowdose, pipeline_yaml

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_local_cuda_run_matches_the_cpu_reference(deploy_inputs, local_reference, tmp_path):
    from lowdose.parallel.cluster import cuda_available

    if not cuda_available():
        pytest.skip("no CUDA device visible to torch")
    pytest.importorskip("dask_cuda", reason="needs the [gpu] extra (dask-cuda)")
    series, model = deploy_inputs
    config = pipeline_yaml(tmp_path / "p.yaml", series, tmp_path / "out", model)
    # `--gpus 0` selects local-cuda on GPU 0 (one worker); fp32 so outputs match the CPU run.
    text = config.read_text().replace("device: cpu", "device: cuda") + "amp: false\n"
    config.write_text(text)
    proc = lowdose("run", str(config), "--gpus", "0", "--quiet", env=child_env(), timeout_s=600)
    assert "8 frames in 4 chunks (4 run, 0 already done)" in proc.stdout
    try:
        assert_same_outputs(tmp_path / "out", local_reference)
    except AssertionError:
        # cuDNN convolutions may differ from CPU in the last bits; then the tables still must agree closely.
        import numpy as np

        from lowdose.parallel.outputs import open_denoised

        got = open_denoised(tmp_path / "out" / "denoised.zarr")["denoised"].values
        ref = open_denoised(local_reference / "denoised.zarr")["denoised"].values
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
