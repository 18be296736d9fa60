"""Kernels of the synthetic in-situ series: surface-atom dynamics, drift and frame rendering.

One Pt particle on CeO2 is followed over ``n_frames`` frames. Its surface goes
through a short seeded chain of *configurations*: starting from the pristine
Wulff particle, each step is one event —

``appear``
    an adatom column of 1–3 atoms is added at an empty fcc site next to the
    free surface (see :func:`lowdose.physics.defects.adatom_sites`);
``hop``
    an existing adatom column moves to the nearest other empty surface site;
``vanish``
    an adatom column is removed (or, if there is none, the end atom of a
    surface column).

The frames are split into consecutive dwell segments, one per configuration
(random lengths, seeded), so only a few distinct structures are imaged (one
exit wave each) however many frames there are. A slow drift (linear plus a
gentle sinusoid) moves the field of view; each frame is a window of the full
clean image shifted by the drift with cubic-spline interpolation, and the
ground-truth columns move with it. numpy/scipy only; never imports dask or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import ndimage

from lowdose.physics.defects import adatom_sites, group_columns, surface_columns
from lowdose.physics.wulff import FloatArray

EVENTS = ("appear", "hop", "vanish")


@dataclass(frozen=True)
class Configuration:
    """One surface configuration: the Pt atoms (particle frame) and the event that made it."""

    particle: FloatArray
    event: str
    adatoms: tuple[FloatArray, ...]


def _assemble(base: FloatArray, adatoms: list[FloatArray]) -> FloatArray:
    return np.concatenate([base, *adatoms]) if adatoms else base


def surface_configurations(base: FloatArray, n_states: int, rng: np.random.Generator) -> list[Configuration]:
    """A chain of ``n_states`` surface configurations, each one event away from the last.

    Parameters
    ----------
    base
        Pt positions of the pristine particle (particle frame, interface at y = 0).
    n_states
        Number of distinct configurations (the first is ``base`` itself).
    rng
        Random generator (events, sites, sizes).
    """
    core = base.copy()
    adatoms: list[FloatArray] = []
    states = [Configuration(particle=core, event="start", adatoms=())]
    while len(states) < n_states:
        current = _assemble(core, adatoms)
        weights = np.array([0.45, 0.35, 0.20]) if adatoms else np.array([0.8, 0.0, 0.2])
        event = EVENTS[int(rng.choice(3, p=weights / weights.sum()))]
        if event == "appear":
            sites = adatom_sites(current)
            if not sites:
                continue
            site = sites[int(rng.integers(len(sites)))]
            adatoms.append(site[: int(rng.integers(1, 4))].copy())
        elif event == "hop":
            k = int(rng.integers(len(adatoms)))
            moving = adatoms.pop(k)
            sites = adatom_sites(_assemble(core, adatoms))
            old = moving[0, :2]
            sites = [s for s in sites if np.linalg.norm(s[0, :2] - old) > 0.5]
            if not sites:
                adatoms.insert(k, moving)
                continue
            dist = [float(np.linalg.norm(s[0, :2] - old)) for s in sites]
            adatoms.append(sites[int(np.argmin(dist))][: len(moving)].copy())
        elif adatoms:
            adatoms.pop(int(rng.integers(len(adatoms))))
        else:
            centres, inverse, counts = group_columns(core)
            candidates = np.flatnonzero(surface_columns(centres) & (counts >= 2))
            col = int(rng.choice(candidates))
            idx = np.flatnonzero(inverse == col)
            drop = idx[np.argmax(core[idx, 2])]
            core = np.delete(core, drop, axis=0)
        states.append(Configuration(particle=_assemble(core, adatoms), event=event, adatoms=tuple(adatoms)))
    return states


def dwell_schedule(n_frames: int, n_states: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """State index of every frame: ``n_states`` consecutive segments of random length (≥ 1)."""
    n_states = max(1, min(n_states, n_frames))
    cuts: list[int] = []
    if n_states > 1:
        cuts = sorted(int(c) for c in rng.choice(np.arange(1, n_frames), size=n_states - 1, replace=False))
    state = np.zeros(n_frames, dtype=np.int64)
    for c in cuts:
        state[c:] += 1
    return state


def drift_path(
    n_frames: int, frame_rate_hz: float, velocity_px_per_s: tuple[float, float], rng: np.random.Generator
) -> FloatArray:
    """Per-frame drift ``(dy, dx)`` in pixels: linear plus a slow sinusoid (period ≥ 10 s)."""
    t = np.arange(n_frames) / frame_rate_hz
    period = rng.uniform(10.0, 30.0)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    amp = rng.uniform(0.5, 1.5, size=2)
    dy = velocity_px_per_s[0] * t + amp[0] * np.sin(2 * np.pi * t / period + phase[0])
    dx = velocity_px_per_s[1] * t + amp[1] * np.sin(2 * np.pi * t / period + phase[1])
    out: FloatArray = np.stack([dy - dy[0], dx - dx[0]], axis=1)
    return out


def render_frame(image: FloatArray, origin_yx: tuple[float, float], size_px: int) -> npt.NDArray[np.float32]:
    """Window ``size_px`` × ``size_px`` of ``image`` starting at a sub-pixel ``origin_yx``.

    Output pixel ``(i, j)`` samples ``image`` at ``(origin_y + i, origin_x + j)``
    (cubic spline, periodic boundaries).
    """
    y0, x0 = origin_yx
    iy, ix = int(np.floor(y0)), int(np.floor(x0))
    fy, fx = y0 - iy, x0 - ix
    pad = 4
    rows = np.arange(iy - pad, iy + size_px + pad) % image.shape[0]
    cols = np.arange(ix - pad, ix + size_px + pad) % image.shape[1]
    patch = image[np.ix_(rows, cols)]
    shifted = ndimage.shift(patch, (-fy, -fx), order=3, mode="nearest")
    out = shifted[pad : pad + size_px, pad : pad + size_px]
    return np.maximum(out, 0.0).astype(np.float32)


def frame_columns(
    columns: pd.DataFrame, origin_yx: tuple[float, float], size_px: int, frame: int
) -> pd.DataFrame:
    """Ground-truth columns of one frame (pixels of the window), inside the window only."""
    x = columns["x_px"].to_numpy(np.float64) - origin_yx[1]
    y = columns["y_px"].to_numpy(np.float64) - origin_yx[0]
    inside = (x >= 0) & (x <= size_px - 1) & (y >= 0) & (y <= size_px - 1)
    return pd.DataFrame(
        {
            "frame": np.full(int(inside.sum()), frame, dtype=np.int64),
            "x_px": x[inside].astype(np.float32),
            "y_px": y[inside].astype(np.float32),
            "element": columns["element"].to_numpy()[inside],
            "n_atoms": columns["n_atoms"].to_numpy(np.int32)[inside],
            "surface": columns["surface"].to_numpy(bool)[inside],
        }
    )
