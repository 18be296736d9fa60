"""Run an experiment's per-image tasks on Dask (or in-process), with progress and a resumable cache.

Each task is ``(task_id, kwargs)`` for one module-level function returning a
:class:`TaskResult` (table rows and optionally named arrays). Finished results are
written as ``<parts>/<task_id>.json`` (+ ``.npz`` for arrays), each atomically,
so a re-run submits only the missing tasks. The parts folder is keyed by a hash of
everything that changes the results (:func:`parts_dir`), so changing an option
never reuses stale parts. Results are written by the client, so workers need no
access to the report folder. Never pickles to disk.

dask/distributed and tqdm are imported inside functions; never imports torch at module level.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import distributed
    from torch import nn


@dataclass
class TaskResult:
    """What one task returns: rows of a table and optionally arrays for a figure."""

    rows: list[dict[str, Any]]
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)


Task = tuple[str, dict[str, Any]]


def parts_dir(out: Path, experiment: str, key: Mapping[str, Any]) -> Path:
    """``out/<experiment>.parts/<hash of key>/``, created, with ``key.json`` inside."""
    text = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    folder = Path(out) / f"{experiment}.parts" / digest
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "key.json").write_text(json.dumps(key, sort_keys=True, indent=1, default=str))
    return folder


def _save(folder: Path, task_id: str, result: TaskResult) -> None:
    if result.arrays:
        tmp = folder / f"{task_id}.tmp.npz"
        arrays: dict[str, Any] = dict(result.arrays)  # numpy's stub types **kwds as its own keywords
        np.savez_compressed(tmp, **arrays)
        tmp.replace(folder / f"{task_id}.npz")
    tmp_json = folder / f"{task_id}.json.tmp"
    tmp_json.write_text(json.dumps(result.rows, default=_json_default))
    tmp_json.replace(folder / f"{task_id}.json")  # written last: marks the task done


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _load(folder: Path, task_id: str) -> TaskResult | None:
    rows_path = folder / f"{task_id}.json"
    if not rows_path.exists():
        return None
    rows = json.loads(rows_path.read_text())
    arrays: dict[str, npt.NDArray[Any]] = {}
    npz = folder / f"{task_id}.npz"
    if npz.exists():
        with np.load(npz, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    return TaskResult(rows=rows, arrays=arrays)


def run_tasks(
    function: Callable[..., TaskResult],
    tasks: Sequence[Task],
    folder: Path,
    *,
    client: distributed.Client | None,
    progress: bool,
    label: str,
) -> dict[str, TaskResult]:
    """Results of every task, computing only those without a part in ``folder``.

    With a client each missing task is one ``client.submit``; results are saved as they
    complete (a tqdm bar over ``as_completed``). Without one they run here, in order.
    """
    from tqdm.auto import tqdm

    results: dict[str, TaskResult] = {}
    todo: list[Task] = []
    for task_id, kwargs in tasks:
        cached = _load(folder, task_id)
        if cached is None:
            todo.append((task_id, kwargs))
        else:
            results[task_id] = cached
    with tqdm(total=len(tasks), initial=len(results), desc=label, unit="task", disable=not progress) as bar:
        for task_id, result in _execute(function, todo, client):
            _save(folder, task_id, result)
            results[task_id] = result
            bar.update(1)
    return {task_id: results[task_id] for task_id, _ in tasks}


def _execute(
    function: Callable[..., TaskResult], todo: Sequence[Task], client: distributed.Client | None
) -> Iterator[tuple[str, TaskResult]]:
    if not todo:
        return
    if client is None:
        for task_id, kwargs in todo:
            yield task_id, function(**kwargs)
        return
    from distributed import as_completed

    futures = {client.submit(function, pure=False, **kwargs): task_id for task_id, kwargs in todo}
    for future in as_completed(futures):
        yield futures[future], future.result()


@lru_cache(maxsize=8)
def cached_model(source: str) -> nn.Module:
    """A model artefact loaded once per process (``source``: "default" or an absolute path)."""
    import torch

    from lowdose.models.artefact import load_model

    torch.set_num_threads(1)
    model, _ = load_model(source)
    return model


def denoise(source: str, noisy: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Denoise one image with the model at ``source`` (loaded once per process)."""
    from lowdose.training.evaluate import denoise_image

    return denoise_image(cached_model(source), np.ascontiguousarray(noisy, dtype=np.float32))
