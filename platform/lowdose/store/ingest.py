"""Ingest microscope files into a FrameSeries store, streamed in frame batches.

``ingest(inputs, out)`` reads TIFF, MRC, HDF5, NumPy, DM3/DM4, EMD, SER and HSPY
inputs (see :mod:`lowdose.store.readers`) batch by batch, validates every batch
(integers ≥ 0, no NaN, whole numbers unless ``float_policy="round"``) *before* it is
written, and appends it to the store. Peak memory is a few batches whatever the
input size.

Speed: batch i+1 is read and validated while batch i is compressed and written by a
writer thread (its chunks compressed in parallel, see
:class:`~lowdose.store.series.FrameAppender`, one for the whole run), and for a new
store the sources' sha256 checksums are computed in a third thread beside both. Raw
(uncompressed, contiguous) TIFF data is mapped batch by batch instead of decoded page
by page.

Safety and re-runs:

* The store is built at ``OUT.partial`` and renamed to ``OUT`` only after the
  completion marker (``ingest_state = "complete"``) is written, so ``OUT`` is either
  absent/untouched or a complete, valid series. Bad input (:class:`FormatError`)
  deletes ``OUT.partial``.
* Non-uint8 inputs are scanned once before anything is written (their maximum picks
  the store dtype: uint8 when it fits, else uint16/uint32), so bad values in them are
  found before the store exists.
* Sources are recorded with sha256 checksums (in a new store once they are known:
  a run killed before its first checksums were recorded starts over). Re-running on
  the same inputs is a no-op when the metadata given (``pixel_size_A``,
  ``frame_rate_hz``, ``dose_e_per_px``, ``detector``) is absent or equal to what the
  complete store records; a given value that differs is a :class:`StoreError` and
  the store is left as it is (change attrs with
  :func:`~lowdose.store.series.update_series_attrs`, or ingest into a new ``OUT``).
  An interrupted run (Ctrl-C, kill) leaves ``OUT.partial`` whose committed frames
  are kept and the next run resumes after them (temp files of a chunk write cut
  short are removed first); metadata given to the run that completes the store is
  what it records.
* A full disk (or quota, or file-size limit) stops the run with a one-line
  :class:`~lowdose.errors.StorageFullError` naming the store; ``OUT.partial`` is kept,
  and re-running once space is freed resumes.

Imports numpy, zarr (through :mod:`lowdose.store.series`) and tqdm; never torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lowdose.errors import FormatError, LowdoseInputError, StorageFullError, StoreError
from lowdose.store.integrity import remove_stale_temp_files
from lowdose.store.readers import HDF5_SUFFIXES, FrameSource, expand_inputs, open_source, split_dataset
from lowdose.store.series import (
    FrameAppender,
    StagedFrames,
    create_frame_series,
    open_series,
    series_attrs,
    smallest_counts_dtype,
    update_series_attrs,
)

FloatPolicy = Literal["refuse", "round"]
CHUNK_TARGET_BYTES = 64 << 20
"""Upper bound on the uncompressed size of one chunk when ``chunk_frames`` is automatic."""
BATCH_TARGET_BYTES = 64 << 20
"""Upper bound on the bytes of one source batch when ``batch_frames`` is automatic."""
HASH_BLOCK_BYTES = 8 << 20


def sha256_file(path: Path, stop: threading.Event | None = None) -> str:
    """Return the hex sha256 of a file, read in 8 MiB blocks (``stop`` set: give up early).

    hashlib releases the GIL on large blocks, so this runs beside the ingest's reads
    and compression in a thread of its own.
    """
    digest = hashlib.sha256()
    block = bytearray(HASH_BLOCK_BYTES)
    view = memoryview(block)
    with path.open("rb", buffering=0) as handle:
        while (size := handle.readinto(block)) and not (stop is not None and stop.is_set()):
            digest.update(view[:size])
    return digest.hexdigest()


def validate_batch(
    frames: np.ndarray, source: FrameSource, first_frame: int, float_policy: FloatPolicy = "refuse"
) -> np.ndarray:
    """Check a batch of frames are counts and return them as an unsigned integer array.

    Parameters
    ----------
    frames
        ``(n, y, x)`` batch read from ``source``.
    source
        The file it came from (named in errors).
    first_frame
        Index of ``frames[0]`` within ``source`` (named in errors).
    float_policy
        ``"refuse"``: floats must hold whole numbers; ``"round"``: round to nearest.

    Raises
    ------
    FormatError
        Wrong frame shape, complex data, NaN/inf, negative or non-whole values.
    """
    if frames.shape[1:] != source.frame_shape:
        raise source.fail(f"frame shape {frames.shape[1:]}; expected {source.frame_shape}", first_frame)
    kind = frames.dtype.kind
    if kind == "b":
        return frames.astype("uint8")
    if kind == "u":
        return frames
    if kind == "i":
        _refuse_negative(frames, source, first_frame)
        return frames.astype(np.dtype(f"u{frames.dtype.itemsize}"))
    if kind != "f":
        raise source.fail(
            f"dtype {frames.dtype}; expected integer counts (or whole-number floats)", first_frame
        )
    finite = np.isfinite(frames)
    if not finite.all():
        bad = int(np.argwhere(~finite)[0][0])
        raise source.fail("NaN or infinite value; expected electron counts", first_frame + bad)
    if float_policy == "round":
        frames = np.rint(frames)
    else:
        whole = frames == np.floor(frames)
        if not whole.all():
            bad = int(np.argwhere(~whole)[0][0])
            raise source.fail(
                "non-integer float value; expected whole-number counts (or pass --float-policy round)",
                first_frame + bad,
            )
    _refuse_negative(frames, source, first_frame)
    high = float(frames.max()) if frames.size else 0.0
    if high >= 2.0**32:
        raise source.fail(f"value {high:g} does not fit uint32 counts", first_frame)
    return frames.astype("uint32")


def _refuse_negative(frames: np.ndarray, source: FrameSource, first_frame: int) -> None:
    negative = frames < 0
    if negative.any():
        bad = int(np.argwhere(negative)[0][0])
        raise source.fail(f"negative value {frames.min()}; expected counts ≥ 0", first_frame + bad)


def _batches(
    sources: Sequence[FrameSource],
    start_frame: int,
    batch_frames: int,
    float_policy: FloatPolicy,
) -> Iterator[np.ndarray]:
    """Yield validated batches of ``batch_frames`` frames across source boundaries.

    Batches start at global multiples of ``batch_frames`` after ``start_frame``, so
    appends stay chunk-aligned however the frames are split between files.
    """
    pending: list[np.ndarray] = []
    pending_frames = 0
    offset = 0
    for source in sources:
        local = max(start_frame - offset, 0)
        while local < source.n_frames:
            want = batch_frames - pending_frames
            stop = min(local + want, source.n_frames)
            frames = source.read(local, stop)
            if frames.shape[0] != stop - local:
                raise source.fail(f"read {frames.shape[0]} frames; expected {stop - local}", local)
            pending.append(validate_batch(frames, source, local, float_policy))
            pending_frames += stop - local
            local = stop
            if pending_frames == batch_frames:
                yield np.concatenate(pending) if len(pending) > 1 else pending[0]
                pending, pending_frames = [], 0
        source.close()  # one open file at a time, however many inputs
        offset += source.n_frames
    if pending:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]


def counts_total(frames: np.ndarray) -> int:
    """The exact sum of unsigned integer counts.

    uint8 frames are summed 257 at a time into uint16 (255 × 257 = 65,535 cannot
    overflow), which vectorises ≈ 2× faster than accumulating every pixel in uint64.
    """
    if frames.dtype != np.uint8 or frames.ndim < 2:
        return int(frames.sum(dtype=np.uint64))
    flat = frames.reshape(frames.shape[0], -1)
    return sum(
        int(flat[lo : lo + 257].sum(axis=0, dtype=np.uint16).sum(dtype=np.uint64))
        for lo in range(0, flat.shape[0], 257)
    )


def _source_records(
    sources: Sequence[FrameSource], progress: bool = False, stop: threading.Event | None = None
) -> list[dict[str, Any]]:
    """The ``sources`` attrs: one record (with the file's sha256) per source, in order.

    ``stop`` (set by an ingest that failed) ends the hashing early with ``[]``.
    """
    from tqdm import tqdm

    records = []
    for source in tqdm(sources, desc="checksums", unit="file", disable=not progress):
        digest = sha256_file(source.path, stop)
        if stop is not None and stop.is_set():
            return []
        records.append(
            {
                "path": str(source.path.resolve()),
                "dataset": source.dataset,
                "format": source.format,
                "sha256": digest,
                "size_bytes": source.path.stat().st_size,
                "n_frames": source.n_frames,
                "dtype": source.dtype.name,
            }
        )
    return records


SOURCE_IDENTITY_KEYS = ("sha256", "dataset", "n_frames")
"""What of a ``sources`` record identifies the data (not where the file was read from)."""


def _same_sources(found: Any, records: list[dict[str, Any]]) -> bool:
    if not isinstance(found, list) or len(found) != len(records):
        return False
    return all(
        isinstance(a, dict) and all(a.get(k) == b[k] for k in SOURCE_IDENTITY_KEYS)
        for a, b in zip(found, records, strict=True)
    )


def _scan_max(
    sources: Sequence[FrameSource], batch_frames: int, float_policy: FloatPolicy, progress: bool
) -> int:
    from tqdm import tqdm

    total = sum(s.n_frames for s in sources)
    high = 0
    with tqdm(total=total, desc="scan", unit="frame", disable=not progress) as bar:
        for batch in _batches(sources, 0, batch_frames, float_policy):
            if batch.size:
                high = max(high, int(batch.max()))
            bar.update(batch.shape[0])
    return high


_METADATA_FLAGS = {
    "pixel_size_A": "--pixel-size-A",
    "frame_rate_hz": "--frame-rate-hz",
    "dose_e_per_px": "--dose-e-per-px",
    "detector": "--detector",
}


def _metadata(sources: Sequence[FrameSource], overrides: dict[str, float | None]) -> dict[str, float]:
    merged: dict[str, float] = {}
    for key in ("pixel_size_A", "frame_rate_hz", "exposure_s"):
        value = overrides.get(key)
        if value is None:
            value = next((s.metadata[key] for s in sources if key in s.metadata), None)
        if value is not None:
            merged[key] = float(value)
    for key in _REQUIRED_POSITIVE:
        if key not in merged:
            raise FormatError(
                f"{sources[0].path}: the file does not record {key}; pass {_METADATA_FLAGS[key]}"
            )
    _require_positive(sources, merged)
    return merged


_REQUIRED_POSITIVE = ("pixel_size_A", "frame_rate_hz")


def _require_positive(sources: Sequence[FrameSource], values: dict[str, Any]) -> None:
    """Pixel size and frame rate, where given, must be finite and > 0; a dose finite and ≥ 0 (0: unknown)."""
    for key in _REQUIRED_POSITIVE:
        value = values.get(key)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise FormatError(f"{sources[0].path}: {key} must be a finite number > 0, got {value}")
    dose = values.get("dose_e_per_px")
    if dose is not None and not (math.isfinite(dose) and dose >= 0):
        raise FormatError(
            f"{sources[0].path}: dose_e_per_px must be a finite number ≥ 0 (0 = not known), got {dose}"
        )


def _committed_sum(path: Path) -> float:
    ds = open_series(path, allow_incomplete=True)
    return float(ds["counts"].sum(dtype="float64").compute(scheduler="synchronous"))


@dataclass(frozen=True)
class IngestSummary:
    """What one ``ingest`` run did, for the CLI's closing lines."""

    path: Path
    n_frames: int
    frame_shape: tuple[int, int]
    dtype: str
    stored_bytes: int
    """Bytes of every file of the store on disk."""
    dose_e_per_px: float
    """Dose the store records (e/px/frame)."""
    dose_source: str
    """How that dose was obtained (``"given"`` or measured)."""
    measured_dose_e_per_px: float | None
    """Mean counts per pixel per frame of the frames, when this run summed them."""
    seconds: float
    frames_written: int
    """Frames read, validated and appended by this run (0 for a no-op re-run)."""
    source_bytes: int
    """Uncompressed bytes of the source frames this run read."""
    already_complete: bool
    """The store was already complete: this run wrote nothing."""

    @property
    def counts_bytes(self) -> int:
        """Uncompressed bytes of the stored counts."""
        return self.n_frames * self.frame_shape[0] * self.frame_shape[1] * np.dtype(self.dtype).itemsize

    @property
    def compression_ratio(self) -> float:
        """Uncompressed counts bytes per stored byte."""
        return self.counts_bytes / max(self.stored_bytes, 1)

    @property
    def mb_per_s(self) -> float:
        """Source MB (10^6 bytes) ingested per second of wall time by this run."""
        return self.source_bytes / 1e6 / max(self.seconds, 1e-9)

    def lines(self) -> list[str]:
        """A few human-readable lines describing the store and this run."""
        y, x = self.frame_shape
        if self.measured_dose_e_per_px is not None:
            dose = f"dose {self.measured_dose_e_per_px:.4g} e/px/frame measured"
            if self.dose_source == "given":
                dose += f" ({self.dose_e_per_px:.4g} given, recorded)"
        else:
            dose = f"dose {self.dose_e_per_px:.4g} e/px/frame ({self.dose_source})"
        lines = [
            f"{self.n_frames} frames of {y} x {x} px, {self.dtype}; {dose}",
            f"stored {self.stored_bytes / 1e6:.3g} MB, {self.compression_ratio:.2f}x smaller than "
            f"the {self.counts_bytes / 1e6:.3g} MB of {self.dtype} counts",
        ]
        if self.already_complete:
            lines.append("already complete from the same sources: nothing written")
        else:
            lines.append(
                f"{self.frames_written} frames ingested in {self.seconds:.2f} s "
                f"({self.mb_per_s:.1f} MB/s of source frames)"
            )
        return lines


def _refuse_changed_metadata(out: Path, attrs: dict[str, Any], given: dict[str, Any]) -> None:
    """A re-run on a complete store: a given metadata value that differs from the store's is an error."""
    changed: list[tuple[str, Any, Any]] = []
    for key, value in given.items():
        if value is None:
            continue
        stored = attrs.get(key)
        if isinstance(value, str):
            same = stored == value
        else:
            same = isinstance(stored, int | float) and math.isclose(float(stored), float(value), rel_tol=1e-9)
        if not same:
            changed.append((key, stored, value))
    if not changed:
        return
    what = "; ".join(
        f"{key} is {stored!r} in the store but {_METADATA_FLAGS[key]} gave {value!r}"
        for key, stored, value in changed
    )
    updates: dict[str, Any] = {key: value for key, _, value in changed}
    if "dose_e_per_px" in updates:
        updates["dose_source"] = "given"
    raise StoreError(
        f"{out}: already ingested complete from these sources, and a re-run does not change it: {what}; "
        f"to change it, call lowdose.store.series.update_series_attrs({str(out)!r}, {updates!r}), "
        f"or ingest into a new --out"
    )


def _stored_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _source_bytes_after(sources: Sequence[FrameSource], start: int) -> int:
    """Uncompressed bytes of the sources' frames from global frame ``start`` on."""
    total, offset = 0, 0
    for source in sources:
        frames = source.n_frames - min(max(start - offset, 0), source.n_frames)
        total += frames * source.frame_shape[0] * source.frame_shape[1] * source.dtype.itemsize
        offset += source.n_frames
    return total


def _summary(
    path: Path,
    started: float,
    *,
    frames_written: int = 0,
    source_bytes: int = 0,
    measured: float | None = None,
    already_complete: bool = False,
) -> IngestSummary:
    import zarr

    attrs = series_attrs(path)  # checks the layout; the counts' metadata is all else needed
    counts = zarr.open_array(path / "counts", mode="r", zarr_format=3)
    return IngestSummary(
        path=path,
        n_frames=int(attrs["n_frames"]),
        frame_shape=(int(counts.shape[1]), int(counts.shape[2])),
        dtype=str(counts.dtype),
        stored_bytes=_stored_bytes(path),
        dose_e_per_px=float(attrs.get("dose_e_per_px", 0.0)),
        dose_source=str(attrs.get("dose_source", "unknown")),
        measured_dose_e_per_px=measured,
        seconds=time.perf_counter() - started,
        frames_written=frames_written,
        source_bytes=source_bytes,
        already_complete=already_complete,
    )


def ingest(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    pixel_size_A: float | None = None,
    frame_rate_hz: float | None = None,
    dose_e_per_px: float | None = None,
    detector: str | None = None,
    h5_dataset: str | None = None,
    float_policy: FloatPolicy = "refuse",
    chunk_frames: int | None = None,
    batch_frames: int | None = None,
    progress: bool = False,
) -> Path:
    """Ingest microscope files into the FrameSeries at ``out``; return its path.

    Parameters
    ----------
    inputs
        Files and TIFF folders, in frame order. HDF5 inputs may name their dataset
        as ``file.h5:/path/to/dataset``.
    out
        Local ``.zarr`` path of the series.
    pixel_size_A, frame_rate_hz
        Override what the files record (required when they record nothing).
    dose_e_per_px
        Nominal dose; default: the measured mean counts per pixel per frame.
    detector
        Detector name for the attrs.
    h5_dataset
        Dataset path for HDF5 inputs that do not name one.
    float_policy
        ``"refuse"`` float data unless every value is a whole number, or ``"round"``.
    chunk_frames
        Frames per zarr chunk; default up to 32, fewer for frames so large that a
        chunk would exceed 64 MiB.
    batch_frames
        Frames read and written per step, rounded up to whole chunks so that writes
        stay chunk-aligned; default: as many whole chunks as fit in 64 MiB of source data.
    progress
        Show tqdm progress bars.

    Raises
    ------
    FormatError
        Unreadable, truncated or corrupt input; bad values; mismatched frame shapes.
    StoreError
        ``out`` exists and holds something else, or is complete from the same
        sources but records a different value of a metadata argument given here.
    """
    return ingest_with_summary(
        inputs,
        out,
        pixel_size_A=pixel_size_A,
        frame_rate_hz=frame_rate_hz,
        dose_e_per_px=dose_e_per_px,
        detector=detector,
        h5_dataset=h5_dataset,
        float_policy=float_policy,
        chunk_frames=chunk_frames,
        batch_frames=batch_frames,
        progress=progress,
    ).path


def ingest_with_summary(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    pixel_size_A: float | None = None,
    frame_rate_hz: float | None = None,
    dose_e_per_px: float | None = None,
    detector: str | None = None,
    h5_dataset: str | None = None,
    float_policy: FloatPolicy = "refuse",
    chunk_frames: int | None = None,
    batch_frames: int | None = None,
    progress: bool = False,
) -> IngestSummary:
    """:func:`ingest`, returning an :class:`IngestSummary` of the store and the run (same arguments)."""
    from tqdm import tqdm

    started = time.perf_counter()
    given: dict[str, Any] = {
        "pixel_size_A": pixel_size_A,
        "frame_rate_hz": frame_rate_hz,
        "dose_e_per_px": dose_e_per_px,
        "detector": detector,
    }
    if float_policy not in ("refuse", "round"):
        raise FormatError(f"float_policy {float_policy!r}: expected 'refuse' or 'round'")
    out_path = Path(out)
    if "://" in str(out):
        raise StoreError(f"{out}: ingest writes local stores only; copy the result to remote storage")
    partial = out_path.with_name(out_path.name + ".partial")
    specs = expand_inputs(list(inputs))
    if not specs:
        raise FormatError("no input files given")
    if h5_dataset is not None and not any(
        split_dataset(str(s))[0].suffix.lower() in HDF5_SUFFIXES for s in specs
    ):
        raise FormatError(
            f"--h5-dataset {h5_dataset}: none of the inputs is an HDF5 file ({specs[0]}); "
            f"the option names the dataset inside {'/'.join(HDF5_SUFFIXES)} files only"
        )
    sources: list[FrameSource] = []
    records: list[dict[str, Any]] | None = None
    hashing: Future[list[dict[str, Any]]] | None = None
    hash_stop = threading.Event()
    hash_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lowdose-ingest-sha256")
    try:
        for spec in specs:
            sources.append(open_source(spec, h5_dataset=h5_dataset))
        frame_shape = sources[0].frame_shape
        for source in sources[1:]:
            if source.frame_shape != frame_shape:
                raise source.fail(
                    f"frame shape {source.frame_shape}; expected {frame_shape} like {sources[0].path}"
                )
        _require_positive(sources, given)  # the values given on the command line, before any work
        if out_path.exists() or partial.exists():  # what to do depends on the sources' identity
            records = _source_records(sources, progress)
        else:  # a fresh store: hash the sources beside the ingest, record them once known
            hashing = hash_pool.submit(_source_records, sources, False, hash_stop)

        if out_path.exists():
            assert records is not None
            attrs = series_attrs(out_path)
            if attrs.get("ingest_state") == "complete" and _same_sources(attrs.get("sources"), records):
                _refuse_changed_metadata(out_path, attrs, given)
                return _summary(out_path, started, already_complete=True)
            raise StoreError(
                f"{out_path}: already holds a different series; choose another --out or delete it"
            )

        frame_bytes = frame_shape[0] * frame_shape[1]
        n_total = sum(s.n_frames for s in sources)
        state = _partial_state(partial, records) if records is not None else None
        if state == "complete":  # crashed between the completion marker and the rename
            remove_stale_temp_files(partial)
            partial.rename(out_path)  # finishes that run; its content is unchanged
            _refuse_changed_metadata(out_path, series_attrs(out_path), given)
            return _summary(out_path, started, already_complete=True)
        resume = state == "in_progress"
        if partial.exists() and not resume:
            shutil.rmtree(partial)
        if resume:
            remove_stale_temp_files(partial)
            attrs = series_attrs(partial)
            chunk = int(attrs["chunk_frames"])
        else:
            chunk = chunk_frames or int(min(32, max(1, CHUNK_TARGET_BYTES // frame_bytes)))
        source_itemsize = max(s.dtype.itemsize for s in sources)
        batch = batch_frames or chunk * max(1, BATCH_TARGET_BYTES // (chunk * frame_bytes * source_itemsize))
        batch = -(-batch // chunk) * chunk  # whole chunks per append: no read-modify-write of chunks

        if resume:
            start = int(attrs["n_frames"])
            counts_sum = _committed_sum(partial) if start else 0.0
        else:
            metadata = _metadata(
                sources, {"pixel_size_A": pixel_size_A, "frame_rate_hz": frame_rate_hz, "exposure_s": None}
            )
            if all(s.dtype.name in ("uint8", "bool") for s in sources):
                dtype = "uint8"
            else:
                dtype = smallest_counts_dtype(_scan_max(sources, batch, float_policy, progress))
            extra: dict[str, Any] = {"sources": records or [], "ingest_state": "in_progress"}
            if "exposure_s" in metadata:
                extra["exposure_s"] = metadata["exposure_s"]
            create_frame_series(
                partial,
                frame_shape,
                dtype=dtype,
                chunk_frames=chunk,
                frame_rate_hz=metadata["frame_rate_hz"],
                dose_e_per_px=dose_e_per_px if dose_e_per_px is not None else 0.0,
                pixel_size_A=metadata["pixel_size_A"],
                detector=detector or "unknown",
                attrs=extra,
            )
            start, counts_sum = 0, 0.0

        # One appender for the whole run: the store's group and arrays are opened once and
        # grown once to the frames to come; all attribute changes go through it. Batch i+1
        # is read, staged (its chunks queued behind batch i's on the compressing threads)
        # and summed before batch i is committed, so those threads never wait between
        # batches; at most two batches are in flight.
        appender = FrameAppender(partial, reserve=n_total)
        with tqdm(total=n_total, initial=start, desc="ingest", unit="frame", disable=not progress) as bar:
            in_flight: list[StagedFrames] = []

            def commit_oldest() -> None:
                committed = in_flight.pop(0)
                appender.commit(committed)
                bar.update(committed.stop - committed.start)

            try:
                for frames in _batches(sources, start, batch, float_policy):
                    in_flight.append(appender.stage(frames))
                    counts_sum += counts_total(frames)  # beside its own writes
                    if len(in_flight) > 1:
                        commit_oldest()
                        records = _record_sources(appender.update_attrs, records, hashing, wait=False)
                while in_flight:
                    commit_oldest()
            finally:
                appender.drain()  # no chunk write may outlive the run, whatever ended it

        final: dict[str, Any] = {"ingest_state": "complete"}
        if records is None:  # recorded together with the completion marker
            assert hashing is not None
            final["sources"] = records = hashing.result()
        if resume:  # metadata given to the run that completes the store is what it records
            final.update({key: value for key, value in given.items() if value is not None})
        measured = counts_sum / max(n_total * frame_bytes, 1)
        if dose_e_per_px is None:
            final["dose_e_per_px"] = measured
            final["dose_source"] = "measured mean counts per pixel per frame"
        else:
            final["dose_e_per_px"] = float(dose_e_per_px)
            final["dose_source"] = "given"
        appender.update_attrs(final)
        partial.rename(out_path)
        return _summary(
            out_path,
            started,
            frames_written=n_total - start,
            source_bytes=_source_bytes_after(sources, start),
            measured=measured,
        )
    except LowdoseInputError as err:
        if isinstance(err, StorageFullError):
            # keep OUT.partial: its committed frames are valid and the re-run resumes after them
            _keep_partial(partial, records, hashing)
        else:
            hash_stop.set()
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
        raise
    except BaseException:  # Ctrl-C, kill by signal handler, a bug: keep what was committed
        _keep_partial(partial, records, hashing)
        raise
    finally:
        hash_stop.set()
        hash_pool.shutdown(wait=True)
        for source in sources:
            source.close()


def _record_sources(
    write: Callable[[dict[str, Any]], None],
    records: list[dict[str, Any]] | None,
    hashing: Future[Any] | None,
    *,
    wait: bool,
) -> list[dict[str, Any]] | None:
    """Write the sources' records (``write``: an attrs update of the partial store) once known.

    Until then a partial store has ``sources == []`` and a re-run cannot resume it
    (it starts over): resuming needs proof that the inputs are the same files.
    """
    if records is not None or hashing is None or not (wait or hashing.done()):
        return records
    found = hashing.result()
    if found:
        write({"sources": found})
        return list(found)
    return None


def _keep_partial(partial: Path, records: list[dict[str, Any]] | None, hashing: Future[Any] | None) -> None:
    """Interrupted: finish the checksums (they run ahead of the ingest) so a re-run can resume."""
    if records is not None or hashing is None or not partial.exists():
        return
    with contextlib.suppress(Exception):  # the interruption is what the caller must see
        attrs = series_attrs(partial)
        if int(attrs.get("n_frames", 0)) > 0:
            _record_sources(  # no appender in use any more: a fresh handle
                lambda updates: update_series_attrs(partial, updates), records, hashing, wait=True
            )


def _partial_state(partial: Path, records: list[dict[str, Any]]) -> str | None:
    """``ingest_state`` of a leftover ``OUT.partial`` built from the same sources, else None."""
    if not partial.exists():
        return None
    try:
        attrs = series_attrs(partial)
    except StoreError:
        return None
    if not _same_sources(attrs.get("sources"), records):
        return None
    state = attrs.get("ingest_state")
    return state if state in ("in_progress", "complete") else None
