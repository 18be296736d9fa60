"""``lowdose demo`` end to end, its picture, and the quickstart notebook on what it wrote.

The demo runs once per session (fixture ``demo_run`` in ``conftest.py``, shared by the
pytest-xdist workers), and the notebook reads what it wrote.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from matplotlib.image import imread
from nbclient import NotebookClient

from lowdose.demo import FIGURE_NAME
from tests.integration.conftest import DEMO_TEST_FRAMES, DemoRun, lowdose

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "quickstart.ipynb"

pytestmark = pytest.mark.slow


def test_demo_end_to_end_then_reuses_its_work(demo_run: DemoRun) -> None:
    first, work = demo_run.first, demo_run.workdir
    assert first.returncode == 0, first.stderr[-3000:]
    for text in ("surface-column F1", "column verdicts", "pipeline throughput", "dashboard", "picture"):
        assert text in first.stdout
    figure = work / FIGURE_NAME
    assert str(figure) in first.stdout
    image = imread(figure)
    height, width = image.shape[:2]
    assert width > 2 * height > 300  # three panels side by side
    assert image[..., :3].std() > 0.05  # something was drawn
    listed = lowdose("catalog", "list", "--catalog", str(work / "catalog.yaml"), cwd=work.parent)
    assert listed.returncode == 0, listed.stderr
    for name in ("series", "run.denoised", "run.columns", "run.frames", "default_model"):
        assert name in listed.stdout
    again = demo_run.again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "surface-column F1" in again.stdout
    # the second run reused the series and the run (nothing new measured, no "nan") and redrew the picture
    assert _simulation_s(first.stdout) > 0
    assert re.search(r"simulation\s+reused the series", again.stdout), again.stdout
    assert re.search(r"pipeline throughput\s+reused the run", again.stdout), again.stdout
    assert "nan" not in again.stdout
    assert demo_run.figure_ns_after_first is not None
    assert figure.stat().st_mtime_ns > demo_run.figure_ns_after_first


def _simulation_s(stdout: str) -> float:
    found = re.search(r"simulation\s+([\d.]+) s", stdout)
    assert found is not None, stdout
    return float(found.group(1))


def test_quickstart_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert 'os.environ.get("LOWDOSE_DEMO_DIR", "lowdose-demo")' in "".join(cell.source for cell in code)


def _text(output: Any) -> str:
    if output.output_type == "stream":
        return str(output.text)
    return str(output.get("data", {}).get("text/plain", ""))


def test_quickstart_notebook_runs_clean_on_the_demo_outputs(
    demo_run: DemoRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert demo_run.first.returncode == 0, demo_run.first.stderr[-3000:]
    monkeypatch.setenv("LOWDOSE_DEMO_DIR", str(demo_run.workdir))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # run from an unrelated folder: the notebook must find the demo through the variable alone
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "\n".join(_text(out) for out in outputs)
    assert "'series', 'run.denoised', 'run.columns', 'run.frames'" in text
    # the lazy accessor reproduces the pipeline's denoised frame
    found = re.search(r"largest difference from the pipeline's frame: (\S+)", text)
    assert found is not None, text
    assert float(found.group(1)) < 1e-3
    assert len([out for out in outputs if "image/png" in out.get("data", {})]) == 2
    table = next(_text(out) for out in outputs if "n_undecided" in _text(out))
    assert len(table.strip().splitlines()) == DEMO_TEST_FRAMES + 1
