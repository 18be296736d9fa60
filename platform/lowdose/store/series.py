"""The FrameSeries store: create, append to and open a chunked zarr frame series.

A FrameSeries is a zarr v3 group holding ``counts`` ``(frame, y, x)`` as unsigned
integers (electron counts, never float), chunked by frames with the full frame in
every chunk, and a ``time_s`` coordinate along ``frame``. Synthetic series also carry
``clean`` (float32 expected counts). Alignment adds ``shift_y_px``/``shift_x_px``.

Crash safety: the group attribute ``n_frames`` is the commit counter. An append
first grows the arrays, then writes the data, and only then raises ``n_frames``; a
crash in between leaves frames beyond ``n_frames`` that readers ignore and the next
append overwrites. Zarr's local store writes every chunk file by temp + rename, so a
committed chunk is never torn. A full disk raises
:class:`~lowdose.errors.StorageFullError` naming the store; the committed frames stay
valid and the next append (or ``lowdose ingest`` re-run) continues after them.

Integrity: every array ends its codec pipeline with a crc32c checksum, and reads go
through :mod:`lowdose.store.integrity`, so a corrupt chunk raises a
:class:`~lowdose.errors.StoreError` naming the chunk instead of being decoded.

Dtype policy: the dtype is chosen when the store is created (``ingest`` picks uint8
when the source's maximum fits, else uint16/uint32). An append whose values do not
fit the store's dtype raises :class:`~lowdose.errors.StoreError`; nothing is
silently clipped or promoted.

Compression (measured on Poisson counts, see :func:`lowdose.store.bench.codec_comparison`):
Blosc-zstd level 1 with bit-shuffle and 1 MiB Blosc blocks reaches 94 % of the
Shannon bound at 0.45 e/px (86–94 % from 0.1 to 10 e/px) at ≈ 0.9 GB/s per CPU-second
(a 32-frame 512² uint8 chunk); zstd levels 2–5 compress slightly *worse* and 2–5× slower
on these bit planes, and byte-shuffle or no shuffle stays at ≈ 66 %. LZ4 with bit-shuffle
encodes ≈ 2.2× faster but reaches only 64 % of the bound (ratio 4.0 vs 5.95).

This module imports numpy, zarr, xarray and dask (lazy reads only); never torch.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from lowdose.errors import StoreError
from lowdose.store.integrity import checksum_codecs, lazy_checked, read_checked, storage_full_as_error
from lowdose.store.schema import FRAME_SERIES, LAYOUT_VERSION, Layout, validate

COUNTS_DTYPES = ("uint8", "uint16", "uint32")
"""Integer dtypes a FrameSeries may store counts in, smallest first."""

COUNTS_CNAME: Literal["zstd"] = "zstd"
COUNTS_CLEVEL = 1
COUNTS_SHUFFLE: Literal["bitshuffle"] = "bitshuffle"
COUNTS_BLOCKSIZE = 1 << 20
COMPRESSION: dict[str, Any] = {
    "cname": COUNTS_CNAME,
    "clevel": COUNTS_CLEVEL,
    "shuffle": COUNTS_SHUFFLE,
    "blocksize": COUNTS_BLOCKSIZE,
}
"""The Blosc settings of ``counts`` (chosen by measurement, see module docstring)."""

SHIFT_VARIABLES = ("shift_y_px", "shift_x_px")
"""Per-frame integer drift shifts written by :mod:`lowdose.store.align`."""

PathLike = str | os.PathLike[str]


def _counts_codecs(dtype: np.dtype[Any]) -> list[Any]:
    from zarr.codecs import BloscCodec

    blosc = BloscCodec(
        typesize=dtype.itemsize,
        cname=COUNTS_CNAME,
        clevel=COUNTS_CLEVEL,
        shuffle=COUNTS_SHUFFLE,
        blocksize=COUNTS_BLOCKSIZE,
    )
    return checksum_codecs(blosc)


def _float_codecs() -> list[Any]:
    from zarr.codecs import BloscCodec

    return checksum_codecs(BloscCodec(typesize=4, cname="zstd", clevel=3, shuffle="shuffle"))


def _small_codecs() -> list[Any]:
    """Codecs of the small per-frame arrays (times, shifts): zarr's default zstd + crc32c."""
    from zarr.codecs import ZstdCodec

    return checksum_codecs(ZstdCodec(level=0))


def smallest_counts_dtype(max_count: int) -> str:
    """Return the smallest of :data:`COUNTS_DTYPES` that holds ``max_count``."""
    for name in COUNTS_DTYPES:
        if max_count <= np.iinfo(name).max:
            return name
    raise StoreError(f"counts up to {max_count} do not fit uint32; expected counts below 2**32")


def series_location(source: Any) -> str:
    """Return the path or URL of a series given a path, URL or catalog-entry-like object.

    Anything with a ``urlpath`` or ``path`` attribute (an Intake entry or reader, a
    future lowdose catalog entry) is accepted; this is the hook catalogs plug into.
    """
    for attr in ("urlpath", "path"):
        value = getattr(source, attr, None)
        if isinstance(value, str | os.PathLike):
            return os.fspath(value)
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    raise StoreError(f"{source!r}: expected a path, URL or catalog entry with a 'urlpath'/'path'")


def _open_group(location: str, mode: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    import zarr

    kwargs: dict[str, Any] = {}
    if storage_options:
        kwargs["storage_options"] = dict(storage_options)
    try:
        return zarr.open_group(location, mode=mode, zarr_format=3, **kwargs)  # type: ignore[arg-type]
    except FileNotFoundError as err:
        if mode in ("w", "w-", "a"):  # creating: the folder it goes in is missing or cannot be made
            raise StoreError(f"{location}: cannot create the zarr store there ({err})") from None
        raise StoreError(f"{location}: no zarr store here ({err})") from None
    except (ValueError, KeyError, OSError) as err:
        raise StoreError(f"{location}: cannot open as a zarr v3 store ({err})") from None


def create_frame_series(
    path: PathLike,
    frame_shape: tuple[int, int],
    *,
    dtype: str = "uint8",
    chunk_frames: int = 32,
    frame_rate_hz: float = 40.0,
    dose_e_per_px: float = 0.45,
    pixel_size_A: float = 0.061,
    attrs: Mapping[str, Any] | None = None,
    with_clean: bool = False,
    detector: str = "unknown",
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Create an empty FrameSeries store at ``path``.

    Parameters
    ----------
    path
        Local path or fsspec URL of the new ``.zarr`` store. An existing store is an
        error unless ``overwrite``.
    frame_shape
        ``(y, x)`` size of every frame in pixels.
    dtype
        One of :data:`COUNTS_DTYPES`.
    chunk_frames
        Frames per chunk (each chunk holds full frames).
    frame_rate_hz, dose_e_per_px, pixel_size_A
        Acquisition metadata; ``time_s`` of frame ``i`` is ``i / frame_rate_hz``.
    attrs
        Extra attributes (e.g. ``sources``); they may not override the layout stamp.
    with_clean
        Also create a float32 ``clean`` variable (synthetic series with ground truth).
    detector
        Detector name recorded in attrs.
    overwrite
        Replace an existing store.
    storage_options
        fsspec options for remote URLs.
    """
    if np.dtype(dtype).name not in COUNTS_DTYPES:
        raise StoreError(f"{path}: counts dtype {dtype!r} not allowed; expected one of {COUNTS_DTYPES}")
    if len(frame_shape) != 2 or min(frame_shape) < 1:
        raise StoreError(f"{path}: frame_shape {frame_shape} must be two positive sizes (y, x)")
    if chunk_frames < 1:
        raise StoreError(f"{path}: chunk_frames must be ≥ 1, got {chunk_frames}")
    if not frame_rate_hz > 0:
        raise StoreError(f"{path}: frame_rate_hz must be > 0, got {frame_rate_hz}")
    location = os.fspath(path)
    with storage_full_as_error(location, "creating the series"):
        _create_arrays(
            location,
            frame_shape,
            dtype=dtype,
            chunk_frames=chunk_frames,
            frame_rate_hz=frame_rate_hz,
            dose_e_per_px=dose_e_per_px,
            pixel_size_A=pixel_size_A,
            attrs=attrs,
            with_clean=with_clean,
            detector=detector,
            overwrite=overwrite,
            storage_options=storage_options,
        )


def _create_arrays(
    location: str,
    frame_shape: tuple[int, int],
    *,
    dtype: str,
    chunk_frames: int,
    frame_rate_hz: float,
    dose_e_per_px: float,
    pixel_size_A: float,
    attrs: Mapping[str, Any] | None,
    with_clean: bool,
    detector: str,
    overwrite: bool,
    storage_options: Mapping[str, Any] | None,
) -> None:
    from lowdose import __version__

    group = _open_group(location, "w" if overwrite else "w-", storage_options)
    ny, nx = (int(s) for s in frame_shape)
    counts_dtype = np.dtype(dtype)
    group.create_array(
        "counts",
        shape=(0, ny, nx),
        chunks=(chunk_frames, ny, nx),
        dtype=counts_dtype,
        compressors=_counts_codecs(counts_dtype),
        fill_value=0,
        dimension_names=list(FRAME_SERIES.dims),
        attributes={"units": "electrons", "long_name": "electron counts", "coordinates": "time_s"},
    )
    group.create_array(
        "time_s",
        shape=(0,),
        chunks=(max(chunk_frames, 4096),),
        dtype="float64",
        compressors=_small_codecs(),
        dimension_names=["frame"],
        attributes={"units": "s", "long_name": "time since first frame"},
    )
    if with_clean:
        group.create_array(
            "clean",
            shape=(0, ny, nx),
            chunks=(chunk_frames, ny, nx),
            dtype="float32",
            compressors=_float_codecs(),
            fill_value=0.0,
            dimension_names=list(FRAME_SERIES.dims),
            attributes={"units": "electrons", "long_name": "expected counts (noise-free)"},
        )
    stamp: dict[str, Any] = {
        "lowdose_layout": str(Layout.FRAME_SERIES),
        "lowdose_layout_version": LAYOUT_VERSION,
        "lowdose_version": __version__,
        "frame_rate_hz": float(frame_rate_hz),
        "dose_e_per_px": float(dose_e_per_px),
        "pixel_size_A": float(pixel_size_A),
        "detector": detector,
        "sources": [],
        "chunk_frames": int(chunk_frames),
        "compression": dict(COMPRESSION),
        "n_frames": 0,
    }
    extra = dict(attrs or {})
    clash = sorted(set(extra) & {"lowdose_layout", "lowdose_layout_version", "n_frames"})
    if clash:
        raise StoreError(f"{location}: attrs may not set reserved keys {clash}")
    stamp.update(extra)
    group.update_attributes(stamp)  # one metadata write (attrs.update writes once per key)


def _check_counts(location: str, values: np.ndarray, dtype: np.dtype[Any], first_frame: int) -> None:
    if values.dtype.kind not in "ui":
        raise StoreError(
            f"{location}: appended counts have dtype {values.dtype}; expected integers (convert floats first)"
        )
    if values.size == 0 or (values.dtype.kind == "u" and values.dtype.itemsize <= dtype.itemsize):
        return  # every value fits: no pass over the data
    low, high = int(values.min()), int(values.max())
    if low < 0:
        frame = first_frame + int(np.argwhere(values < 0)[0][0])
        raise StoreError(f"{location}: frame {frame} has negative count {low}; expected counts ≥ 0")
    if high > np.iinfo(dtype).max:
        frame = first_frame + int(np.argwhere(values > np.iinfo(dtype).max)[0][0])
        raise StoreError(
            f"{location}: frame {frame} has count {high}, above the store's {dtype.name} maximum "
            f"{np.iinfo(dtype).max}; recreate the store with a wider dtype"
        )


def append_frames(
    path: PathLike,
    counts: np.ndarray,
    clean: np.ndarray | None = None,
    *,
    time_s: np.ndarray | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Append frames to a FrameSeries and return the new number of committed frames.

    Parameters
    ----------
    path
        The store.
    counts
        ``(n, y, x)`` (or one ``(y, x)`` frame) of non-negative integers that fit the
        store's dtype.
    clean
        Matching float expected counts; required exactly when the store has ``clean``.
    time_s
        Optional per-frame times; default ``frame / frame_rate_hz``.
    storage_options
        fsspec options for remote URLs.

    Notes
    -----
    The data is written before the frame counter ``n_frames`` moves, so an
    interrupted append is invisible and the next append overwrites it. Appending
    drops any stored alignment shifts (they no longer cover every frame). Chunks are
    written one zarr write each, up to four at once (compression runs outside the
    GIL), and every chunk is stored, all-zero ones included. Many appends to one
    store in a row: keep one :class:`FrameAppender` (this opens one per call).
    """
    return FrameAppender(path, storage_options=storage_options).append(counts, clean, time_s=time_s)


@dataclass
class StagedFrames:
    """A batch whose chunks are being written; :meth:`FrameAppender.commit` makes it visible."""

    start: int
    stop: int
    times: np.ndarray
    writes: list[Future[None]]


class FrameAppender:
    """Appends batches of frames to one FrameSeries, its group and arrays opened once.

    :func:`append_frames` is one batch through a fresh appender. A writer of many
    batches (``lowdose ingest``) keeps one: opening the group and arrays and writing
    their metadata cost ≈ 25 ms per batch otherwise. ``reserve`` (the number of frames
    the store will hold) grows the arrays once, at the first batch that needs it,
    rather than once per batch; frames beyond ``n_frames`` (reserved, or written by an
    append cut short) are invisible to readers, so crash safety is unchanged.

    :meth:`append` writes a batch and commits it. :meth:`stage` only starts writing it
    (its chunks compressed and written by background threads) and :meth:`commit`
    waits for those writes and moves ``n_frames``: a writer that stages batch i+1
    before committing batch i keeps the compressing threads busy across the batches.
    Batches are committed in the order they were staged; after a failed batch the
    appender refuses the rest. :meth:`drain` waits for every write still running.

    The appender holds the group's attributes as it read them: while it is in use,
    change attributes through :meth:`update_attrs`, not through another handle (whose
    change its next commit would overwrite). One caller thread at a time.
    """

    def __init__(
        self, path: PathLike, *, reserve: int = 0, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        location = os.fspath(path)
        group = _open_group(location, "r+", storage_options)
        _check_layout(location, group)
        self.location = location
        self.reserve = int(reserve)
        self._group = group
        # zarr skips chunks equal to the fill value by comparing every chunk with it first
        # (np.array_equal, ≈ 250 MB/s: more CPU than the compression); counts chunks are
        # written whatever they hold, so an all-zero chunk is stored rather than omitted.
        self._counts = group["counts"].with_config({"write_empty_chunks": True})
        self._clean = group["clean"].with_config({"write_empty_chunks": True}) if "clean" in group else None
        self._time_s = group["time_s"]
        self._direct_counts = _ChunkFileWriter.for_array(self._counts)
        self._direct_clean = _ChunkFileWriter.for_array(self._clean) if self._clean is not None else None
        self.n_frames = int(group.attrs["n_frames"])
        self.frame_rate_hz = float(group.attrs["frame_rate_hz"])
        self._staged_end = self.n_frames
        self._pending: list[StagedFrames] = []
        self._failed: BaseException | None = None
        self._shifts_dropped = False

    def append(
        self, counts: np.ndarray, clean: np.ndarray | None = None, *, time_s: np.ndarray | None = None
    ) -> int:
        """Write a batch after the committed frames, then commit it; return the new ``n_frames``."""
        return self.commit(self.stage(counts, clean, time_s=time_s))

    def stage(
        self, counts: np.ndarray, clean: np.ndarray | None = None, *, time_s: np.ndarray | None = None
    ) -> StagedFrames:
        """Start writing a batch after the ones staged before it; return at once.

        The values are validated here (errors raise before anything is written); the
        batch's chunks are then compressed and written in the background. ``counts``
        (and ``clean``) must not change until the batch is committed.
        """
        location = self.location
        self._refuse_if_failed()
        values = np.asarray(counts)
        if values.ndim == 2:
            values = values[None]
        ny, nx = self._counts.shape[1:]
        if values.ndim != 3 or values.shape[1:] != (ny, nx):
            raise StoreError(
                f"{location}: appended counts have shape {values.shape}; expected (n, {ny}, {nx})"
            )
        n_old = self._staged_end
        _check_counts(location, values, self._counts.dtype, n_old)
        if (clean is not None) != (self._clean is not None):
            want = "with" if self._clean is not None else "without"
            raise StoreError(f"{location}: this store was created {want} 'clean'; pass clean= accordingly")
        if self._clean is not None:
            clean_values = np.asarray(clean, dtype="float32").reshape(values.shape)
        n_new = n_old + values.shape[0]
        if time_s is None:
            times = np.arange(n_old, n_new, dtype="float64") / self.frame_rate_hz
        else:
            times = np.asarray(time_s, dtype="float64").reshape(-1)
            if times.shape[0] != values.shape[0]:
                raise StoreError(f"{location}: {times.shape[0]} times for {values.shape[0]} frames")
        step = int(self._counts.chunks[0])
        arrays = [a for a in (self._counts, self._clean, self._time_s) if a is not None]
        resize = [(a, length) for a in arrays if (length := self._length(a, n_new)) is not None]
        if resize or n_old % step:
            # No chunk write may run while the arrays' shapes change, nor beside a write
            # of the chunk this batch shares with the one before it.
            self.drain()
            self._refuse_if_failed()
        with storage_full_as_error(location, f"appending frames {n_old}–{n_new - 1}"):
            if not self._shifts_dropped:
                self._drop_shifts()
            for array, length in resize:
                array.resize((length, *array.shape[1:]))
            writes = _submit_by_chunk(
                self._counts, n_old, values.astype(self._counts.dtype, copy=False), self._direct_counts
            )
            if self._clean is not None:
                writes += _submit_by_chunk(self._clean, n_old, clean_values, self._direct_clean)
        staged = StagedFrames(n_old, n_new, times, writes)
        self._pending.append(staged)
        self._staged_end = n_new
        return staged

    def commit(self, staged: StagedFrames) -> int:
        """Wait for a staged batch's writes, then make it visible; return the new ``n_frames``."""
        location = self.location
        self._refuse_if_failed()
        if not self._pending or self._pending[0] is not staged:
            raise StoreError(f"{location}: commit each staged batch once, in the order they were staged")
        with storage_full_as_error(location, f"appending frames {staged.start}–{staged.stop - 1}"):
            errors = [write.exception() for write in staged.writes]  # wait for all of them
            self._pending.pop(0)
            for error in errors:
                if error is not None:
                    self._failed = error
                    raise error
            try:
                self._time_s[staged.start : staged.stop] = staged.times
                self._group.update_attributes({"n_frames": staged.stop})
            except BaseException as error:
                self._failed = error
                raise
        self.n_frames = staged.stop
        return staged.stop

    def drain(self) -> None:
        """Wait for every chunk write still running (their errors are raised by :meth:`commit`)."""
        for staged in self._pending:
            for write in staged.writes:
                write.exception()

    def update_attrs(self, updates: Mapping[str, Any]) -> None:
        """Merge ``updates`` into the group's attributes (one metadata write)."""
        _refuse_reserved(self.location, updates)
        with storage_full_as_error(self.location, "updating attributes"):
            self._group.update_attributes(dict(updates))

    def _length(self, array: Any, n_new: int) -> int | None:
        """The length ``array`` must take to hold frames up to ``n_new``, or None to keep it.

        Without a reserve it becomes ``n_new`` exactly (which also drops frames an
        append cut short left beyond it); with one it grows to the reserve, once.
        """
        if self.reserve:
            return max(n_new, self.reserve) if array.shape[0] < n_new else None
        return n_new if array.shape[0] != n_new else None

    def _refuse_if_failed(self) -> None:
        if self._failed is not None:
            raise StoreError(
                f"{self.location}: an earlier batch failed ({self._failed!r}); "
                f"{self.n_frames} frames are committed: append after them with a new appender"
            )

    def _drop_shifts(self) -> None:
        for name in SHIFT_VARIABLES:
            if name in self._group:
                del self._group[name]
        if "alignment" in self._group.attrs:
            self._group.update_attributes({"alignment": None})
        self._shifts_dropped = True


def _refuse_reserved(location: str, updates: Mapping[str, Any]) -> None:
    reserved = sorted(set(updates) & {"lowdose_layout", "lowdose_layout_version", "n_frames"})
    if reserved:
        raise StoreError(f"{location}: may not update reserved attrs {reserved}")


_CHUNK_WRITERS: ThreadPoolExecutor | None = None
_CHUNK_WRITERS_LOCK = threading.Lock()


def _forget_chunk_writers() -> None:
    """In a forked child the parent's pool threads do not exist: start a fresh pool there."""
    global _CHUNK_WRITERS, _CHUNK_WRITERS_LOCK
    _CHUNK_WRITERS = None
    _CHUNK_WRITERS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_chunk_writers)


def _chunk_writers() -> ThreadPoolExecutor:
    global _CHUNK_WRITERS
    with _CHUNK_WRITERS_LOCK:
        if _CHUNK_WRITERS is None:
            workers = min(4, os.cpu_count() or 1)
            _CHUNK_WRITERS = ThreadPoolExecutor(workers, thread_name_prefix="lowdose-chunk-write")
        return _CHUNK_WRITERS


class _ChunkFileWriter:
    """Writes whole frame chunks of a lowdose array straight to their files.

    Only for the layout lowdose creates: zarr v3 on a local disk, a regular grid of
    full-frame chunks, codecs ``bytes`` → ``blosc`` → ``crc32c``. The file is what
    zarr writes for the chunk, byte for byte (the same Blosc settings, the crc32c of
    the compressed bytes appended little-endian, a ``<key>.<uuid>.partial`` temp file
    renamed into place), without zarr's event-loop round trip per chunk (≈ 3 CPU-ms).
    """

    def __init__(self, array: Any, blosc: Any, dtype: np.dtype[Any]) -> None:
        self.array = array
        self.root = Path(array.store.root) / str(array.path)
        self.blosc = blosc
        self.dtype = dtype

    @classmethod
    def for_array(cls, array: Any) -> _ChunkFileWriter | None:
        """The writer of ``array``, or None when zarr must write it."""
        from numcodecs import Blosc
        from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec
        from zarr.storage import LocalStore

        metadata = array.metadata
        if getattr(metadata, "zarr_format", None) != 3 or not isinstance(array.store, LocalStore):
            return None
        if type(getattr(metadata, "chunk_grid", None)).__name__ != "RegularChunkGrid":
            return None
        codecs = tuple(getattr(metadata, "codecs", ()))
        if tuple(type(codec) for codec in codecs) != (BytesCodec, BloscCodec, Crc32cCodec):
            return None
        if tuple(array.chunks[1:]) != tuple(array.shape[1:]):
            return None
        blosc_codec = codecs[1]
        shuffle = getattr(blosc_codec.shuffle, "value", blosc_codec.shuffle)
        blosc = Blosc(
            cname=getattr(blosc_codec.cname, "value", blosc_codec.cname),
            clevel=int(blosc_codec.clevel),
            shuffle={"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}[
                shuffle
            ],
            blocksize=int(blosc_codec.blocksize),
            typesize=int(blosc_codec.typesize),
        )
        endian = getattr(codecs[0].endian, "value", codecs[0].endian)
        dtype = np.dtype(array.dtype).newbyteorder(">" if endian == "big" else "<")
        return cls(array, blosc, dtype)

    def write(self, index: int, values: np.ndarray) -> None:
        """Store ``values`` (one whole chunk) as chunk ``index`` along frames."""
        import google_crc32c

        data = np.ascontiguousarray(values, dtype=self.dtype)
        encoded = self.blosc.encode(data)
        checksum = np.array([google_crc32c.value(encoded)], dtype="<u4").tobytes()
        coords = (index,) + (0,) * (data.ndim - 1)
        path = self.root / str(self.array.metadata.encode_chunk_key(coords))
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        try:
            with temp.open("wb") as handle:
                handle.write(encoded)
                handle.write(checksum)
            temp.replace(path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise


def _submit_by_chunk(
    array: Any, first: int, values: np.ndarray, direct: _ChunkFileWriter | None
) -> list[Future[None]]:
    """Start ``array[first:first + len(values)] = values`` chunk by chunk on the writer threads.

    One zarr write of many chunks builds every chunk in a fresh fill-value buffer and
    copies the values into it. Here each piece covers one chunk (so no two writes
    touch the same chunk) and the pieces are compressed concurrently (Blosc releases
    the GIL): whole chunks by ``direct`` (``_ChunkFileWriter.for_array(array)``: None
    for layouts it does not write), the rest (a partly filled chunk) by zarr. Returns
    the pieces' futures; the caller waits for all of them.
    """
    step = int(array.chunks[0])
    stop = first + values.shape[0]
    edges = [first, *range((first // step + 1) * step, stop, step), stop]
    pieces = [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]

    def write(lo: int, hi: int) -> None:
        part = values[lo - first : hi - first]
        if direct is not None and lo % step == 0 and hi - lo == step:
            direct.write(lo // step, part)
        else:
            array[lo:hi] = part

    return [_chunk_writers().submit(write, lo, hi) for lo, hi in pieces]


def _check_layout(location: str, group: Any) -> None:
    found = group.attrs.get("lowdose_layout")
    if found != str(Layout.FRAME_SERIES):
        raise StoreError(f"{location}: expected a lowdose FrameSeries store, found layout {found!r}")
    if "counts" not in group or "n_frames" not in group.attrs:
        raise StoreError(f"{location}: FrameSeries store is missing 'counts' or the 'n_frames' counter")


def series_attrs(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the group attributes of a FrameSeries without opening its arrays."""
    location = os.fspath(path)
    group = _open_group(location, "r", storage_options)
    _check_layout(location, group)
    return dict(group.attrs)


def update_series_attrs(
    path: PathLike, updates: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None
) -> None:
    """Merge ``updates`` into a FrameSeries' group attributes (one metadata write)."""
    location = os.fspath(path)
    group = _open_group(location, "r+", storage_options)
    _check_layout(location, group)
    _refuse_reserved(location, updates)
    with storage_full_as_error(location, "updating attributes"):
        group.update_attributes(dict(updates))


def write_shifts(
    path: PathLike,
    shift_y_px: np.ndarray,
    shift_x_px: np.ndarray,
    alignment: Mapping[str, Any],
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Store per-frame integer drift shifts (one per committed frame) beside ``counts``."""
    location = os.fspath(path)
    group = _open_group(location, "r+", storage_options)
    _check_layout(location, group)
    n_frames = int(group.attrs["n_frames"])
    for name, values in zip(SHIFT_VARIABLES, (shift_y_px, shift_x_px), strict=True):
        shifts = np.asarray(values)
        if shifts.shape != (n_frames,) or shifts.dtype.kind not in "iu":
            raise StoreError(
                f"{location}: {name} must be {n_frames} integers, got {shifts.dtype}{shifts.shape}"
            )
        if name in group:
            del group[name]
        with storage_full_as_error(location, f"writing {name}"):
            array = group.create_array(
                name,
                shape=(n_frames,),
                chunks=(max(n_frames, 1),),
                dtype="int32",
                compressors=_small_codecs(),
                dimension_names=["frame"],
                attributes={"units": "px"},
            )
            array[:] = shifts.astype("int32")
    with storage_full_as_error(location, "writing the alignment record"):
        group.update_attributes({"alignment": dict(alignment)})


def open_series(
    source: Any,
    *,
    allow_incomplete: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Open a FrameSeries as a lazy, validated :class:`xarray.Dataset`.

    Parameters
    ----------
    source
        Local path, fsspec URL, or an object with a ``urlpath``/``path`` attribute
        (catalog entry).
    allow_incomplete
        Open a store whose ingest has not finished (``ingest_state`` is
        ``"in_progress"``); by default that is a :class:`StoreError`.
    storage_options
        fsspec options for remote URLs.

    Returns
    -------
    xarray.Dataset
        ``counts`` (and ``clean``) as dask arrays chunked like the store, ``time_s``
        and shifts (when aligned) as coordinates, the group attributes as attrs.
        Only the ``n_frames`` committed frames are visible.
    """
    location = series_location(source)
    group = _open_group(location, "r", storage_options)
    _check_layout(location, group)
    attrs = dict(group.attrs)
    if attrs.get("ingest_state") == "in_progress" and not allow_incomplete:
        raise StoreError(f"{location}: ingest did not finish; re-run `lowdose ingest` to resume it")
    n_frames = int(attrs["n_frames"])
    data_vars: dict[str, Any] = {}
    for name in ("counts", "clean"):
        if name in group:
            array = group[name]
            # A fresh name per open: a store rewritten in place must never hit stale dask results.
            lazy = lazy_checked(array, location, name=f"{name}-{uuid.uuid4().hex}")[:n_frames]
            var_attrs = {k: v for k, v in array.attrs.items() if k != "coordinates"}
            data_vars[name] = xr.Variable(FRAME_SERIES.dims, lazy, attrs=var_attrs)
    coords: dict[str, Any] = {
        "frame": ("frame", np.arange(n_frames, dtype="int64")),
        "time_s": (
            "frame",
            read_checked(group["time_s"], slice(0, n_frames), location),
            dict(group["time_s"].attrs),
        ),
    }
    for name in SHIFT_VARIABLES:
        if name in group and group[name].shape == (n_frames,):
            coords[name] = ("frame", read_checked(group[name], slice(None), location), {"units": "px"})
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    return validate(ds, Layout.FRAME_SERIES, source=location)


__all__ = [
    "COMPRESSION",
    "COUNTS_DTYPES",
    "SHIFT_VARIABLES",
    "append_frames",
    "create_frame_series",
    "open_series",
    "series_attrs",
    "series_location",
    "smallest_counts_dtype",
    "update_series_attrs",
    "write_shifts",
]
