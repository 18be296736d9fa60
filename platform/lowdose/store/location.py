"""Store locations: a local path or an fsspec URL (``s3://bucket/run``) behind one small API.

:class:`StorePath` is what the pipeline passes around (and ships to Dask workers,
it pickles) instead of :class:`pathlib.Path`: it joins with ``/``, tests for
existence, lists, reads and writes bytes, and removes, on the local disk or on
any fsspec filesystem. Local paths keep their crash-safe behaviour (write to a
hidden temp file, fsync, rename); on object stores a single object is written
with one PUT, which is all-or-nothing on S3, so no rename is needed.

Endpoint and credentials of remote stores come from the standard environment
variables of the filesystem (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, read by botocore on every
process that opens the store) or from ``storage_options`` (fsspec keyword
arguments, e.g. ``{"endpoint_url": ..., "key": ..., "secret": ...}``), which
travel with the :class:`StorePath` to the workers.

Imports fsspec lazily; never dask, zarr or torch.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lowdose.errors import StoreError


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is an fsspec URL with a scheme (``s3://...``, ``memory://...``)."""
    return "://" in os.fspath(location)


def as_location(value: Any) -> Any:
    """Pydantic pre-validator: URLs stay strings (``Path`` collapses ``//``), the rest become ``Path``."""
    if isinstance(value, StorePath):
        return value.location if value.remote else Path(value.location)
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        return text.rstrip("/") if is_url(text) else Path(text)
    return value


def check_output_folder(out: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Refuse a local output folder that is a file or lies in a zarr store; return it as a Path.

    A command's outputs (reports, checkpoints, tables) go in a folder of their own:
    written inside a SimulationSet or FrameSeries they would mix with its arrays. A
    folder holding ``zarr.json`` (zarr v3) or ``.zgroup``/``.zarray`` (v2), at ``out``
    or above it, is a store.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise StoreError(f"{flag} {out}: exists and is not a folder; choose a folder for the outputs")
    resolved = path.resolve()
    for folder in (resolved, *resolved.parents):
        if any((folder / marker).is_file() for marker in ("zarr.json", ".zgroup", ".zarray")):
            where = "is the zarr store" if folder == resolved else f"lies inside the zarr store {folder}"
            raise StoreError(f"{flag} {out}: {where}; the outputs go in a folder of their own")
    check_creatable(path, flag)
    return path


def check_creatable(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """Refuse a local path whose nearest existing folder is a file or cannot be written."""
    resolved = Path(path).resolve()
    existing = next(folder for folder in (resolved, *resolved.parents) if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"{flag} {path}: cannot write there ({existing} is not a writable folder)")


@dataclass(frozen=True)
class StorePath:
    """A local path or an fsspec URL, with the fsspec options that reach it."""

    location: str
    storage_options: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def of(
        cls, location: str | os.PathLike[str] | StorePath, storage_options: Mapping[str, Any] | None = None
    ) -> StorePath:
        """Wrap a path, URL or :class:`StorePath` (its options win over ``storage_options``)."""
        if isinstance(location, StorePath):
            return location
        text = os.fspath(location)
        if is_url(text):
            return cls(text.rstrip("/"), dict(storage_options or {}))
        return cls(str(Path(text)), {})

    @property
    def remote(self) -> bool:
        """Whether this is a URL rather than a local path."""
        return is_url(self.location)

    @property
    def path(self) -> Path:
        """The local :class:`~pathlib.Path` (an error for URLs)."""
        if self.remote:
            raise StoreError(f"{self.location}: a local path is needed here, not a URL")
        return Path(self.location)

    def native(self) -> Path | str:
        """``Path`` for local locations, the URL string for remote ones."""
        return self.location if self.remote else Path(self.location)

    @property
    def name(self) -> str:
        """Last component."""
        return posixpath.basename(self.location) if self.remote else Path(self.location).name

    @property
    def parent(self) -> StorePath:
        """The enclosing folder (or prefix)."""
        if self.remote:
            return StorePath(posixpath.dirname(self.location), self.storage_options)
        return StorePath(str(Path(self.location).parent))

    def __truediv__(self, part: str) -> StorePath:
        if self.remote:
            return StorePath(posixpath.join(self.location, part), self.storage_options)
        return StorePath(str(Path(self.location) / part))

    def with_name(self, name: str) -> StorePath:
        """The sibling called ``name``."""
        return self.parent / name

    def __str__(self) -> str:
        return self.location

    def resolved(self) -> str:
        """An absolute, comparable text form (URLs as given)."""
        return self.location if self.remote else str(Path(self.location).resolve())

    def filesystem(self) -> tuple[Any, str]:
        """``(fsspec filesystem, path within it)``."""
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(self.location, **dict(self.storage_options))
        except (ImportError, ValueError) as err:
            raise StoreError(f"{self.location}: cannot open this location ({err})") from None
        return fs, path

    def _fresh(self) -> tuple[Any, str]:
        # Other processes (the workers) write here: never answer from a cached listing.
        fs, path = self.filesystem()
        fs.invalidate_cache(path)
        return fs, path

    def zarr_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``zarr.open_*`` (``storage_options`` only for URLs)."""
        return {"storage_options": dict(self.storage_options)} if self.remote and self.storage_options else {}

    def pandas_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``pandas.read_parquet``."""
        return self.zarr_kwargs()

    def exists(self) -> bool:
        """Whether a file, folder or prefix exists here."""
        if not self.remote:
            return Path(self.location).exists()
        fs, path = self._fresh()
        return bool(fs.exists(path))

    def is_file(self) -> bool:
        """Whether a file (object) exists here."""
        if not self.remote:
            return Path(self.location).is_file()
        fs, path = self._fresh()
        return bool(fs.isfile(path))

    def glob(self, pattern: str) -> list[StorePath]:
        """Entries of this folder matching ``pattern`` (sorted)."""
        if not self.remote:
            return [StorePath(str(p)) for p in sorted(Path(self.location).glob(pattern))]
        fs, path = self._fresh()
        found = sorted(fs.glob(posixpath.join(path, pattern)))
        return [StorePath(fs.unstrip_protocol(p), self.storage_options) for p in found]

    def open(self, mode: str = "rb") -> IO[Any]:
        """Open as a file (local: the built-in ``open``)."""
        if not self.remote:
            return open(self.location, mode)
        fs, path = self.filesystem()
        handle: IO[Any] = fs.open(path, mode)
        return handle

    def read_bytes(self) -> bytes:
        """The whole file; :class:`FileNotFoundError` when missing."""
        if not self.remote:
            return Path(self.location).read_bytes()
        fs, path = self.filesystem()
        data: bytes = fs.cat_file(path)
        return data

    def read_text(self) -> str:
        """The whole file as UTF-8 text."""
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """Write the file so that readers see the old or the new content, never a torn one.

        Local: hidden temp file, fsync, rename. Remote: one PUT of the whole object.
        """
        if self.remote:
            fs, path = self.filesystem()
            fs.pipe_file(path, data)
            return
        target = Path(self.location)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    def mkdir(self) -> None:
        """Create the folder (and parents); a no-op on object stores, which have no folders."""
        if not self.remote:
            Path(self.location).mkdir(parents=True, exist_ok=True)

    def unlink(self, missing_ok: bool = True) -> None:
        """Remove one file."""
        if not self.remote:
            Path(self.location).unlink(missing_ok=missing_ok)
            return
        fs, path = self.filesystem()
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        """Remove a folder (or every object under the prefix); nothing when missing."""
        if not self.remote:
            if Path(self.location).exists():
                shutil.rmtree(self.location)
            return
        fs, path = self.filesystem()
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.invalidate_cache(path)


__all__ = ["StorePath", "as_location", "is_url"]
