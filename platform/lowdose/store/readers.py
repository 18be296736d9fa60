"""Frame-batch readers for the file formats microscopes write.

Each reader opens one input file cheaply (headers only), reports its frame count,
frame shape, dtype and the metadata the file carries (pixel size, frame rate,
exposure), and reads ``[start, stop)`` frame batches on demand, so that ingest
memory stays bounded by one batch whatever the file size. Every failure of the
underlying library becomes a one-line :class:`~lowdose.errors.FormatError` naming
the file and, where known, the frame. Geometry is checked before any frame is
read: no frames, empty frames, frames over :data:`MAX_FRAME_PIXELS`, compressed
TIFF/HDF5 images claiming over :data:`MAX_EXPANSION` times the bytes they store,
and HDF5 datasets whose data lives in other files (virtual/external) are refused.

Formats: TIFF (multi-page, ImageJ, tifffile-shaped; tifffile), MRC (mrcfile),
HDF5 datasets (h5py), NumPy ``.npy`` (memory-mapped), DM3/DM4, EMD and HSPY
(rosettasciio, lazy), and FEI/TIA SER image series (:mod:`lowdose.store.ser`).
Imports numpy and the format libraries (lazily); never dask directly, never torch.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lowdose.errors import FormatError

TIFF_SUFFIXES = (".tif", ".tiff")
RSCIIO_PLUGINS = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".emd": "emd"}
HSPY_SUFFIXES = (".hspy",)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")
MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".ali")
LENGTH_TO_A = {
    "a": 1.0,
    "å": 1.0,
    "angstrom": 1.0,
    "nm": 10.0,
    "pm": 0.01,
    "um": 1e4,
    "µm": 1e4,
    "micron": 1e4,
}
TIME_TO_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
MAX_FRAME_PIXELS = 1 << 28
"""Largest frame accepted (16384²; the largest detectors record ~11520 × 8184): a header
claiming more is refused before anything is allocated."""
MAX_EXPANSION = 10_000
"""Largest ratio of the bytes a compressed TIFF/HDF5 image claims to the bytes it stores:
more means absurd dimensions or unwritten chunks (a decompression bomb), and is refused."""


@dataclass
class FrameSource:
    """One input file opened for frame-batch reading.

    Attributes
    ----------
    path
        The file.
    format
        Short format name (``tiff``, ``mrc``, ...).
    n_frames, frame_shape, dtype
        Geometry of the frames the file holds.
    metadata
        What the file says about ``pixel_size_A``, ``frame_rate_hz``, ``exposure_s``
        (only keys that are present).
    dataset
        Internal dataset path (HDF5) or None.
    """

    path: Path
    format: str
    n_frames: int
    frame_shape: tuple[int, int]
    dtype: np.dtype[Any]
    metadata: dict[str, float] = field(default_factory=dict)
    dataset: str | None = None

    def __post_init__(self) -> None:
        """Refuse empty or absurdly large geometry before any frame is read."""
        if self.n_frames < 1:
            raise self.fail(f"holds no frames (shape {(self.n_frames, *self.frame_shape)})")
        ny, nx = self.frame_shape
        if ny < 1 or nx < 1:
            raise self.fail(f"frame shape {self.frame_shape}; expected two positive sizes (y, x)")
        if ny * nx > MAX_FRAME_PIXELS:
            raise self.fail(
                f"frame shape {self.frame_shape} ({ny * nx} pixels) exceeds the {MAX_FRAME_PIXELS} "
                "pixels lowdose accepts per frame; the header is corrupt or not a frame series"
            )

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return frames ``[start, stop)`` as a ``(stop - start, y, x)`` array."""
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles."""

    @property
    def label(self) -> str:
        """The file (and dataset) for error messages."""
        return f"{self.path}:{self.dataset}" if self.dataset else str(self.path)

    def fail(self, what: str, frame: int | None = None) -> FormatError:
        """Build a FormatError naming this file (and frame)."""
        where = f" frame {frame}:" if frame is not None else ""
        return FormatError(f"{self.label}:{where} {what}")


@contextmanager
def library_errors(source_label: str, fmt: str, frame: int | None = None) -> Iterator[None]:
    """Turn any failure (and logged error or warning) of a format library into FormatError."""
    records: list[logging.LogRecord] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Collect(level=logging.ERROR)
    tiff_logger = logging.getLogger("tifffile")
    tiff_logger.addHandler(handler)
    where = f" frame {frame}:" if frame is not None else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            yield
    except FormatError:
        raise
    except Exception as err:  # third-party readers raise anything on corrupt bytes
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FormatError(f"{source_label}:{where} not a readable {fmt} file ({message})") from None
    finally:
        tiff_logger.removeHandler(handler)
    if records:
        message = records[0].getMessage().splitlines()[0]
        raise FormatError(f"{source_label}:{where} corrupt or truncated {fmt} file ({message})")


def _as_frames(array: np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(array).reshape((-1, *frame_shape))


def _length_A(value: float, unit: str | None) -> float | None:
    factor = LENGTH_TO_A.get((unit or "").strip().lower().replace("\\u00c5", "å"))
    if factor is None or not (value and math.isfinite(value) and value > 0):
        return None
    return float(value) * factor


def _colour_tiff_message(path: Path, series: Any, where: str = "TIFF holds") -> str:
    """Why a TIFF series with several samples per pixel (RGB, RGBA, …) is refused, and what to do."""
    page = series.keyframe
    samples = int(page.samplesperpixel)
    layout = "planar" if int(page.planarconfig) == 2 else "interleaved"
    photometric = getattr(page.photometric, "name", str(page.photometric))
    pages = len(series)
    dtype = np.dtype(page.dtype).name
    return (
        f"{path}: {where} {pages} page{'s' if pages != 1 else ''} with {samples} samples per pixel "
        f"({photometric}, {layout}, {dtype}): a colour image, not grey count frames; tifffile.imwrite "
        f"stores a stack of 3 or 4 frames this way unless told otherwise — write a frame stack "
        f"with tifffile.imwrite(path, frames, photometric='minisblack') or save the frames as separate "
        f"grey pages"
    )


class TiffSource(FrameSource):
    """Multi-page TIFF: every 2-D page of the file's series is one frame, read page-wise."""

    def __init__(self, path: Path) -> None:
        import tifffile

        self._file: Any = None
        self._raw: list[int] | None = None
        self._raw_dtype = np.dtype("uint8")
        with library_errors(str(path), "TIFF"):
            self._tif: Any = tifffile.TiffFile(path)
            series = list(self._tif.series)
            if not series:
                raise FormatError(f"{path}: TIFF holds no images")
            first = series[0]
            if "S" in first.axes:
                raise FormatError(_colour_tiff_message(path, first))
            if first.axes[-2:] != "YX":
                raise FormatError(f"{path}: TIFF series has axes {first.axes}; expected grey frames (…YX)")
            frame_shape = (int(first.shape[-2]), int(first.shape[-1]))
            self._parts: list[tuple[Any, int]] = []
            for index, part in enumerate(series):
                shape = (int(part.shape[-2]), int(part.shape[-1]))
                frames_before = sum(n for _, n in self._parts)
                if "S" in part.axes:  # RGB planes must not pass as frames
                    raise FormatError(
                        _colour_tiff_message(
                            path, part, f"TIFF series {index} (after frame {frames_before}) has"
                        )
                    )
                if shape != frame_shape or part.axes[-2:] != "YX":
                    raise FormatError(
                        f"{path}: page {frames_before} has frame shape {shape}; expected {frame_shape} "
                        f"like page 0 (series {index})"
                    )
                if part.dtype != first.dtype:
                    raise FormatError(
                        f"{path}: page {frames_before} has dtype {part.dtype}; expected {first.dtype}"
                    )
                self._parts.append((part, int(np.prod(part.shape[:-2], dtype=np.int64))))
            self._check_extent(path)
            self._raw = self._raw_layout(first.dtype)
            metadata = self._metadata()
            self._tif.close()  # reopened by read(): a folder of 10^5 TIFFs must not hold 10^5 handles
            self._tif = None
        super().__init__(
            path=path,
            format="tiff",
            n_frames=sum(n for _, n in self._parts),
            frame_shape=frame_shape,
            dtype=np.dtype(first.dtype),
            metadata=metadata,
        )

    def _check_extent(self, path: Path) -> None:
        """Refuse files whose image data would run past the end of the file (truncation)."""
        size = path.stat().st_size
        for part, n in self._parts:
            offset = part.dataoffset
            if offset is not None:
                end = int(offset) + int(part.nbytes)
            else:
                end = 0
                for page in part.pages:
                    if page is None:
                        continue
                    offsets = getattr(page, "dataoffsets", ())
                    counts = getattr(page, "databytecounts", ())
                    if offsets and counts:
                        end = max(end, int(offsets[-1]) + int(counts[-1]))
            if end > size:
                raise FormatError(
                    f"{path}: truncated TIFF: image data of {n} frames needs {end} bytes, file has {size}"
                )
            if offset is None:
                stored = sum(
                    sum(int(c) for c in getattr(page, "databytecounts", ()))
                    for page in part.pages
                    if page is not None
                )
                if int(part.nbytes) > MAX_EXPANSION * max(stored, 1):
                    raise FormatError(
                        f"{path}: TIFF images claim {int(part.nbytes)} bytes but store {stored} "
                        f"(more than {MAX_EXPANSION}× expansion); corrupt or absurd dimensions"
                    )

    def _raw_layout(self, dtype: Any) -> list[int] | None:
        """File offsets of each series' frames when every series is stored raw, else None.

        Raw means uncompressed, unpredicted, in final byte layout and contiguous
        (tifffile's ``dataoffset``): frame ``i`` of a series then starts at
        ``offset + i * frame_bytes`` and a batch is a view of a memory map instead of a
        parse-and-decode per page (≈ 0.35 ms per page for 512² frames).
        """
        # Walk the whole IFD chain (≈ 7 µs per page): a file cut after its image data
        # but before its last page headers is truncated, and tifffile logs that as an
        # error, which the caller's library_errors turns into a FormatError.
        len(self._tif.pages)
        offsets = []
        for part, _ in self._parts:
            offset = part.dataoffset
            if offset is None or part.dtype != dtype:
                return None
            offsets.append(int(offset))
        self._raw_dtype = np.dtype(dtype).newbyteorder(self._tif.byteorder)
        return offsets

    def _metadata(self) -> dict[str, float]:
        found: dict[str, float] = {}
        tif = self._tif
        shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else {}
        for key in ("pixel_size_A", "frame_rate_hz", "exposure_s"):
            if isinstance(shaped.get(key), int | float):
                found[key] = float(shaped[key])
        ij = tif.imagej_metadata or {}
        if ij.get("finterval") and "frame_rate_hz" not in found:
            found["frame_rate_hz"] = 1.0 / float(ij["finterval"])
        page = tif.pages.first
        resolution = page.tags.get("XResolution")
        if resolution is not None and "pixel_size_A" not in found and ij.get("unit"):
            numerator, denominator = resolution.value
            if numerator:
                pixel = _length_A(denominator / numerator, str(ij["unit"]))
                if pixel is not None:
                    found["pixel_size_A"] = pixel
        return found

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return frames ``[start, stop)``, decoding only the pages needed."""
        if self._raw is not None:
            return self._read_raw(start, stop)
        import tifffile

        pieces = []
        offset = 0
        for index, (_, n) in enumerate(self._parts):
            lo, hi = max(start - offset, 0), min(stop - offset, n)
            if lo < hi:
                with library_errors(str(self.path), "TIFF", frame=start):
                    if self._tif is None:
                        self._tif = tifffile.TiffFile(self.path)
                    data = self._tif.asarray(key=range(lo, hi), series=index)
                pieces.append(_as_frames(data, self.frame_shape))
            offset += n
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` of raw series, as views of a read-only memory map.

        A batch inside one series is a view of the file's pages in the page cache: no
        copy and no fresh zeroed buffer (together ≈ 0.4 CPU-s per GB, more than the
        sha256 of the same bytes). Each batch maps only its own byte range and the map
        is unmapped when the batch's last view is gone, so batches handed to a writer
        thread stay valid after :meth:`close` and the mapped pages (which count in
        RSS) are bounded by the batches in flight. The file's size is checked before
        each batch: a file cut short since it was opened is a FormatError, not a SIGBUS.
        """
        assert self._raw is not None
        frame_bytes = self.frame_shape[0] * self.frame_shape[1] * self._raw_dtype.itemsize
        if self._file is None:
            self._file = self.path.open("rb", buffering=0)
        size = os.fstat(self._file.fileno()).st_size
        pieces = []
        first = 0
        for offset, (_, n) in zip(self._raw, self._parts, strict=True):
            lo, hi = max(start - first, 0), min(stop - first, n)
            if lo < hi:
                begin = offset + lo * frame_bytes
                end = offset + hi * frame_bytes
                if end > size:
                    frame = first + lo + max(0, size - begin) // frame_bytes
                    raise self.fail("truncated TIFF: the file ends inside the image data", frame)
                aligned = begin - begin % mmap.ALLOCATIONGRANULARITY
                mapped = mmap.mmap(
                    self._file.fileno(), end - aligned, offset=aligned, access=mmap.ACCESS_READ
                )
                _read_ahead(mapped, self._file.fileno(), end, end - begin)
                data = np.frombuffer(
                    mapped,
                    dtype=self._raw_dtype,
                    count=(end - begin) // self._raw_dtype.itemsize,
                    offset=begin - aligned,
                )
                pieces.append(data.reshape(hi - lo, *self.frame_shape))
            first += n
        out = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        return out if self._raw_dtype.isnative else out.astype(self._raw_dtype.newbyteorder("="))

    def close(self) -> None:
        """Close the TIFF file (a later read reopens it; batches already read stay valid)."""
        if self._tif is not None:
            self._tif.close()
            self._tif = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _read_ahead(mapped: mmap.mmap, fd: int, next_offset: int, length: int) -> None:
    """Ask the kernel to read a mapped batch, and the bytes after it, from disk ahead of use.

    A memory map otherwise reads a cold file in small synchronous page faults; with the
    whole batch (and the next one) requested up front the disk streams while the
    previous batch is compressed. Advice only: ignored where unsupported.
    """
    with suppress(AttributeError, OSError, ValueError):
        mapped.madvise(mmap.MADV_WILLNEED)
    with suppress(AttributeError, OSError):
        os.posix_fadvise(fd, next_offset, length, os.POSIX_FADV_WILLNEED)


class MrcSource(FrameSource):
    """MRC stack, memory-mapped per batch (the mapping is dropped after each read)."""

    def __init__(self, path: Path) -> None:
        import mrcfile

        with library_errors(str(path), "MRC"), mrcfile.mmap(path, mode="r") as mrc:
            data = mrc.data
            if data is None or data.ndim not in (2, 3):
                raise FormatError(
                    f"{path}: MRC data has shape {getattr(data, 'shape', None)}; expected frames"
                )
            shape = data.shape if data.ndim == 3 else (1, *data.shape)
            metadata: dict[str, float] = {}
            voxel_x = float(mrc.voxel_size.x)
            if voxel_x > 0:
                metadata["pixel_size_A"] = voxel_x
            dtype = np.dtype(data.dtype)
        super().__init__(path, "mrc", int(shape[0]), (int(shape[1]), int(shape[2])), dtype, metadata)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return frames ``[start, stop)``."""
        import mrcfile

        with library_errors(str(self.path), "MRC", frame=start), mrcfile.mmap(self.path, mode="r") as mrc:
            data = mrc.data
            frames = data[start:stop] if data.ndim == 3 else data[None][start:stop]
            return np.array(frames, dtype=frames.dtype.newbyteorder("="))


class NpySource(FrameSource):
    """NumPy ``.npy`` file, memory-mapped per batch."""

    def __init__(self, path: Path) -> None:
        with library_errors(str(path), "NumPy .npy"):
            data = np.load(path, mmap_mode="r", allow_pickle=False)
            if data.ndim not in (2, 3):
                raise FormatError(f"{path}: array has shape {data.shape}; expected (frame, y, x) or (y, x)")
            shape = data.shape if data.ndim == 3 else (1, *data.shape)
            dtype = np.dtype(data.dtype)
            del data
        super().__init__(path, "npy", int(shape[0]), (int(shape[1]), int(shape[2])), dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return frames ``[start, stop)``."""
        with library_errors(str(self.path), "NumPy .npy", frame=start):
            data = np.load(self.path, mmap_mode="r", allow_pickle=False)
            frames = data[start:stop] if data.ndim == 3 else data[None][start:stop]
            return np.array(frames)


class Hdf5Source(FrameSource):
    """One dataset of an HDF5 file, read by slicing (h5py streams the hyperslab)."""

    def __init__(self, path: Path, dataset: str | None) -> None:
        import h5py

        with library_errors(str(path), "HDF5"):
            self._file: Any = h5py.File(path, "r")
            name = dataset or self._only_stack(path)
            if name not in self._file or not isinstance(self._file[name], h5py.Dataset):
                raise FormatError(f"{path}: no dataset {name!r}; pass file.h5:/path/to/dataset")
            self._data = self._file[name]
            if self._data.ndim not in (2, 3):
                raise FormatError(f"{path}:{name}: dataset has shape {self._data.shape}; expected frames")
            if self._data.is_virtual or self._data.external:
                raise FormatError(
                    f"{path}:{name}: dataset reads its data from other files (virtual or external "
                    "storage); lowdose ingests only data stored inside the file"
                )
            claimed = math.prod(self._data.shape) * self._data.dtype.itemsize
            stored = int(self._data.id.get_storage_size())
            if claimed > MAX_EXPANSION * max(stored, 1):
                raise FormatError(
                    f"{path}:{name}: dataset of shape {self._data.shape} claims {claimed} bytes but stores "
                    f"{stored} (more than {MAX_EXPANSION}× expansion); absurd dimensions or unwritten chunks"
                )
            shape = self._data.shape if self._data.ndim == 3 else (1, *self._data.shape)
            metadata = {
                key: float(self._data.attrs[key])
                for key in ("pixel_size_A", "frame_rate_hz", "exposure_s")
                if key in self._data.attrs
            }
        super().__init__(
            path,
            "hdf5",
            int(shape[0]),
            (int(shape[1]), int(shape[2])),
            np.dtype(self._data.dtype),
            metadata,
            name,
        )

    def _only_stack(self, path: Path) -> str:
        import h5py

        stacks: list[str] = []
        self._file.visititems(
            lambda name, obj: stacks.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None
        )
        if len(stacks) != 1:
            raise FormatError(
                f"{path}: found {len(stacks)} 3-D datasets {stacks[:5]}; name one as file.h5:/path/to/dataset"
            )
        return "/" + stacks[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return frames ``[start, stop)`` (reopens the file after :meth:`close`)."""
        import h5py

        with library_errors(self.label, "HDF5", frame=start):
            if self._file is None:
                self._file = h5py.File(self.path, "r")
                self._data = self._file[self.dataset]
            if self._data.ndim == 2:
                return np.asarray(self._data[()])[None][start:stop]
            return np.asarray(self._data[start:stop])

    def close(self) -> None:
        """Close the HDF5 file (a later read reopens it)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def check_hdf5_datasets(path: Path) -> None:
    """Refuse an HDF5-based file (EMD, HSPY) before a library lays out lazy arrays over it.

    Every dataset of 2+ dimensions must store its data inside the file (no virtual or
    external storage) and claim at most :data:`MAX_EXPANSION` times the bytes it stores:
    rosettasciio would otherwise spend minutes and gigabytes building the dask graph of
    a header that claims 10^7 frames.
    """
    import h5py

    problems: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset) or obj.ndim < 2 or problems:
            return
        if obj.is_virtual or obj.external:
            problems.append(f"dataset /{name} reads its data from other files (virtual or external storage)")
            return
        claimed = math.prod(obj.shape) * obj.dtype.itemsize
        stored = int(obj.id.get_storage_size())
        if claimed > MAX_EXPANSION * max(stored, 1):
            problems.append(
                f"dataset /{name} of shape {obj.shape} claims {claimed} bytes but stores {stored} "
                f"(more than {MAX_EXPANSION}× expansion); absurd dimensions or unwritten chunks"
            )

    with library_errors(str(path), "HDF5"), h5py.File(path, "r") as handle:
        handle.visititems(visit)
    if problems:
        raise FormatError(f"{path}: {problems[0]}")


class RsciioSource(FrameSource):
    """DM3/DM4, EMD, SER and HSPY through rosettasciio, read lazily (dask) batch by batch."""

    def __init__(self, path: Path, plugin: str) -> None:
        import importlib

        if plugin in ("emd", "hspy"):
            check_hdf5_datasets(path)
        with library_errors(str(path), plugin):
            reader = importlib.import_module(f"rsciio.{plugin}").file_reader
            signals = reader(str(path), lazy=True)
            stacks = [s for s in signals if getattr(s.get("data"), "ndim", 0) in (2, 3)]
            if not stacks:
                raise FormatError(f"{path}: no 2-D or 3-D image signal found")
            signal = max(stacks, key=lambda s: s["data"].ndim)
            self._data = signal["data"]
            shape = self._data.shape if self._data.ndim == 3 else (1, *self._data.shape)
            metadata = self._metadata(signal)
        super().__init__(
            path, plugin, int(shape[0]), (int(shape[1]), int(shape[2])), np.dtype(self._data.dtype), metadata
        )

    @staticmethod
    def _metadata(signal: dict[str, Any]) -> dict[str, float]:
        found: dict[str, float] = {}
        axes = signal.get("axes", [])
        if axes:
            pixel = _length_A(float(axes[-1].get("scale", 0) or 0), str(axes[-1].get("units", "")))
            if pixel is not None:
                found["pixel_size_A"] = pixel
        if len(axes) == 3:
            factor = TIME_TO_S.get(str(axes[0].get("units", "")).strip().lower())
            scale = float(axes[0].get("scale", 0) or 0)
            if factor and scale > 0:
                found["frame_rate_hz"] = 1.0 / (scale * factor)
        detector = (
            signal.get("metadata", {}).get("Acquisition_instrument", {}).get("TEM", {}).get("Detector", {})
        )
        exposure = detector.get("Camera", {}).get("exposure") if isinstance(detector, dict) else None
        if isinstance(exposure, int | float) and exposure > 0:
            found["exposure_s"] = float(exposure)
        return found

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return frames ``[start, stop)`` (computes only that slice of the lazy array)."""
        with library_errors(str(self.path), self.format, frame=start):
            data = self._data if self._data.ndim == 3 else self._data[None]
            return np.asarray(data[start:stop].compute(scheduler="synchronous"))


def split_dataset(spec: str) -> tuple[Path, str | None]:
    """Split ``file.h5:/path/to/dataset`` into the file and the dataset path."""
    head, sep, tail = spec.rpartition(":/")
    if sep and Path(head).suffix.lower() in HDF5_SUFFIXES:
        return Path(head), "/" + tail
    return Path(spec), None


def open_source(spec: str | Path, *, h5_dataset: str | None = None) -> FrameSource:
    """Open one input file for batch reading, choosing the reader from its suffix.

    Raises
    ------
    FormatError
        Missing file, unknown suffix, or a file the reader cannot interpret.
    """
    path, dataset = split_dataset(str(spec))
    dataset = dataset or h5_dataset
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return TiffSource(path)
    if suffix in MRC_SUFFIXES:
        return MrcSource(path)
    if suffix == ".npy":
        return NpySource(path)
    if suffix in HDF5_SUFFIXES:
        return Hdf5Source(path, dataset)
    if suffix in HSPY_SUFFIXES:
        return RsciioSource(path, "hspy")
    if suffix == ".ser":
        from lowdose.store.ser import SerSource

        return SerSource(path)
    if suffix in RSCIIO_PLUGINS:
        return RsciioSource(path, RSCIIO_PLUGINS[suffix])
    known = sorted(
        {*TIFF_SUFFIXES, *MRC_SUFFIXES, ".npy", ".ser", *HDF5_SUFFIXES, *HSPY_SUFFIXES, *RSCIIO_PLUGINS}
    )
    raise FormatError(f"{path}: unknown format {suffix or '(no suffix)'!r}; expected one of {known}")


def expand_inputs(inputs: list[str | Path]) -> list[str]:
    """Expand folders into their TIFF files (sorted by name, numbers compared as numbers)."""
    import re

    def natural(path: Path) -> list[Any]:
        return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]

    expanded: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES), key=natural)
            if not files:
                raise FormatError(f"{path}: folder holds no .tif/.tiff files")
            expanded.extend(str(p) for p in files)
        else:
            expanded.append(str(item))
    return expanded
