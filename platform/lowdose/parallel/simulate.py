"""Run a simulation grid on a Dask cluster and write the SimulationSet as results arrive.

Mapping only: the per-structure kernel is
:func:`lowdose.physics.imaging.simulate_structure`; this module expands the grid,
skips structures whose images are all done, submits the rest, and writes every
finished structure from the client (single writer, so region writes never
race). Structure seeds are fixed by the grid, so a re-run or a retried task
produces byte-identical images.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lowdose.physics.grid import SimulationGridConfig, StructureJob, expand_grid
from lowdose.physics.structures import cell_size_A
from lowdose.store import simulation_set as sims

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class SimulateSummary:
    """What a grid run did."""

    path: Path
    n_images: int
    n_written: int
    n_skipped: int
    seconds: float

    @property
    def images_per_hour(self) -> float:
        """Throughput of this run (images written per wall-clock hour)."""
        return 3600.0 * self.n_written / self.seconds if self.seconds > 0 else float("nan")


def _grid_coords(config: SimulationGridConfig, jobs: list[StructureJob]) -> dict[str, list[Any]]:
    coords: dict[str, list[Any]] = {name: [] for name in sims.PER_IMAGE_COORDS if name != "contrast"}
    for job in jobs:
        p = job.params
        for df in config.defocus_nm:
            coords["defocus_nm"].append(float(df))
            coords["tilt_x_deg"].append(p.tilt_x_deg)
            coords["tilt_y_deg"].append(p.tilt_y_deg)
            coords["support_thickness_nm"].append(p.support_thickness_nm)
            coords["support_surface"].append(p.support_surface)
            coords["particle"].append(p.particle)
            coords["defect"].append(p.defect)
            coords["model_id"].append(job.model_id)
            coords["structure_seed"].append(p.seed)
    return coords


def prepare_store(
    config: SimulationGridConfig, out: str | Path
) -> tuple[list[StructureJob], list[StructureJob]]:
    """Create (or reopen) the store for ``config``; return (all jobs, jobs still to run).

    An ``out`` whose folder cannot be written is refused before anything is made.
    """
    from lowdose.store.location import check_creatable

    check_creatable(out)
    jobs = expand_grid(config)
    n_px = max(8, round(cell_size_A(config.lateral_nm) / config.pixel_size_A))
    pixel = cell_size_A(config.lateral_nm) / n_px
    attrs: dict[str, Any] = {
        **config.optics.to_optics().as_attrs(),
        "pixel_size_A": pixel,
        "dose_e_per_px": config.dose_e_per_px,
        "gpts": config.gpts,
        "slice_thickness_A": config.slice_thickness_A,
        "lateral_A": cell_size_A(config.lateral_nm),
        "grid_config": config.to_yaml(),
    }
    sims.create_simulation_set(
        out,
        image_shape=(n_px, n_px),
        coords=_grid_coords(config, jobs),
        attrs=attrs,
        grid_digest=config.digest(),
    )
    done = sims.done_images(out)
    todo = [j for j in jobs if not done[j.first_image : j.first_image + j.n_images].all()]
    return jobs, todo


def _kernel(job: StructureJob, config: SimulationGridConfig) -> tuple[int, Any]:
    from lowdose.parallel.cluster import tune_worker_allocator
    from lowdose.physics.imaging import simulate_structure

    # Dask's 64 kB heap-trim threshold would unmap and page-fault abTEM's temporaries per
    # slice and per defocus; keep the heap, as the pipeline's workers do (once per process).
    tune_worker_allocator()

    stack = simulate_structure(
        job.params,
        config.defocus_nm,
        config.optics.to_optics(),
        gpts=config.gpts,
        slice_thickness_A=config.slice_thickness_A,
        pixel_size_A=config.pixel_size_A,
        dose_e_per_px=config.dose_e_per_px,
    )
    return job.model_id, stack


def _submit(client: Client, config: SimulationGridConfig, todo: list[StructureJob], out: Path) -> list[Any]:
    # A token per run: a second run_grid on the same client (a store of the same name, e.g.
    # re-created) must not share task keys with the first one's released futures.
    token = uuid.uuid4().hex[:8]
    keys = [f"simulate-{out.name}-{j.model_id}-{token}" for j in todo]
    futures: list[Any] = client.map(_kernel, todo, config=config, key=keys)
    return futures


def run_grid(
    config: SimulationGridConfig,
    out: str | Path,
    client: Client | None,
    *,
    progress: bool = True,
    max_structures: int | None = None,
) -> SimulateSummary:
    """Simulate every structure of ``config`` not yet done in ``out`` on ``client``.

    Parameters
    ----------
    config
        The grid.
    out
        The SimulationSet store (created if missing, resumed if present).
    client
        A connected Dask client (see :func:`lowdose.parallel.cluster.connect`);
        may be None only when nothing is left to do (see :func:`prepare_store`).
    progress
        Show a tqdm progress bar over images.
    max_structures
        Stop after writing this many structures (for tests of resumption).
    """
    from distributed import as_completed
    from tqdm import tqdm

    start = time.perf_counter()
    out = Path(out)
    fresh = not out.exists()
    futures: list[Any] = []
    if fresh and client is not None:
        # A new store: every structure is to do, so submit first and create the store on
        # the client while the workers compute (and import/compile abTEM on a cold worker).
        todo = expand_grid(config)
        if max_structures is not None:
            todo = todo[:max_structures]
        futures = _submit(client, config, todo, out)
    try:
        jobs, remaining = prepare_store(config, out)
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    if not fresh or client is None:
        todo = remaining if max_structures is None else remaining[:max_structures]
    by_id = {j.model_id: j for j in todo}
    n_images = sum(j.n_images for j in jobs)
    skipped = n_images - sum(j.n_images for j in todo)
    written = 0
    if todo and client is None:
        raise ValueError("run_grid needs a Dask client: structures remain to be simulated")
    bar = tqdm(total=n_images, initial=skipped, unit="img", desc="simulate", disable=not progress)
    if client is not None and todo and not futures:
        futures = _submit(client, config, todo, out)
    pending = set(futures)
    try:
        for future in as_completed(futures) if futures else []:
            model_id, stack = future.result()
            job = by_id[model_id]
            sims.write_images(out, job.first_image, stack.images, stack.contrast, stack.columns, model_id)
            written += job.n_images
            bar.update(job.n_images)
            pending.discard(future)
            future.release()
    finally:
        bar.close()
        for f in pending:  # only what did not finish (after an error or interrupt)
            f.cancel()
    gt_path = sims.schema.ground_truth_path(out)
    if bool(np.all(sims.done_images(out))) and (written or not gt_path.exists()):
        sims.finalize_ground_truth(out)
    return SimulateSummary(
        path=out, n_images=n_images, n_written=written, n_skipped=skipped, seconds=time.perf_counter() - start
    )
