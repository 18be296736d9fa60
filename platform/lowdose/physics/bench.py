"""A bare abTEM loop over grid structures, timed stage by stage.

:func:`bare_abtem_loop` does, in this process and without Dask or any store,
what the grid runner's kernel (:func:`lowdose.physics.imaging.simulate_structure`)
does for each structure, with a clock around each part:

* ``structure``: build the atomic model (lowdose.physics.structures);
* ``potential``: build abTEM's projected potential slices (``Potential.build``);
* ``multislice``: propagate a plane wave through the built slices;
* ``imaging``: every defocus of the exit wave, resampled to the detector and
  scaled to the dose (:func:`lowdose.physics.imaging.image_stack`).

It is the reference the grid runner is measured against (``lowdose bench
simulate``). numpy/abTEM only; never dask or torch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from lowdose.physics.grid import SimulationGridConfig, StructureJob
from lowdose.physics.imaging import ExitWave, image_stack, warm_up_abtem
from lowdose.physics.structures import build_model

PARTS = ("structure", "potential", "multislice", "imaging")


def bare_abtem_loop(config: SimulationGridConfig, jobs: Sequence[StructureJob]) -> dict[str, Any]:
    """Simulate ``jobs`` one after another; return images, seconds and the per-part split.

    Returns
    -------
    dict
        ``images``, ``seconds`` (after :func:`~lowdose.physics.imaging.warm_up_abtem`,
        whose own time is ``warm_up_s``), ``cpu_s`` (this process's CPU seconds of the
        same span), ``images_per_hour``, ``split_s`` (seconds per part summed over
        structures), ``split_fraction`` (of the summed parts) and ``peak_rss_MB`` of
        this process at the end (its high-water mark).
    """
    import abtem

    optics = config.optics.to_optics()
    split = dict.fromkeys(PARTS, 0.0)
    images = 0
    # Warm (numba-compiled abTEM kernels) before timing, as the grid runner's worker is in
    # the bench: both sides are then timed warm, whichever stages ran before.
    warm_up_s = warm_up_abtem()
    start, start_cpu = time.perf_counter(), time.process_time()
    settings = {"dask.lazy": False, "fft": "numpy", "diagnostics.progress_bar": False, "precision": "float32"}
    for job in jobs:
        t0 = time.perf_counter()
        model = build_model(job.params)
        atoms = model.to_ase()
        t1 = time.perf_counter()
        with abtem.config.set(settings):
            potential = abtem.Potential(
                atoms,  # type: ignore[arg-type]
                gpts=config.gpts,
                slice_thickness=config.slice_thickness_A,
                projection="infinite",
                parametrization="lobato",
            ).build(lazy=False)
            t2 = time.perf_counter()
            waves = abtem.PlaneWave(energy=optics.voltage_kV * 1e3).multislice(potential, lazy=False)  # type: ignore[arg-type]
            array = np.asarray(waves.array)  # type: ignore[union-attr]
        t3 = time.perf_counter()
        wave = ExitWave(array=np.ascontiguousarray(array.T), extent_A=float(model.cell_A[0]))
        stack = image_stack(
            wave,
            model,
            config.defocus_nm,
            optics,
            pixel_size_A=config.pixel_size_A,
            dose_e_per_px=config.dose_e_per_px,
        )
        t4 = time.perf_counter()
        images += stack.images.shape[0]
        for part, seconds in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            split[part] += seconds
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - start_cpu
    total = sum(split.values()) or 1.0
    return {
        "structures": len(jobs),
        "warm_up_s": warm_up_s,
        "images": images,
        "seconds": elapsed,
        "cpu_s": cpu,
        "images_per_hour": images / elapsed * 3600 if elapsed > 0 else float("nan"),
        "split_s": split,
        "split_fraction": {part: seconds / total for part, seconds in split.items()},
        "peak_rss_MB": _high_water_mb(),
    }


def _high_water_mb() -> float:
    import resource

    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
