"""SimulationSet stores: preallocated zarr v3 via xarray, resumable writes, queries, splits.

Layout (``schema.SIMULATION_SET``): ``clean`` float32 ``(image, y, x)``, chunked
one image by :data:`CLEAN_TILE_PX`² pixels (stores made before the tiling have
one whole image per chunk and read the same); per-image coords ``image`` (global index), ``defocus_nm``
(= C1, positive = overfocus; abTEM's ``defocus`` is its negative),
``tilt_x_deg, tilt_y_deg, support_thickness_nm, support_surface, particle,
defect, contrast, model_id, structure_seed``; a ``done`` flag per image; optics
and software versions in attrs. The ground-truth column table lives beside the
store (``schema.ground_truth_path``) as Parquet.

Write protocol (crash-safe): the store is created complete-but-empty in a temp
directory and renamed into place; per structure, the ground-truth part file is
written (temp + rename), then the image region, then ``done`` for those images.
An image is therefore never marked done before its data and ground truth are
durable, and a re-run skips exactly the done images. ``clean`` chunks end in a crc32c
checksum and are read through :mod:`lowdose.store.integrity` (a corrupt image is a
StoreError naming its chunk); a full disk is a
:class:`~lowdose.errors.StorageFullError` and the re-run resumes. No torch here.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from lowdose.errors import StoreError
from lowdose.store import schema
from lowdose.store.integrity import CheckedArray, checksum_codecs, lazy_checked, storage_full_as_error

PER_IMAGE_COORDS = (
    "defocus_nm",
    "tilt_x_deg",
    "tilt_y_deg",
    "support_thickness_nm",
    "support_surface",
    "particle",
    "defect",
    "contrast",
    "model_id",
    "structure_seed",
)
DEFOCUS_CONVENTION = "defocus_nm = C1 (positive = overfocus); abTEM defocus_A = -10 * defocus_nm"

CLEAN_TILE_PX = 256
"""Side of the spatial chunks of ``clean`` in new SimulationSets.

A training patch (256² plus the rotation margin, ≤ 382² pixels) then decodes the
1–9 tiles it overlaps (5 and 0.31 M pixels on average over the sampler's random
draws on 869² images) instead of the whole image (0.76 M pixels): on 869² images
of the `small` preset a patch's read took 1.5 instead of 2.9 CPU-ms. Readers take
any chunking (:func:`open_simulation_set` presents one image per dask chunk either
way)."""


def clean_chunks(image_shape: tuple[int, int]) -> tuple[int, int, int]:
    """Zarr chunks of ``clean`` for images of ``image_shape``: one image × ≤ CLEAN_TILE_PX² tiles."""
    ny, nx = image_shape
    return (1, min(int(ny), CLEAN_TILE_PX), min(int(nx), CLEAN_TILE_PX))


def _parts_dir(path: Path) -> Path:
    gt = schema.ground_truth_path(path)
    return gt.with_name(gt.name + ".parts")


def _software_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for name in ("lowdose", "abtem", "ase", "numpy", "xarray", "zarr"):
        try:
            versions[f"version_{name}"] = md.version(name)
        except md.PackageNotFoundError:
            versions[f"version_{name}"] = "unknown"
    return versions


def create_simulation_set(
    path: str | Path,
    *,
    image_shape: tuple[int, int],
    coords: Mapping[str, Sequence[Any]],
    attrs: dict[str, Any],
    grid_digest: str,
) -> bool:
    """Create an empty SimulationSet at ``path``, or check that an existing one matches.

    Parameters
    ----------
    path
        The ``.zarr`` store.
    image_shape
        ``(ny, nx)`` of every image.
    coords
        Per-image coords (all of :data:`PER_IMAGE_COORDS` except ``contrast``).
    attrs
        Optics, ``pixel_size_A``, ``dose_e_per_px`` and anything else to keep.
    grid_digest
        Hash of the grid config; an existing store must carry the same one.

    Returns
    -------
    bool
        True if the store was created, False if a matching one already existed.
    """
    import dask.array as da

    path = Path(path)
    if path.exists():
        found = open_simulation_set(path, complete_only=False)
        if found.attrs.get("grid_digest") != grid_digest:
            raise StoreError(
                f"{path}: existing SimulationSet was made from a different grid "
                f"(digest {found.attrs.get('grid_digest')!r}, expected {grid_digest!r}); choose another --out"
            )
        return False
    n = len(coords["defocus_nm"])
    ny, nx = image_shape
    # One dask chunk: to_zarr(compute=False) writes only metadata, and a graph over every
    # zarr tile cost 0.57 CPU-s on the client for 480 images of 869² (7,680 tiles).
    clean = da.zeros((n, ny, nx), dtype=np.float32, chunks=(n, ny, nx))
    ds = xr.Dataset(
        {
            "clean": (("image", "y", "x"), clean),
            "done": (("image",), np.zeros(n, dtype=np.uint8)),
        },
        coords={"image": np.arange(n, dtype=np.int64)},
    )
    for name, values in coords.items():
        arr = np.asarray(values)
        ds = ds.assign_coords({name: ("image", arr.astype(object) if arr.dtype.kind == "U" else arr)})
    ds = ds.assign_coords(contrast=("image", np.full(n, "", dtype=object)))
    ds["clean"].attrs.update(units="expected counts per pixel at the nominal dose")
    ds["defocus_nm"].attrs.update(convention=DEFOCUS_CONVENTION)
    ds.attrs.update(attrs)
    ds.attrs.update(_software_versions())
    ds.attrs.update(grid_digest=grid_digest, defocus_convention=DEFOCUS_CONVENTION)
    ds = schema.stamp(ds, schema.Layout.SIMULATION_SET)
    schema.validate(ds, schema.Layout.SIMULATION_SET, str(path))
    tmp = path.with_name(path.name + ".creating")
    if tmp.exists():
        shutil.rmtree(tmp)
    from zarr.codecs import ZstdCodec

    encoding = {
        "clean": {"compressors": checksum_codecs(ZstdCodec(level=0)), "chunks": clean_chunks((ny, nx))}
    }
    with storage_full_as_error(path, "creating the SimulationSet"):
        ds.to_zarr(tmp, mode="w", compute=False, consolidated=False, zarr_format=3, encoding=encoding)
    tmp.rename(path)
    _parts_dir(path).mkdir(parents=True, exist_ok=True)
    return True


def done_images(path: str | Path) -> np.ndarray:
    """Boolean mask of the images whose data is written.

    Read with zarr in this process: through dask it would run on the client's cluster and
    wait for a free worker slot behind the simulation tasks (2.5 s per call measured).
    """
    import zarr

    return np.asarray(zarr.open_array(str(Path(path) / "done"), mode="r")[:], dtype=bool)


def write_images(
    path: str | Path,
    first_image: int,
    clean: np.ndarray,
    contrast: Sequence[str],
    ground_truth: pd.DataFrame,
    model_id: int,
) -> None:
    """Write one structure's images, contrast labels and ground truth, then mark them done.

    ``ground_truth`` holds the structure's columns (``x_px, y_px, element,
    n_atoms, surface``); it is repeated for every image of the structure.
    """
    path = Path(path)
    n = clean.shape[0]
    images = np.arange(first_image, first_image + n)
    table = pd.concat([ground_truth.assign(image=int(i)) for i in images], ignore_index=True)
    table["model_id"] = np.int64(model_id)
    table = table[[*schema.GROUND_TRUTH_COLUMNS, "model_id"]]
    part = _parts_dir(path) / f"model_{model_id:06d}.parquet"
    region = {"image": slice(first_image, first_image + n)}
    data = xr.Dataset(
        {"clean": (("image", "y", "x"), np.asarray(clean, dtype=np.float32))},
        coords={"contrast": ("image", np.asarray(list(contrast), dtype=object))},
    )
    flag = xr.Dataset({"done": (("image",), np.ones(n, dtype=np.uint8))})
    with storage_full_as_error(path, f"writing images {first_image}–{first_image + n - 1}"):
        part.parent.mkdir(parents=True, exist_ok=True)
        tmp = part.with_name(part.name + ".tmp")
        table.to_parquet(tmp, index=False)
        tmp.replace(part)
        data.to_zarr(path, region=region, consolidated=False, safe_chunks=False)
        flag.to_zarr(path, region=region, consolidated=False, safe_chunks=False)


def finalize_ground_truth(path: str | Path) -> Path:
    """Consolidate the per-structure ground-truth parts into one Parquet file (atomically)."""
    path = Path(path)
    parts = sorted(_parts_dir(path).glob("model_*.parquet"))
    out = schema.ground_truth_path(path)
    tables = [pd.read_parquet(p) for p in parts]
    table = pd.concat(tables, ignore_index=True) if tables else _empty_ground_truth()
    table = table.sort_values(["image", "y_px", "x_px"], kind="stable").reset_index(drop=True)
    tmp = out.with_name(out.name + ".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(out)
    return out


def _empty_ground_truth() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image": pd.Series(dtype="int64"),
            "x_px": pd.Series(dtype="float32"),
            "y_px": pd.Series(dtype="float32"),
            "element": pd.Series(dtype="object"),
            "n_atoms": pd.Series(dtype="int32"),
            "surface": pd.Series(dtype="bool"),
            "model_id": pd.Series(dtype="int64"),
        }
    )


def read_ground_truth(path: str | Path) -> pd.DataFrame:
    """The ground-truth column table of a SimulationSet (one row per column per image).

    Reads the consolidated Parquet file when it covers every part written so
    far, otherwise the per-structure parts of an unfinished run.
    """
    path = Path(path)
    out = schema.ground_truth_path(path)
    parts = sorted(_parts_dir(path).glob("model_*.parquet"))
    if out.exists() and (not parts or out.stat().st_mtime >= max(p.stat().st_mtime for p in parts)):
        return pd.read_parquet(out)
    if not parts:
        if not path.exists():
            raise StoreError(f"{path}: no such SimulationSet")
        return _empty_ground_truth()
    table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return table.sort_values(["image", "y_px", "x_px"], kind="stable").reset_index(drop=True)


def open_simulation_set(path: str | Path, complete_only: bool = True) -> xr.Dataset:
    """Open a SimulationSet lazily and validate its layout.

    Parameters
    ----------
    path
        The ``.zarr`` store.
    complete_only
        Keep only the images marked done (an unfinished run's finished part).
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such SimulationSet")
    try:
        ds = xr.open_zarr(path, consolidated=False)
    except Exception as err:  # zarr/xarray raise many kinds for a corrupt store
        raise StoreError(f"{path}: not a readable zarr store ({type(err).__name__})") from None
    schema.validate(ds, schema.Layout.SIMULATION_SET, str(path))
    ds = ds.assign(clean=ds["clean"].copy(data=_checked_clean(path)))
    # Per-image coords and flags are small: load them so queries never touch dask.
    small = [name for name in ds.variables if ds[name].dims == ("image",)]
    ds = ds.assign({name: ds[name].load() for name in small if name in ds.data_vars})
    ds = ds.assign_coords({name: ds[name].load() for name in small if name in ds.coords})
    if complete_only:
        ds = ds.isel(image=np.flatnonzero(ds["done"].values))
    return ds


def _checked_clean(path: Path) -> Any:
    """``clean`` as a dask array whose reads verify chunk checksums (StoreError naming the chunk).

    One image per dask chunk whatever the store's tiles, so whole-image readers
    get one task per image (one zarr read of its tiles), as with untiled stores.
    """
    import uuid

    import dask.array as da
    import zarr

    array = zarr.open_array(str(path), path="clean", mode="r")
    if tuple(array.chunks[1:]) == tuple(array.shape[1:]):
        return lazy_checked(array, str(path), name=f"clean-{uuid.uuid4().hex}")
    return da.from_array(
        CheckedArray(array, str(path)),
        chunks=(1, *array.shape[1:]),
        name=f"clean-{uuid.uuid4().hex}",
        asarray=True,
        fancy=False,
        meta=np.empty((0, 0, 0), dtype=array.dtype),
    )


def select(ds: xr.Dataset, **criteria: Any) -> xr.Dataset:
    """Images of ``ds`` matching every criterion, lazily.

    Each keyword names a per-image coord; the value is a scalar (equality), a
    list/tuple/set (membership) or a ``slice`` (inclusive range, either end
    may be None), e.g. ``select(ds, contrast="white", particle=["PtNp1",
    "PtNp2"], defocus_nm=slice(4, 10))``.
    """
    mask = np.ones(ds.sizes["image"], dtype=bool)
    for name, value in criteria.items():
        if name not in ds.coords or ds.coords[name].dims != ("image",):
            raise StoreError(f"select: unknown per-image coord {name!r}; expected one of {PER_IMAGE_COORDS}")
        values = np.asarray(ds.coords[name].values)
        if isinstance(value, slice):
            if value.step is not None:
                raise StoreError(f"select: {name} slice must not have a step")
            if value.start is not None:
                mask &= values >= value.start
            if value.stop is not None:
                mask &= values <= value.stop
        elif isinstance(value, list | tuple | set | frozenset | np.ndarray):
            wanted = list(value)
            mask &= np.array([v in wanted for v in values.tolist()], dtype=bool)
        else:
            mask &= np.array([v == value for v in values.tolist()], dtype=bool)
    return ds.isel(image=np.flatnonzero(mask))


def split_by_structure(
    ds: xr.Dataset, fractions: Iterable[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[xr.Dataset, ...]:
    """Split ``ds`` into disjoint subsets by ``model_id``, so no structure is shared.

    Structures are shuffled with ``seed`` and dealt out by cumulative fraction;
    each subset is a lazy selection of ``ds``.
    """
    fractions = [float(f) for f in fractions]
    if any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise StoreError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    models = np.unique(np.asarray(ds["model_id"].values))
    order = np.random.default_rng(seed).permutation(models)
    bounds = np.round(np.cumsum([0.0, *fractions]) * len(order)).astype(int)
    ids = np.asarray(ds["model_id"].values)
    return tuple(
        ds.isel(image=np.flatnonzero(np.isin(ids, order[lo:hi]))) for lo, hi in itertools.pairwise(bounds)
    )
