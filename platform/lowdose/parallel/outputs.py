"""The pipeline's output folder: crash-safe writes, completion markers, manifests.

Layout of ``OUT/`` (the dashboard and catalog rely on these names)::

    OUT/denoised.zarr/          DenoisedSeries (zarr v3), written one frame chunk at a time
    OUT/columns.parquet         ColumnTable (one row group per frame chunk)
    OUT/frames.parquet          FrameTable (one row group per frame chunk)
    OUT/columns_avg{n}.parquet, OUT/frames_avg{n}.parquet   time-averaged analysis
    OUT/_parts/<table>/         one Parquet part per finished frame chunk
    OUT/_progress/<stage>/      manifest.json + one marker per finished chunk

``OUT`` may be a local folder or an fsspec URL (``s3://bucket/run``, see
:mod:`lowdose.store.location`); the workers write their chunks, parts and
markers there directly. Locally every file is written to a dot-prefixed temp
name and renamed into place; on an object store every file is one PUT, which is
all-or-nothing. A chunk's marker is written only after all its data is in place, so a killed run
is resumed by redoing exactly the chunks without a marker. The single-file
tables are assembled from the parts (streamed, one row group per part) once every
chunk of the stage is done, so they always hold every frame exactly once. A
manifest records what a stage's outputs were computed from; re-running into a
folder made from different inputs is refused.

The DenoisedSeries' chunks end in a crc32c checksum and are read through
:mod:`lowdose.store.integrity` (a corrupt chunk is a StoreError naming it); a chunk
write that runs out of space raises :class:`~lowdose.errors.StorageFullError`.

Imports numpy, pandas, zarr, xarray and fsspec; never torch.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from lowdose.errors import LowdoseInputError, StoreError
from lowdose.store.integrity import (
    checksum_codecs,
    lazy_checked,
    read_checked,
    remove_stale_chunk_temps,
    storage_full_as_error,
)
from lowdose.store.location import StorePath

Where = str | os.PathLike[str] | StorePath
"""A local path, an fsspec URL, or a :class:`~lowdose.store.location.StorePath`."""

DENOISED_NAME = "denoised.zarr"
COLUMNS_NAME = "columns.parquet"
FRAMES_NAME = "frames.parquet"
PROGRESS_NAME = "_progress"
PARTS_NAME = "_parts"
RUN_NAMES = (DENOISED_NAME, COLUMNS_NAME, FRAMES_NAME, PARTS_NAME, PROGRESS_NAME)
"""Fixed names a run writes in OUT (besides ``columns_avgN``/``frames_avgN`` tables)."""
DENOISED_CNAME: Literal["lz4"] = "lz4"
"""Blosc compressor of the DenoisedSeries. Denoised float32 frames are smooth but keep
their low mantissa bits, so nothing compresses them much: on 512² frames of the default
model, Blosc-lz4 (level 5, bit-shuffle) stores 1.52× smaller at 1.8 ms of CPU per frame,
Blosc-zstd (level 3, byte-shuffle) 1.62× at 4.2 ms — the write was a tenth of the
pipeline's per-frame CPU (docs/performance.md)."""


def table_name(table: str, average_frames: int | None = None) -> str:
    """File name of a table (``columns``/``frames``), per frame or averaged over ``n`` frames."""
    return f"{table}.parquet" if not average_frames else f"{table}_avg{average_frames}.parquet"


def run_outputs(out: Where) -> list[StorePath]:
    """What a pipeline run wrote into ``out`` (the layout above), as found there now.

    This, and only this, is what ``--overwrite`` deletes: a catalog and any other file in
    the folder are the user's and stay.
    """
    from lowdose.store.catalog import averaged_table_frames  # the catalog registers the same tables

    folder = StorePath.of(out)
    found = [folder / name for name in RUN_NAMES if (folder / name).exists()]
    for table in ("columns", "frames"):
        averaged = folder.glob(f"{table}_avg*.parquet")
        found += [p for p in averaged if averaged_table_frames(p.name, table) is not None]
    return found


def remove_run_outputs(out: Where) -> list[StorePath]:
    """Delete :func:`run_outputs` of ``out`` (the tables before the stores); return what was removed."""
    removed = run_outputs(out)
    for path in sorted(removed, key=lambda p: not p.name.endswith(".parquet")):
        if path.is_file():
            path.unlink()
        else:
            path.rmtree()
    return removed


def parts_dir(out: Where, table: str, average_frames: int | None = None) -> StorePath:
    """Folder of a table's per-chunk parts."""
    return StorePath.of(out) / PARTS_NAME / table_name(table, average_frames).removesuffix(".parquet")


def write_parquet_atomic(frame: pd.DataFrame, path: Where) -> None:
    """Write ``frame`` as one Parquet file (local: hidden temp file + rename; remote: one PUT)."""
    target = StorePath.of(path)
    if target.remote:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False, engine="pyarrow")
        target.write_bytes(buffer.getvalue())
        return
    local = target.path
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False, engine="pyarrow")
    os.replace(tmp, local)


def part_name(chunk: int) -> str:
    """File name of chunk ``chunk``'s part in a table folder."""
    return f"part-{chunk:06d}.parquet"


class Progress:
    """Markers and manifest of one stage (``denoise``, ``analyze``, ``avg40``...) in ``OUT``."""

    def __init__(self, out: Where, stage: str) -> None:
        self.folder = StorePath.of(out) / PROGRESS_NAME / stage
        self.stage = stage

    def marker(self, chunk: int) -> StorePath:
        """Path of chunk ``chunk``'s completion marker."""
        return self.folder / f"chunk-{chunk:06d}.done"

    def is_done(self, chunk: int) -> bool:
        """Whether chunk ``chunk`` finished in an earlier (or this) run."""
        return self.marker(chunk).exists()

    def mark_done(self, chunk: int, summary: Mapping[str, Any]) -> None:
        """Record chunk ``chunk`` as finished; call only after its data is in place."""
        self.marker(chunk).write_bytes(json.dumps(dict(summary), sort_keys=True).encode())

    def done_chunks(self) -> set[int]:
        """Indices of all finished chunks."""
        return {int(p.name.removesuffix(".done").split("-")[1]) for p in self.folder.glob("chunk-*.done")}

    @property
    def manifest_path(self) -> StorePath:
        """Where the stage's manifest lives."""
        return self.folder / "manifest.json"

    def manifest(self) -> dict[str, Any] | None:
        """The stage's manifest, or ``None`` when the stage never started."""
        try:
            return dict(json.loads(self.manifest_path.read_text()))
        except FileNotFoundError:
            return None

    def check_or_start(self, manifest: Mapping[str, Any], out: Where) -> bool:
        """Compare with an existing manifest or start the stage afresh.

        Returns ``True`` when the stage is resumed, ``False`` when it starts
        from nothing (stale markers are removed first).

        Raises
        ------
        LowdoseInputError
            If ``out`` holds this stage from a run with different inputs.
        """
        wanted = json.loads(json.dumps(dict(manifest), sort_keys=True, default=str))
        found = self.manifest()
        if found is not None:
            differs = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
            if differs:
                raise LowdoseInputError(
                    f"{out}: holds '{self.stage}' outputs of a different run ({', '.join(differs)} differ); "
                    "use a new --out folder or --overwrite"
                )
            return True
        self.folder.rmtree()
        return False

    def commit_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Write the manifest once the stage's outputs are initialised."""
        text = json.dumps(dict(manifest), sort_keys=True, indent=1, default=str)
        self.manifest_path.write_bytes(text.encode())


def create_denoised_store(
    path: Where,
    *,
    n_frames: int,
    frame_shape: tuple[int, int],
    chunk_frames: int,
    dtype: str,
    time_s: np.ndarray,
    attrs: Mapping[str, Any],
) -> None:
    """Create an empty DenoisedSeries zarr group (arrays sized, coords written, no data).

    Locally written under a temp name and renamed, so ``path`` either does not
    exist or is complete; on an object store (no rename) it is written in place
    and the caller's manifest, committed afterwards, marks it complete. Chunks
    are whole frames, ``chunk_frames`` per chunk, so each pipeline task writes
    exactly its own chunk files.
    """
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    from lowdose import __version__
    from lowdose.store.schema import DENOISED_SERIES, LAYOUT_VERSION, Layout

    target = StorePath.of(path)
    tmp = target if target.remote else target.with_name(f".{target.name}.tmp")
    tmp.rmtree()
    group = zarr.open_group(tmp.location, mode="w", zarr_format=3, **tmp.zarr_kwargs())
    ny, nx = frame_shape
    group.create_array(
        DENOISED_SERIES.variable,
        shape=(n_frames, ny, nx),
        chunks=(chunk_frames, ny, nx),
        dtype=dtype,
        compressors=checksum_codecs(
            BloscCodec(
                typesize=np.dtype(dtype).itemsize, cname=DENOISED_CNAME, clevel=5, shuffle="bitshuffle"
            )
        ),
        fill_value=np.nan,
        dimension_names=list(DENOISED_SERIES.dims),
        attributes={"units": "expected electrons per pixel", "coordinates": "time_s"},
    )
    times = group.create_array(
        "time_s",
        shape=(n_frames,),
        chunks=(max(n_frames, 1),),
        dtype="float64",
        compressors=checksum_codecs(ZstdCodec(level=0)),
        dimension_names=["frame"],
        attributes={"units": "s"},
    )
    times[:] = np.asarray(time_s, dtype="float64")
    group.update_attributes(  # one metadata write (attrs.update writes once per key)
        {
            **dict(attrs),
            "lowdose_layout": str(Layout.DENOISED_SERIES),
            "lowdose_layout_version": LAYOUT_VERSION,
            "lowdose_version": __version__,
            "chunk_frames": int(chunk_frames),
        }
    )
    if not target.remote:
        target.rmtree()
        os.replace(tmp.location, target.location)


def write_denoised_chunk(path: Where, start: int, values: np.ndarray) -> None:
    """Write frames ``start : start + len(values)`` (a whole chunk) of a DenoisedSeries."""
    import zarr

    target = StorePath.of(path)
    array = zarr.open_array(target.location, path="denoised", mode="r+", **target.zarr_kwargs())
    stop = start + values.shape[0]
    remove_stale_chunk_temps(array, (start // array.chunks[0], 0, 0))  # left by a killed attempt
    with storage_full_as_error(str(path), f"writing denoised frames {start}–{stop - 1}"):
        array[start:stop] = values.astype(array.dtype, copy=False)


def open_denoised(path: Where, storage_options: Mapping[str, Any] | None = None) -> Any:
    """Open a DenoisedSeries (local path or fsspec URL) as a lazy validated :class:`xarray.Dataset`."""
    import xarray as xr
    import zarr

    from lowdose.store.schema import DENOISED_SERIES, Layout, validate

    store = StorePath.of(path, storage_options)
    location = store.location
    try:
        group = zarr.open_group(location, mode="r", **store.zarr_kwargs())
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        inside = os.path.join(str(location), "denoised.zarr")
        hint = f" (did you mean {inside}?)" if os.path.isdir(inside) else ""
        raise StoreError(f"{location}: no DenoisedSeries store here{hint}") from err
    missing = [name for name in (DENOISED_SERIES.variable, "time_s") if name not in group]
    if missing:
        found = group.attrs.get("lowdose_layout")
        names = " or ".join(map(repr, missing))
        raise StoreError(
            f"{location}: not a DenoisedSeries (layout {found!r}, no {names} array); "
            "expected the denoised.zarr that `lowdose denoise` writes"
        )
    array = group[DENOISED_SERIES.variable]
    if not isinstance(array, zarr.Array):
        raise StoreError(f"{location}: '{DENOISED_SERIES.variable}' is not an array")
    times = group["time_s"]
    if not isinstance(times, zarr.Array):
        raise StoreError(f"{location}: 'time_s' is not an array")
    lazy = lazy_checked(array, location, name=f"denoised-{location}")
    n_frames = array.shape[0]
    ds = xr.Dataset(
        {
            DENOISED_SERIES.variable: xr.Variable(
                DENOISED_SERIES.dims, lazy, attrs={"units": array.attrs.get("units")}
            )
        },
        coords={
            "frame": ("frame", np.arange(n_frames, dtype="int64")),
            "time_s": (
                "frame",
                read_checked(times, slice(None), location),
                {"units": "s"},
            ),
        },
        attrs=dict(group.attrs),
    )
    return validate(ds, Layout.DENOISED_SERIES, source=location)


def consolidate(parts: Where, target: Where, chunks: list[int]) -> None:
    """Assemble the parts of ``chunks`` (in order) into the single Parquet file ``target``.

    Streams one part at a time (one row group each), casting every part to the
    first part's schema; written to a temp name and renamed (on an object
    store: streamed into one multipart upload, visible only once complete).
    """
    import pyarrow.parquet as pq

    folder, out = StorePath.of(parts), StorePath.of(target)
    files = [folder / part_name(c) for c in chunks]
    present = {p.name for p in folder.glob("part-*.parquet")}
    missing = [f.name for f in files if f.name not in present]
    if missing:
        raise StoreError(f"{folder}: parts {missing[:3]} missing; re-run to redo their chunks")

    def read(file: StorePath) -> Any:
        with file.open("rb") as handle:
            return pq.read_table(handle)

    first = read(files[0])
    schema = first.schema
    if out.remote:
        with out.open("wb") as handle, pq.ParquetWriter(handle, schema) as writer:
            for i, file in enumerate(files):
                writer.write_table((first if i == 0 else read(file)).cast(schema))
        return
    local = out.path
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for i, file in enumerate(files):
            writer.write_table((first if i == 0 else read(file)).cast(schema))
    os.replace(tmp, local)


def read_table(path: Where, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Read a pipeline table (the single file, or a folder of parts; local or URL) in frame order."""
    store = StorePath.of(path, storage_options)
    if store.is_file():
        return pd.read_parquet(store.native(), **store.pandas_kwargs())
    parts = store.glob("part-*.parquet")
    if not parts:
        raise StoreError(f"{store}: no table here")
    return pd.concat([pd.read_parquet(p.native(), **p.pandas_kwargs()) for p in parts], ignore_index=True)
