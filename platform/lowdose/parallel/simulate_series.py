"""Orchestrate a synthetic in-situ FrameSeries with ground truth (``lowdose simulate-series``).

Science lives in :mod:`lowdose.physics.dynamics` (surface events, dwell
schedule, drift, frame windows) and :mod:`lowdose.physics.imaging` (one exit
wave per distinct configuration); this module wires them together, noises the
frames (Poisson at the nominal dose) and writes a FrameSeries with ``clean``
plus the per-frame ground-truth column table. The few multislice runs happen
in-process (they are cheap at the default grid); frames are streamed to the
store in chunk-sized batches, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lowdose.errors import StoreError
from lowdose.physics import dynamics
from lowdose.physics.imaging import exit_wave, image_stack
from lowdose.physics.noise import poisson_noise
from lowdose.physics.optics import Optics
from lowdose.physics.structures import (
    INTERFACE_GAP_A,
    PARTICLE_CLASSES,
    SURFACE_HEIGHT_FRAC,
    StructureParams,
    build_model,
    cell_size_A,
)
from lowdose.physics.wulff import wulff_particle
from lowdose.store import schema


@dataclass(frozen=True)
class SeriesSpec:
    """Parameters of a synthetic series (everything that determines its bytes)."""

    n_frames: int = 400
    size_px: int = 512
    seed: int = 0
    particle: str = "PtNp2"
    n_states: int = 12
    defocus_nm: float = 10.0
    support_thickness_nm: float = 3.0
    gpts: int = 384
    frame_rate_hz: float = 40.0
    dose_e_per_px: float = 0.45
    pixel_size_A: float = 0.061
    drift_px_per_s: tuple[float, float] = (0.6, -0.9)
    chunk_frames: int = 32

    def as_attrs(self) -> dict[str, Any]:
        """JSON-friendly attrs recording the spec."""
        return {f"synthetic_{k}": (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class SeriesSummary:
    """What :func:`simulate_series` did."""

    path: Path
    n_frames: int
    n_written: int
    n_states: int
    seconds: float


def _render_states(
    spec: SeriesSpec, rng: np.random.Generator, progress: bool
) -> tuple[list[Any], list[Any], float]:
    from tqdm import tqdm

    base = wulff_particle(PARTICLE_CLASSES[spec.particle])
    configs = dynamics.surface_configurations(base, max(1, min(spec.n_states, spec.n_frames)), rng)
    params = StructureParams(
        particle=spec.particle, support_thickness_nm=spec.support_thickness_nm, seed=spec.seed
    )
    optics = Optics()
    stacks = []
    for config in tqdm(configs, desc="exit waves", unit="structure", disable=not progress):
        model = build_model(params, pt_particle=config.particle)
        wave = exit_wave(model, optics, gpts=spec.gpts)
        stacks.append(
            image_stack(
                wave,
                model,
                [spec.defocus_nm],
                optics,
                pixel_size_A=spec.pixel_size_A,
                dose_e_per_px=spec.dose_e_per_px,
            )
        )
    return configs, stacks, stacks[0].pixel_size_A


def _spec_differences(found: dict[str, Any], spec: SeriesSpec) -> list[str]:
    """``"size_px 256, asked 128"`` for every spec field the store's attributes record differently.

    Seed and frame count must be recorded; a field an older store does not record is not compared.
    The optics must equal this version's; a store without ``focal_nodes`` was rendered with the
    quasi-coherent temporal envelope (``focal_nodes`` 0).
    """
    differ = []
    for key, want in spec.as_attrs().items():
        required = key in ("synthetic_seed", "synthetic_n_frames")
        if key not in found and not required:
            continue
        have = found.get(key)
        if have != want:
            differ.append(f"{key.removeprefix('synthetic_')} {have!r}, asked {want!r}")
    if "voltage_kV" in found:  # the store records the imaging physics it was rendered with
        for key, want in Optics().as_attrs().items():
            have = found.get(key, 0.0 if key == "focal_nodes" else None)  # older: envelope only
            if have != want:
                differ.append(f"{key} {have!r}, this version renders with {want!r}")
    return differ


def simulate_series(
    out: str | Path, spec: SeriesSpec | None = None, *, progress: bool = True
) -> SeriesSummary:
    """Write a synthetic in-situ FrameSeries (counts + clean) and its ground-truth table.

    Re-running with the same spec on a partly written store continues it; a
    store made from a different spec is refused.
    """
    from tqdm import tqdm

    from lowdose.store.location import check_creatable
    from lowdose.store.series import append_frames, create_frame_series, series_attrs

    spec = spec or SeriesSpec()
    out = Path(out)
    start = time.perf_counter()
    n_cell = round(cell_size_A(5.0) / spec.pixel_size_A)
    if not 16 <= spec.size_px <= n_cell - 16:
        raise StoreError(f"--size {spec.size_px}: expected 16..{n_cell - 16} pixels (the 5 nm model)")
    if spec.n_frames < 1:
        raise StoreError(f"--frames {spec.n_frames}: expected at least 1 frame")
    check_creatable(out)
    if out.exists() and not (out / "zarr.json").is_file():
        raise StoreError(
            f"--out {out}: exists and is not a FrameSeries store; remove it or choose another path"
        )
    if out.exists():
        found = series_attrs(out)
        differ = _spec_differences(found, spec)
        if differ:
            raise StoreError(
                f"{out}: exists and was made from a different synthetic spec ({'; '.join(differ)}); "
                "remove it or write to another path"
            )
        if int(found.get("n_frames", 0)) == spec.n_frames and schema.ground_truth_path(out).exists():
            n_states = len(found.get("state_events", []))
            return SeriesSummary(out, spec.n_frames, 0, n_states, time.perf_counter() - start)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0x5E41E5]))
    configs, stacks, pixel = _render_states(spec, rng, progress)
    schedule = dynamics.dwell_schedule(spec.n_frames, len(configs), rng)
    drift = dynamics.drift_path(spec.n_frames, spec.frame_rate_hz, spec.drift_px_per_s, rng)
    pt0 = stacks[0].columns[stacks[0].columns["element"] == "Pt"]
    interface_px = (SURFACE_HEIGHT_FRAC * cell_size_A(5.0) - INTERFACE_GAP_A) / pixel
    origin0 = (interface_px - 0.62 * spec.size_px, float(pt0["x_px"].mean()) - 0.5 * spec.size_px)

    attrs = {
        **spec.as_attrs(),
        **Optics().as_attrs(),
        "synthetic": True,
        "defocus_convention": "defocus_nm = C1 (positive = overfocus)",
        "state_events": [c.event for c in configs],
    }
    done = 0
    if out.exists():
        done = int(series_attrs(out).get("n_frames", 0))
    else:
        create_frame_series(
            out,
            (spec.size_px, spec.size_px),
            dtype="uint8",
            chunk_frames=spec.chunk_frames,
            frame_rate_hz=spec.frame_rate_hz,
            dose_e_per_px=spec.dose_e_per_px,
            pixel_size_A=pixel,
            attrs=attrs,
            with_clean=True,
            detector="synthetic Poisson counting detector (lowdose simulate-series)",
        )
    tables = []
    bar = tqdm(total=spec.n_frames, initial=done, desc="frames", unit="frame", disable=not progress)
    for f0 in range(0, spec.n_frames, spec.chunk_frames):
        frames = range(f0, min(f0 + spec.chunk_frames, spec.n_frames))
        origins = [(origin0[0] - drift[f, 0], origin0[1] - drift[f, 1]) for f in frames]
        for f, origin in zip(frames, origins, strict=True):
            gt = dynamics.frame_columns(stacks[schedule[f]].columns, origin, spec.size_px, f)
            tables.append(gt.assign(state=np.int16(schedule[f])))
        if frames.stop <= done:
            continue
        clean = np.stack(
            [
                dynamics.render_frame(stacks[schedule[f]].images[0], origin, spec.size_px)
                for f, origin in zip(frames, origins, strict=True)
            ]
        )
        counts = np.stack(
            [
                poisson_noise(c, np.random.SeedSequence([spec.seed, 0xF4A3E, f]))
                for f, c in zip(frames, clean, strict=True)
            ]
        )
        if counts.max() > 255:
            raise StoreError(f"{out}: a frame has more than 255 counts in a pixel; lower the dose")
        append_frames(out, counts.astype(np.uint8), clean=clean)
        bar.update(len(frames))
    bar.close()
    table = pd.concat(tables, ignore_index=True)
    gt_path = schema.ground_truth_path(out)
    tmp = gt_path.with_name(gt_path.name + ".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(gt_path)
    return SeriesSummary(
        path=out,
        n_frames=spec.n_frames,
        n_written=spec.n_frames - done,
        n_states=len(configs),
        seconds=time.perf_counter() - start,
    )
