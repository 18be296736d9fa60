"""Map a denoiser over a FrameSeries: eagerly on a numpy stack, lazily per frame chunk.

The model travels as a small picklable :class:`ModelHandle` (artefact path or
name + SHA-256, or an in-memory module for notebooks and tests) and is loaded at
most once per worker process through a cache keyed by source, hash and device.
Each frame chunk is one ``map_blocks`` task: frames are batched, frames larger
than a tile are cut into overlapping tiles whose overlap is the model's
receptive-field radius (so the stitched output equals the whole-frame output),
torch's thread count follows the worker's, and CUDA runs under AMP autocast.
The eager path (:func:`denoise_frames`) is the same kernel.

Self-ensemble (``tta``, test-time augmentation): the projected images lowdose
denoises have no preferred orientation (round probe, no astigmatism), so each of the
eight flips/transposes of a frame is as valid an input as the frame itself. With
``tta = n`` the first *n* of :data:`DIHEDRAL` are denoised, mapped back and averaged:
n times the compute for a lower residual (on the 240-frame demo series with the default
model v3, 8 raised the median surface/bulk column F1 from 0.765/0.894 to 0.778/0.911).

No science here: the network lives in ``lowdose.models``. Imports torch only
inside functions; never imports ``lowdose.analysis``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lowdose.errors import LowdoseInputError
from lowdose.parallel.cluster import tune_worker_allocator
from lowdose.parallel.tiling import apply_tiled

if TYPE_CHECKING:
    import dask.array as da
    import torch
    import xarray as xr

DEFAULT_TILE_PX = 1024
"""Frames up to this size are denoised whole; larger ones in overlapping tiles."""

DEFAULT_BATCH_FRAMES = 4
"""Frames per forward pass (activation memory grows linearly with it)."""

DIHEDRAL: tuple[tuple[bool, bool, bool], ...] = (
    (False, False, False),
    (False, False, True),
    (True, True, False),
    (True, True, True),
    (True, False, False),
    (False, True, False),
    (True, False, True),
    (False, True, True),
)
"""The eight symmetries of the square as (flip y, flip x, transpose), in ``tta`` order:
the identity, the transpose, the 180° rotation, the anti-transpose, then the two
mirrors and the two 90° rotations."""

TTA_CHOICES = (1, 2, 4, 8)
"""Allowed ``tta`` values: how many of :data:`DIHEDRAL` are averaged."""

_CACHE: dict[tuple[str, str, str], Any] = {}
_CACHE_LOCK = threading.Lock()
_THREADS_SET = False


@dataclass(frozen=True)
class ModelHandle:
    """A denoiser reference that pickles small and loads once per process.

    Attributes
    ----------
    source
        Artefact name or path for :func:`lowdose.models.artefact.load_model`;
        ``""`` for an in-memory module.
    sha256
        Hash of the weights: the cache key and the ``model_sha256`` attr.
    model_id
        Human-readable identity written into outputs.
    halo_px
        Receptive-field radius: the tile overlap that makes tiling exact.
    align_px
        Tile starts must be multiples of this (``2**scales`` for a U-Net).
    module
        The module itself when ``source`` is empty.
    """

    source: str
    sha256: str
    model_id: str
    halo_px: int
    align_px: int = 1
    module: Any = field(default=None, compare=False, repr=False)

    def load(self, device: str = "cpu") -> torch.nn.Module:
        """The model on ``device`` in eval mode, from this process's cache."""
        key = (self.source or "<memory>", self.sha256, device)
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
            if cached is None:
                cached = self._load_uncached(device)
                if device == "cpu":
                    # A copy rewritten for CPU inference: norms folded into the convs, ReLU
                    # fused, channels_last, the compact model's own inference path; the same
                    # function up to float rounding (lowdose bench denoise, docs/performance.md).
                    from lowdose.models.layers import prepare_for_inference

                    # An artefact's module was just loaded here: no copy needed.
                    cached = prepare_for_inference(cached, inplace=self.module is None)
                _CACHE[key] = cached
        return cached

    def _load_uncached(self, device: str) -> torch.nn.Module:
        if self.module is not None:
            return self.module.to(device).eval()
        from lowdose.models.artefact import load_model

        module, card = load_model(self.source, device=device)
        found = (card.get("weights") or {}).get("sha256")
        if found and found != self.sha256:
            raise LowdoseInputError(
                f"{self.source}: model weights changed since the run started "
                f"(sha256 {found[:12]}… ≠ {self.sha256[:12]}…)"
            )
        return module.eval()


def _state_sha256(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _alignment(module: Any) -> int:
    """Pixel grid a model's pooling works on: ``unshuffle × 2**scales`` (1 for plain conv nets)."""
    scales = getattr(module, "scales", None)
    unshuffle = getattr(module, "unshuffle", 1)
    factor = int(unshuffle) if isinstance(unshuffle, int) else 1
    return factor * (2 ** int(scales) if isinstance(scales, int) else 1)


def _halo_from_receptive_field(receptive_px: int) -> int:
    return max(0, (int(receptive_px) + 1) // 2)


def model_handle(model: str | Path | torch.nn.Module | ModelHandle = "default") -> ModelHandle:
    """Resolve ``model`` (artefact name/path, catalog entry, module or handle) into a :class:`ModelHandle`.

    For an artefact the card supplies the receptive field and alignment and the
    weights file supplies the hash; for a module they are measured.
    """
    import torch

    if isinstance(model, ModelHandle):
        return model
    if isinstance(model, str | Path):
        return _artefact_handle(model)
    directory = getattr(model, "directory", None)
    if isinstance(directory, str) and isinstance(getattr(model, "config", None), dict):
        return _artefact_handle(directory)  # a catalog's model entry (store.catalog_readers.ModelArtefact)
    if not isinstance(model, torch.nn.Module):
        raise LowdoseInputError(
            f"model: expected 'default', an artefact directory, a catalog model entry or a torch module, "
            f"got {type(model).__name__}"
        )
    from lowdose.models.receptive import receptive_field

    return ModelHandle(
        source="",
        sha256=_state_sha256(model),
        model_id=type(model).__name__,
        halo_px=_halo_from_receptive_field(receptive_field(model)),
        align_px=_alignment(model),
        module=model,
    )


def _artefact_handle(model: str | Path) -> ModelHandle:
    from lowdose.models.artefact import load_model, model_sha256

    module, card = load_model(str(model), device="cpu")
    source = "default" if str(model) == "default" else str(Path(model).resolve())
    sha = (card.get("weights") or {}).get("sha256")
    if not sha:
        sha = model_sha256(Path(source).parent if source.endswith(".safetensors") else source)
    receptive = card.get("receptive_field_px")
    if receptive is None:
        from lowdose.models.receptive import receptive_field

        receptive = receptive_field(module)
    architecture = card.get("architecture") or {}
    label = "default" if source == "default" else Path(source).name
    return ModelHandle(
        source=source,
        sha256=str(sha),
        model_id=str(card.get("model_id") or f"{label}:{architecture.get('name', type(module).__name__)}"),
        halo_px=_halo_from_receptive_field(int(receptive)),
        align_px=_alignment(module),
    )


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; a CUDA device this process lacks is refused."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= available:
            raise LowdoseInputError(
                f"device {device!r}: this process sees {available} CUDA device(s) "
                f"(torch {torch.__version__}); use device auto or cpu"
            )
    return device


def _configure_torch_threads() -> None:
    """Match torch's intra-op threads to the Dask worker's thread count, once per process."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    import torch

    n_threads: int | None = None
    try:
        from distributed import get_worker

        n_threads = get_worker().state.nthreads
    except (ImportError, ValueError):
        env = os.environ.get("OMP_NUM_THREADS")
        n_threads = int(env) if env and env.isdigit() else None
    if n_threads:
        torch.set_num_threads(max(1, n_threads))
    _THREADS_SET = True


def _forward(module: torch.nn.Module, frames: np.ndarray, device: str, amp: bool) -> np.ndarray:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))[:, None].to(device)
    if device == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)  # as the module (ModelHandle.load)
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        y = module(x)
    return y[:, 0].float().cpu().numpy()


def _transform(stack: np.ndarray, symmetry: tuple[bool, bool, bool]) -> np.ndarray:
    """Apply one :data:`DIHEDRAL` symmetry to a ``(frame, y, x)`` stack (a view)."""
    flip_y, flip_x, transpose = symmetry
    out = stack[:, ::-1] if flip_y else stack
    out = out[:, :, ::-1] if flip_x else out
    return out.transpose(0, 2, 1) if transpose else out


def _untransform(stack: np.ndarray, symmetry: tuple[bool, bool, bool]) -> np.ndarray:
    """Undo :func:`_transform` (transpose first, then the flips)."""
    flip_y, flip_x, transpose = symmetry
    out = stack.transpose(0, 2, 1) if transpose else stack
    out = out[:, :, ::-1] if flip_x else out
    return out[:, ::-1] if flip_y else out


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
"""Device names lowdose passes to torch (``PipelineConfig.device`` is checked with it too)."""


def check_device(device: str) -> str:
    """``device`` if it names one (auto, cpu, cuda, cuda:N), else a :class:`LowdoseInputError`.

    Checked when a graph is built: a worker's torch error says little. Whether the
    device exists is checked on the worker (:func:`resolve_device`).
    """
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise LowdoseInputError(f"denoise: device {device!r}: expected auto, cpu, cuda or cuda:N")
    return device


def series_counts(series: Any, what: str = "denoise") -> xr.DataArray:
    """The ``counts`` of a FrameSeries dataset as a ``(frame, y, x)`` DataArray, checked.

    Refused with a :class:`LowdoseInputError`: anything but an ``xarray.Dataset`` with
    a ``counts`` variable, other dims than ``frame``, ``y``, ``x`` (any order: they are
    put in that order), and float or complex counts (raw counts are whole numbers).
    """
    import xarray as xr

    if isinstance(series, xr.DataArray):
        raise LowdoseInputError(
            f"{what}: expected a FrameSeries Dataset (lowdose.store.series.open_series), got a DataArray; "
            "wrap one with da.to_dataset(name='counts', promote_attrs=True) and the series' attrs"
        )
    if not isinstance(series, xr.Dataset):
        raise LowdoseInputError(f"{what}: expected a FrameSeries xarray.Dataset, got {type(series).__name__}")
    if "counts" not in series:
        raise LowdoseInputError(
            f"{what}: the dataset has no 'counts' variable (expected a FrameSeries; "
            f"has {sorted(map(str, series.data_vars))})"
        )
    counts = series["counts"]
    if set(counts.dims) != {"frame", "y", "x"}:
        raise LowdoseInputError(f"{what}: counts has dims {counts.dims}; expected (frame, y, x)")
    if counts.dtype.kind not in "iub":
        raise LowdoseInputError(
            f"{what}: counts has dtype {counts.dtype}; expected integer electron counts "
            "(a FrameSeries stores them unsigned)"
        )
    return counts.transpose("frame", "y", "x")


def as_frame_chunks(counts: xr.DataArray, attrs: dict[str, Any]) -> da.Array:
    """Dask data of ``counts``: as it is when lazy, else in chunks of the series' ``chunk_frames``."""
    import dask.array as da

    if isinstance(counts.data, da.Array):
        return counts.data
    chunk = attrs.get("chunk_frames")
    frames = int(chunk) if isinstance(chunk, int | np.integer) and chunk > 0 else 32
    return da.from_array(counts.values, chunks=(frames, -1, -1))


def check_tta(tta: int) -> int:
    """``tta`` if it is one of :data:`TTA_CHOICES`, else a :class:`LowdoseInputError`."""
    if tta not in TTA_CHOICES:
        raise LowdoseInputError(f"denoise: tta must be one of {', '.join(map(str, TTA_CHOICES))}, got {tta}")
    return tta


def denoise_frames(
    counts: np.ndarray,
    model: str | Path | torch.nn.Module | ModelHandle,
    *,
    tile_px: int = DEFAULT_TILE_PX,
    overlap_px: int | None = None,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    device: str = "auto",
    amp: bool = True,
    tta: int = 1,
) -> np.ndarray:
    """Denoise a ``(frame, y, x)`` stack of counts in memory; returns float32 expected counts.

    Parameters
    ----------
    counts
        Raw counts, any integer or float dtype; a single ``(y, x)`` frame is accepted.
    model
        Artefact name/path, module or :class:`ModelHandle`.
    tile_px
        Frames larger than this are processed in overlapping tiles.
    overlap_px
        Tile margin; default the model's receptive-field radius (exact tiling).
    batch_frames
        Frames per forward pass.
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
    amp
        Use float16 autocast on CUDA (ignored on CPU).
    tta
        Self-ensemble size: average the outputs of the first ``tta`` of the eight
        :data:`DIHEDRAL` symmetries of each frame (1, 2, 4 or 8; 1 = the frame as it is).
    """
    check_tta(tta)
    handle = model_handle(model)
    _configure_torch_threads()
    squeeze = counts.ndim == 2
    stack = counts[None] if squeeze else counts
    if stack.ndim != 3:
        raise LowdoseInputError(f"denoise: expected (frame, y, x) counts, got shape {counts.shape}")
    if batch_frames < 1:
        raise LowdoseInputError(f"denoise: batch_frames must be >= 1, got {batch_frames}")
    device = resolve_device(device)
    module = handle.load(device)
    use_amp = amp and device.startswith("cuda")
    halo = handle.halo_px if overlap_px is None else overlap_px
    out = np.empty(stack.shape, dtype=np.float32)
    for start in range(0, stack.shape[0], batch_frames):
        batch = stack[start : start + batch_frames].astype(np.float32)
        total: np.ndarray | None = None
        for symmetry in DIHEDRAL[:tta]:
            result = _untransform(
                apply_tiled(
                    np.ascontiguousarray(_transform(batch, symmetry)),
                    lambda tile: _forward(module, tile, device, use_amp),
                    tile_px,
                    halo,
                    handle.align_px,
                ),
                symmetry,
            )
            total = result.copy() if total is None else np.add(total, result, out=total)
        assert total is not None
        out[start : start + batch_frames] = total / tta if tta > 1 else total
    return out[0] if squeeze else out


def _denoise_block(block: np.ndarray, handle: ModelHandle, out_dtype: str, **kwargs: Any) -> np.ndarray:
    tune_worker_allocator()
    return denoise_frames(block, handle, **kwargs).astype(out_dtype, copy=False)


def denoise_array(
    counts: da.Array,
    model: str | Path | torch.nn.Module | ModelHandle = "default",
    *,
    tile_px: int = DEFAULT_TILE_PX,
    overlap_px: int | None = None,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    device: str = "auto",
    amp: bool = True,
    out_dtype: str = "float32",
    tta: int = 1,
) -> da.Array:
    """Lazily denoise a dask ``(frame, y, x)`` array, one task per frame chunk.

    Chunks along y/x are merged first (a frame is never split across tasks;
    tiling happens inside the task). Arguments as :func:`denoise_frames`.
    """
    import dask.array as da
    from dask.base import tokenize

    if counts.ndim != 3:
        raise LowdoseInputError(f"denoise: expected (frame, y, x) counts, got {counts.ndim} dims")
    if out_dtype not in ("float16", "float32"):
        raise LowdoseInputError(f"denoise: out_dtype must be float16 or float32, got {out_dtype!r}")
    check_tta(tta)
    check_device(device)
    handle = model_handle(model)
    counts = counts.rechunk({1: -1, 2: -1})
    options = {
        "tile_px": tile_px,
        "overlap_px": overlap_px,
        "batch_frames": batch_frames,
        "device": device,
        "amp": amp,
        "tta": tta,
    }
    name = "lowdose-denoise-" + tokenize(counts.name, handle.sha256, handle.source, out_dtype, options)
    return da.map_blocks(
        _denoise_block,
        counts,
        handle=handle,
        out_dtype=out_dtype,
        dtype=out_dtype,
        meta=np.empty((0, 0, 0), dtype=out_dtype),
        name=name,
        **options,
    )


def denoise_series(
    series: xr.Dataset,
    model: str | Path | torch.nn.Module | ModelHandle = "default",
    **kwargs: Any,
) -> xr.Dataset:
    """Lazy DenoisedSeries of a FrameSeries dataset (var ``denoised``, same grid and coords).

    Keyword arguments as :func:`denoise_array`. The result carries the source's
    attrs plus ``model_id`` and ``model_sha256`` and the DenoisedSeries stamp. Counts
    held in memory are split into tasks of the series' ``chunk_frames`` (32 if absent).
    """
    import xarray as xr

    from lowdose.store.schema import Layout, stamp

    counts = series_counts(series, "denoise")
    handle = model_handle(model)
    denoised = denoise_array(as_frame_chunks(counts, series.attrs), handle, **kwargs)
    keep_attrs = {k: v for k, v in series.attrs.items() if not k.startswith("lowdose_")}
    out = xr.Dataset(
        {"denoised": (counts.dims, denoised, {"units": "expected counts per pixel"})},
        coords=dict(counts.coords.items()),
        attrs={
            **keep_attrs,
            "model_id": handle.model_id,
            "model_sha256": handle.sha256,
            "tta": int(kwargs.get("tta", 1)),
        },
    )
    return stamp(out, Layout.DENOISED_SERIES)
