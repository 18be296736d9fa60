"""Chunk checksums and storage faults: corrupt chunks and full disks become clear StoreErrors.

Every array lowdose writes (FrameSeries, DenoisedSeries, SimulationSet) ends its
zarr v3 codec pipeline with a ``crc32c`` checksum (:func:`checksum_codecs`). A
chunk whose bytes changed on disk then fails its checksum when read, and the
readers here turn zarr's anonymous ``ValueError`` into a
:class:`~lowdose.errors.StoreError` naming the store, the array and the chunk
key — a corrupt chunk is never silently decoded and denoised. Stores written
before checksums were added still open (without the protection).

A write that runs out of space (``ENOSPC``, ``EDQUOT``, or ``EFBIG`` from a
file-size limit) raises :class:`~lowdose.errors.StorageFullError` naming the
store (:func:`storage_full_as_error`). Writers commit data before their commit
markers, so whatever was committed before the failure stays valid and a re-run
resumes once space is freed; :func:`remove_stale_temp_files` clears the temp
files a killed writer leaves behind.

Imports numpy and zarr only (zarr lazily); never dask at module level, never torch.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lowdose.errors import StorageFullError, StoreError

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""errno values meaning the storage (disk, quota, per-file size limit) is full."""

ZARR_TEMP_SUFFIX = ".partial"
"""zarr's local store writes each chunk to ``<key>.<uuid>.partial`` and renames it."""


def checksum_codecs(compressor: Any) -> list[Any]:
    """Return the bytes-to-bytes codecs of a lowdose array: ``compressor`` then crc32c.

    The checksum covers the compressed bytes, so any flipped byte in a chunk file
    is caught before decompression.
    """
    from zarr.codecs import Crc32cCodec

    return [compressor, Crc32cCodec()]


def has_checksum(array: Any) -> bool:
    """Whether a zarr v3 array's codec pipeline ends in a crc32c checksum."""
    codecs = getattr(getattr(array, "metadata", None), "codecs", ())
    return any(type(codec).__name__ == "Crc32cCodec" for codec in codecs)


def _chunk_ranges(array: Any, selection: Any) -> list[range]:
    """Chunk indices, per dimension, touched by a basic (slice/int) selection."""
    if not isinstance(selection, tuple):
        selection = (selection,)
    selection = selection + (slice(None),) * (array.ndim - len(selection))
    ranges = []
    for item, size, chunk in zip(selection, array.shape, array.chunks, strict=False):
        if isinstance(item, slice):
            start, stop, _ = item.indices(size)
            ranges.append(
                range(start // chunk, max(start, stop - 1) // chunk + 1) if stop > start else range(0)
            )
        elif isinstance(item, int | np.integer):
            index = int(item) % size if size else 0
            ranges.append(range(index // chunk, index // chunk + 1))
        else:  # fancy selections: every chunk along that axis is a candidate
            ranges.append(range(-(-size // chunk)))
    return ranges


def corrupt_chunk_keys(array: Any, selection: Any = ()) -> list[str]:
    """Keys of the chunks in ``selection`` whose stored bytes do not decode (checksum, codec)."""
    bad = []
    for coords in itertools.product(*_chunk_ranges(array, selection)):
        try:
            array.blocks[coords]
        except (ValueError, RuntimeError):
            bad.append(str(array.metadata.encode_chunk_key(coords)))
    return bad


def chunk_error(location: str, array: Any, selection: Any, err: BaseException) -> StoreError:
    """A :class:`StoreError` naming the corrupt chunk(s) behind a failed read of ``array``."""
    name = str(array.path or array.name).strip("/")
    keys = corrupt_chunk_keys(array, selection)
    where = ", ".join(f"{name}/{key}" for key in keys[:3]) if keys else f"array '{name}'"
    more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
    why = "checksum mismatch" if "checksum" in str(err).lower() else f"cannot decode ({type(err).__name__})"
    return StoreError(
        f"{location}: corrupt chunk {where}{more}: {why}; restore the store from a copy or re-create it"
    )


def read_checked(array: Any, selection: Any, location: str) -> np.ndarray:
    """``array[selection]``, with a decoding failure raised as a :class:`StoreError` naming the chunk."""
    try:
        return np.asarray(array[selection])
    except (ValueError, RuntimeError) as err:
        raise chunk_error(location, array, selection, err) from None


class CheckedArray:
    """A zarr array seen through :func:`read_checked`: what dask reads lazily, chunk by chunk.

    Picklable (it holds the zarr array and the store's location), so the check also
    runs on Dask workers; a corrupt chunk fails the task with a StoreError.
    """

    def __init__(self, array: Any, location: str) -> None:
        self.array = array
        self.location = location
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(array.chunks)

    def __getitem__(self, selection: Any) -> np.ndarray:
        return read_checked(self.array, selection, self.location)


def lazy_checked(array: Any, location: str, name: str) -> Any:
    """A dask array over ``array`` chunked like the store, every read checked."""
    import dask.array as da

    return da.from_array(
        CheckedArray(array, location),
        chunks=array.chunks,
        name=name,
        asarray=True,
        fancy=False,
        meta=np.empty((0,) * array.ndim, dtype=array.dtype),
    )


@contextmanager
def storage_full_as_error(location: str | os.PathLike[str], what: str = "writing") -> Iterator[None]:
    """Turn a no-space ``OSError`` inside the block into a :class:`StorageFullError` naming the store."""
    try:
        yield
    except OSError as err:
        if err.errno not in NO_SPACE_ERRNOS:
            raise
        reason = os.strerror(err.errno) if err.errno is not None else str(err)
        raise StorageFullError(
            f"{os.fspath(location)}: out of storage while {what} ({reason}); what was committed "
            "before is intact — free space and re-run the same command to resume"
        ) from None


def remove_stale_chunk_temps(array: Any, chunk_coords: tuple[int, ...]) -> None:
    """Delete temp files an earlier, killed write of one chunk left beside it (local stores only).

    Called before a chunk is rewritten (a retried or resumed task), so the finished
    store holds exactly the files of an uninterrupted run.
    """
    root = getattr(array.store, "root", None)
    if not isinstance(root, Path):
        return
    key = Path(root, str(array.path), str(array.metadata.encode_chunk_key(chunk_coords)))
    if key.parent.is_dir():
        for stale in key.parent.glob(f"{key.name}.*{ZARR_TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)


def remove_stale_temp_files(store: str | os.PathLike[str]) -> int:
    """Delete the ``*.partial`` chunk temp files a killed writer left in a local store.

    zarr renames each temp file into place only once it is complete, so these are
    never data; removing them keeps a resumed store identical to an uninterrupted one.
    Returns how many were removed.
    """
    root = Path(store)
    if not root.is_dir():
        return 0
    removed = 0
    for path in root.rglob(f"*{ZARR_TEMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


__all__ = [
    "NO_SPACE_ERRNOS",
    "CheckedArray",
    "checksum_codecs",
    "chunk_error",
    "corrupt_chunk_keys",
    "has_checksum",
    "lazy_checked",
    "read_checked",
    "remove_stale_chunk_temps",
    "remove_stale_temp_files",
    "storage_full_as_error",
]
