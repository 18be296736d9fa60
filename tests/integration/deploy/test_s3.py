"""Remote storage: a FrameSeries on a local S3-compatible server (moto), read by a multi-process cluster.

The endpoint and credentials come from the standard AWS environment variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), set for this process and for
the `dask worker` processes, so that workers read chunks from S3 themselves.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from tests.integration.deploy.conftest import (
    assert_same_outputs,
    child_env,
    free_port,
    lowdose,
    pipeline_yaml,
    start_dask_processes,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bucket(s3) -> str:
    """A bucket of its own for each setup of this module's fixtures.

    moto keeps its buckets in process-wide state that outlives the server, and with
    `--dist worksteal` this module's tests can run in one xdist process with other
    modules' tests in between, so the module fixtures may be set up twice there.
    """
    import s3fs

    name = f"lowdose-test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(name)
    return name


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """moto's standalone S3 server on 127.0.0.1 and the AWS environment pointing at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture(scope="module")
def s3_cluster(s3) -> Iterator[str]:
    with start_dask_processes(child_env(**s3)) as address:
        yield address


@pytest.fixture(scope="module")
def remote_series(s3, bucket, deploy_inputs) -> str:
    """The deploy test series copied frame for frame into s3://<bucket>/series.zarr with the store API."""
    import fsspec

    from lowdose.store.schema import ground_truth_path
    from lowdose.store.series import append_frames, create_frame_series, open_series

    series, _ = deploy_inputs
    local = open_series(series)
    url = f"s3://{bucket}/series.zarr"
    create_frame_series(
        url,
        local["counts"].shape[1:],
        chunk_frames=int(local["counts"].data.chunks[0][0]),
        with_clean=True,
        pixel_size_A=float(local.attrs["pixel_size_A"]),
        frame_rate_hz=float(local.attrs["frame_rate_hz"]),
        dose_e_per_px=float(local.attrs["dose_e_per_px"]),
    )
    append_frames(url, local["counts"].values, local["clean"].values)
    with fsspec.open(f"s3://{bucket}/series.columns.parquet", "wb") as f:
        f.write(ground_truth_path(series).read_bytes())
    return url


def test_series_on_s3_is_read_by_the_workers(remote_series, s3_cluster, deploy_inputs):
    from distributed import Client

    from lowdose.store.series import open_series

    series, _ = deploy_inputs
    local = open_series(series)["counts"].values
    remote = open_series(remote_series)
    assert remote.attrs["pixel_size_A"] == open_series(series).attrs["pixel_size_A"]
    with Client(s3_cluster, timeout=30) as client:
        counts = remote["counts"].data
        assert counts.npartitions == 4
        # Each chunk is read from S3 on a worker (the graph holds zarr reads, not data).
        per_frame = client.compute(counts.sum(axis=(1, 2), dtype="int64")).result(timeout=120)
        full = client.compute(counts).result(timeout=120)
        who = client.run(lambda: os.environ.get("AWS_ENDPOINT_URL"))
    assert set(who.values()) == {os.environ["AWS_ENDPOINT_URL"]}
    np.testing.assert_array_equal(per_frame, local.reshape(len(local), -1).sum(axis=1))
    np.testing.assert_array_equal(full, local)


def test_pipeline_from_and_to_s3_matches_the_local_run(
    remote_series, s3, bucket, s3_cluster, deploy_inputs, local_reference, tmp_path
):
    import fsspec

    _, model = deploy_inputs
    out_url = f"s3://{bucket}/run"
    config = pipeline_yaml(tmp_path / "p.yaml", remote_series, out_url, model)
    lowdose("run", str(config), "--scheduler", s3_cluster, "--quiet", env=child_env(**s3))
    # Read the outputs back from S3 and compare with the local run.
    local_copy = tmp_path / "from-s3"
    fsspec.filesystem("s3").get(f"{bucket}/run", str(local_copy), recursive=True)
    assert_same_outputs(local_copy, local_reference)
