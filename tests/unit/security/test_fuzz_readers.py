"""Fuzz the ingest readers: corrupt files give FormatError, never a hang, a traceback or a huge allocation.

Every example builds a small valid file of one format (TIFF, zlib TIFF, MRC, NumPy,
SER, HDF5, EMD), corrupts it (random bytes, flipped bytes, truncation, or an
absurd value written into a header field), and runs the real :func:`ingest` on it
under a 15 s alarm and a traced-memory bound. The outcome must be either a
one-line :class:`FormatError` naming the file (and no store left behind) or a
complete, valid store. Examples are derandomised so every run checks the same files.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import h5py
import mrcfile
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lowdose.errors import FormatError
from lowdose.store.ingest import ingest
from lowdose.store.series import open_series
from tests.unit.security._guards import peak_memory, time_limit
from tests.unit.store._ser_writer import write_ser

META = {"pixel_size_A": 0.061, "frame_rate_hz": 40.0}
SECONDS = 15.0
"""Per-example time limit: every file is a few kB, so anything slower is a hang."""
MEMORY_BOUND = 64 << 20
"""Per-example bound on traced allocations (the files hold < 2 kB of pixels)."""
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _frames() -> np.ndarray:
    return np.random.default_rng(0).poisson(0.45, (4, 12, 10)).astype("uint16")


def _tiff(path: Path) -> None:
    tifffile.imwrite(path, _frames(), photometric="minisblack")


def _tiff_zlib(path: Path) -> None:
    tifffile.imwrite(path, _frames(), photometric="minisblack", compression="zlib")


def _mrc(path: Path) -> None:
    with mrcfile.new(path) as mrc:
        mrc.set_data(_frames())


def _npy(path: Path) -> None:
    np.save(path, _frames())


def _ser(path: Path) -> None:
    write_ser(path, _frames(), 6.1e-12, 0.025)


def _h5(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=_frames(), chunks=(1, 12, 10), compression="gzip")


def _emd(path: Path) -> None:
    from rsciio.emd import file_writer

    axes = [
        {"name": "t", "units": "s", "scale": 0.025, "offset": 0, "size": 4, "navigate": True},
        {"name": "y", "units": "nm", "scale": 0.0061, "offset": 0, "size": 12, "navigate": False},
        {"name": "x", "units": "nm", "scale": 0.0061, "offset": 0, "size": 10, "navigate": False},
    ]
    file_writer(
        str(path),
        {
            "data": _frames(),
            "axes": axes,
            "metadata": {"General": {"title": "s"}, "Signal": {}},
            "original_metadata": {},
        },
    )


WRITERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "tiff": (".tif", _tiff),
    "tiff-zlib": (".tif", _tiff_zlib),
    "mrc": (".mrc", _mrc),
    "npy": (".npy", _npy),
    "ser": (".ser", _ser),
    "hdf5": (".h5", _h5),
    "emd": (".emd", _emd),
}


def _valid(tmp: Path, fmt: str) -> Path:
    suffix, write = WRITERS[fmt]
    path = tmp / f"input{suffix}"
    write(path)
    return path


def _check_ingest(src: Path, tmp: Path) -> str:
    """Ingest ``src`` under the guards; return "refused" or "ingested" (anything else fails the test)."""
    out = tmp / "s.zarr"
    with peak_memory() as peak, time_limit(SECONDS):
        try:
            ingest([src], out, chunk_frames=2, batch_frames=2, **META)
        except FormatError as err:
            message = str(err)
            outcome = "refused"
        else:
            outcome = "ingested"
    assert peak[0] < MEMORY_BOUND, f"{src.name}: ingest traced {peak[0] / 2**20:.0f} MiB"
    if outcome == "refused":
        assert "\n" not in message and str(src) in message, message
        assert not out.exists() and not out.with_name("s.zarr.partial").exists()
    else:
        ds = open_series(out)
        assert ds.attrs["ingest_state"] == "complete"
        assert ds["counts"].shape[1:] == (12, 10) or ds["counts"].size < 2**20
    return outcome


@pytest.fixture(scope="module", autouse=True)
def _warm_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Ingest one valid file of each format unguarded: first-use set-up is not a hang."""
    for fmt in WRITERS:
        tmp = tmp_path_factory.mktemp(f"warm-{fmt}")
        ingest([_valid(tmp, fmt)], tmp / "s.zarr", **META)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_valid_files_ingest(tmp_path: Path, fmt: str) -> None:
    """The harness itself: the uncorrupted files ingest to the frames written."""
    src = _valid(tmp_path, fmt)
    assert _check_ingest(src, tmp_path) == "ingested"
    np.testing.assert_array_equal(open_series(tmp_path / "s.zarr")["counts"].values, _frames())


@FUZZ
@given(fmt=st.sampled_from(sorted(WRITERS)), payload=st.binary(min_size=0, max_size=1024))
def test_random_bytes_are_refused(tmp_path_factory: pytest.TempPathFactory, fmt: str, payload: bytes) -> None:
    tmp = tmp_path_factory.mktemp("random")
    src = tmp / f"input{WRITERS[fmt][0]}"
    src.write_bytes(payload)
    assert _check_ingest(src, tmp) == "refused"


@FUZZ
@given(
    fmt=st.sampled_from(sorted(WRITERS)),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=8),
    keep=st.one_of(st.none(), st.floats(0, 1)),
)
def test_flipped_and_truncated_files(
    tmp_path_factory: pytest.TempPathFactory,
    fmt: str,
    flips: list[tuple[float, int]],
    keep: float | None,
) -> None:
    tmp = tmp_path_factory.mktemp("flip")
    src = _valid(tmp, fmt)
    raw = bytearray(src.read_bytes())
    for where, mask in flips:
        raw[int(where * (len(raw) - 1))] ^= mask
    if keep is not None:
        raw = raw[: int(keep * len(raw))]
    src.write_bytes(bytes(raw))
    event(f"{fmt}: {_check_ingest(src, tmp)}")


ABSURD = [0, 1, 7, 2**15, 2**16 - 1, 2**31 - 1, 2**32 - 1, 2**40, 2**63 - 1]


def _put(raw: bytearray, offset: int, fmt: str, value: int) -> None:
    size = struct.calcsize(fmt)
    raw[offset : offset + size] = (value % 2 ** (8 * size)).to_bytes(size, "little")


def _header_fields(fmt: str, src: Path) -> list[tuple[int, str]]:
    """(byte offset, struct format) of the size/count/offset fields of each format's header."""
    if fmt == "mrc":
        return [(0, "<i"), (4, "<i"), (8, "<i"), (12, "<i"), (92, "<i")]  # nx ny nz mode nsymbt
    if fmt == "ser":
        # series header: total, valid, offset-table offset, dimension count; the dimension
        # record's description/units lengths; the first data offset; frame 0's data type, x, y
        first = 30 + 28 + 4 + 1 + 2 * 8 * 4
        header = [(14, "<I"), (18, "<I"), (22, "<I"), (26, "<I"), (54, "<I"), (58, "<I"), (63, "<I")]
        return [*header, (first + 40, "<H"), (first + 42, "<I"), (first + 46, "<I")]
    if fmt.startswith("tiff"):
        fields = []
        with tifffile.TiffFile(src) as tif:
            for name in ("ImageWidth", "ImageLength", "StripOffsets", "StripByteCounts", "RowsPerStrip"):
                tag = tif.pages[0].tags.get(name)
                if tag is not None:
                    fields.append((int(tag.valueoffset), "<I" if tag.dtype in (4, 16) else "<H"))
        return fields
    raise AssertionError(fmt)


@FUZZ
@given(
    fmt=st.sampled_from(["mrc", "ser", "tiff", "tiff-zlib"]),
    field=st.integers(0, 9),
    value=st.sampled_from(ABSURD),
)
def test_absurd_header_fields(
    tmp_path_factory: pytest.TempPathFactory, fmt: str, field: int, value: int
) -> None:
    tmp = tmp_path_factory.mktemp("absurd")
    src = _valid(tmp, fmt)
    fields = _header_fields(fmt, src)
    offset, code = fields[field % len(fields)]
    raw = bytearray(src.read_bytes())
    _put(raw, offset, code, value)
    src.write_bytes(bytes(raw))
    event(f"{fmt}: {_check_ingest(src, tmp)}")


@pytest.mark.parametrize(
    "shape",
    [(2**40, 12, 10), (4, 2**20, 2**20), (3, 2**31 - 1, 1), (1, 0, 10), (0, 12, 10)],
    ids=["frames", "frame-size", "one-row", "empty-frame", "no-frames"],
)
def test_npy_header_with_absurd_shape(tmp_path: Path, shape: tuple[int, ...]) -> None:
    src = tmp_path / "input.npy"
    np.save(src, _frames())
    raw = src.read_bytes()
    header_end = raw.index(b"\n") + 1
    header = raw[:header_end].decode("latin-1")
    header = header.replace("(4, 12, 10)", str(shape)).rstrip("\n")
    body = raw[header_end:]
    padded = header.ljust(
        header_end - 1 if len(header) < header_end else len(header) + 64 - len(header) % 64 - 1
    )
    src.write_bytes(padded.encode("latin-1")[:10] + padded.encode("latin-1")[10:] + b"\n" + body)
    assert _check_ingest(src, tmp_path) == "refused"


@pytest.mark.parametrize(
    "shape",
    [(2**40, 12, 10), (4, 2**20, 2**20), (2**20, 2**12, 2**12)],
    ids=["frames", "frame-size", "both"],
)
def test_hdf5_dataset_with_absurd_shape(tmp_path: Path, shape: tuple[int, int, int]) -> None:
    """A well-formed HDF5 file whose compressed dataset claims far more data than it stores."""
    src = tmp_path / "input.h5"
    with h5py.File(src, "w") as f:
        data = f.create_dataset("frames", shape=shape, dtype="uint16", chunks=(1, 12, 10), compression="gzip")
        data[0, :12, :10] = _frames()[0]
    assert _check_ingest(src, tmp_path) == "refused"


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_claiming_huge_pages_is_refused_before_decoding(tmp_path: Path, compression: str | None) -> None:
    """16000² pages (under the frame-size cap) backed by a few bytes each: refused, nothing allocated."""
    src = tmp_path / "input.tif"
    tifffile.imwrite(src, _frames(), photometric="minisblack", compression=compression, metadata=None)
    raw = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        for page in tif.pages:
            for name in ("ImageWidth", "ImageLength", "RowsPerStrip"):
                tag = page.tags[name]
                _put(raw, int(tag.valueoffset), "<I" if tag.dtype in (4, 16) else "<H", 16000)
    src.write_bytes(bytes(raw))
    assert _check_ingest(src, tmp_path) == "refused"


@pytest.mark.parametrize("n_frames", [2**24, 2**40])
def test_emd_claiming_millions_of_frames_is_refused_quickly(tmp_path: Path, n_frames: int) -> None:
    """rosettasciio alone spent minutes and ~1 GB laying out 2^24 one-frame chunks of this file."""
    src = tmp_path / "input.emd"
    with h5py.File(src, "w") as f:
        f.attrs["version_major"] = 0
        f.attrs["version_minor"] = 2
        group = f.create_group("data/signal")
        group.attrs["emd_group_type"] = 1
        data = group.create_dataset(
            "data", shape=(n_frames, 12, 10), dtype="uint16", chunks=(1, 12, 10), compression="gzip"
        )
        data[0] = _frames()[0]
        for i, name in enumerate(("t", "y", "x"), 1):
            dim = group.create_dataset(f"dim{i}", data=np.array([0.0, 1.0]))
            dim.attrs["name"] = name
            dim.attrs["units"] = "[n_m]"
    assert _check_ingest(src, tmp_path) == "refused"
