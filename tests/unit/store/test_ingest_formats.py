"""Round trip of every input format: files written by the real libraries → ingest → bit-identical counts."""

from pathlib import Path

import h5py
import mrcfile
import numpy as np
import pytest
import tifffile

from lowdose.store.ingest import ingest
from lowdose.store.series import open_series
from tests.unit.store._ser_writer import write_ser

SHAPE = (37, 24, 20)


def counts(dtype: str, seed: int = 0, high: int = 0) -> np.ndarray:
    frames = np.random.default_rng(seed).poisson(0.45, SHAPE).astype(dtype)
    if high:
        frames[5, 3, 4] = high
    return frames


def rsciio_signal(data: np.ndarray, time_step_s: float, pixel_nm: float) -> dict:
    axes = [
        {
            "name": "time",
            "size": data.shape[0],
            "scale": time_step_s,
            "offset": 0,
            "units": "s",
            "navigate": True,
        },
        {
            "name": "y",
            "size": data.shape[1],
            "scale": pixel_nm,
            "offset": 0,
            "units": "nm",
            "navigate": False,
        },
        {
            "name": "x",
            "size": data.shape[2],
            "scale": pixel_nm,
            "offset": 0,
            "units": "nm",
            "navigate": False,
        },
    ]
    return {
        "data": data,
        "axes": axes,
        "metadata": {"General": {"title": "frames"}, "Signal": {"signal_type": ""}},
        "original_metadata": {},
        "tmp_parameters": {},
        "attributes": {"_lazy": False},
        "package_info": {"name": "lowdose-tests", "version": "0"},
        "learning_results": {},
        "models": {},
    }


def check(out: Path, expected: np.ndarray, *, dtype: str, **attrs: float) -> None:
    ds = open_series(out)
    assert ds["counts"].dtype == dtype
    np.testing.assert_array_equal(ds["counts"].values, expected)
    assert ds.attrs["ingest_state"] == "complete"
    assert ds.attrs["dose_e_per_px"] == pytest.approx(expected.mean())
    for key, value in attrs.items():
        assert ds.attrs[key] == pytest.approx(value), key


def test_multipage_tiff_uint8(tmp_path: Path) -> None:
    frames = counts("uint8")
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, frames, metadata={"pixel_size_A": 0.061, "frame_rate_hz": 40.0})
    out = ingest([src], tmp_path / "s.zarr", chunk_frames=8, batch_frames=16)
    check(out, frames, dtype="uint8", pixel_size_A=0.061, frame_rate_hz=40.0)


def test_imagej_tiff_uint16_narrowed_and_metadata(tmp_path: Path) -> None:
    frames = counts("uint16")
    src = tmp_path / "ij.tif"
    tifffile.imwrite(
        src,
        frames,
        imagej=True,
        resolution=(1 / 0.0061, 1 / 0.0061),
        metadata={"unit": "nm", "finterval": 0.025},
    )
    out = ingest([src], tmp_path / "s.zarr", chunk_frames=8)
    check(out, frames, dtype="uint8", pixel_size_A=0.061, frame_rate_hz=40.0)


def test_tiff_folder_of_single_frames_across_batches(tmp_path: Path) -> None:
    frames = counts("uint16", high=300)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):  # names sort naturally: 2 before 10
        tifffile.imwrite(folder / f"frame_{i}.tif", frame)
    out = ingest([folder], tmp_path / "s.zarr", pixel_size_A=0.05, frame_rate_hz=25.0, chunk_frames=8)
    check(out, frames, dtype="uint16", pixel_size_A=0.05, frame_rate_hz=25.0)
    assert len(open_series(out).attrs["sources"]) == SHAPE[0]


def test_compressed_tiff_uint32_summed_frames(tmp_path: Path) -> None:
    frames = counts("uint32", high=70000)
    src = tmp_path / "zlib.tif"
    tifffile.imwrite(src, frames, compression="zlib")
    out = ingest([src], tmp_path / "s.zarr", pixel_size_A=0.061, frame_rate_hz=40.0, chunk_frames=16)
    check(out, frames, dtype="uint32")


def test_mrc_uint16_with_voxel_size(tmp_path: Path) -> None:
    frames = counts("uint16")
    src = tmp_path / "stack.mrc"
    with mrcfile.new(src) as mrc:
        mrc.set_data(frames)
        mrc.voxel_size = 0.061
    out = ingest([src], tmp_path / "s.zarr", frame_rate_hz=40.0, chunk_frames=8)
    check(out, frames, dtype="uint8", pixel_size_A=0.061)


def test_mrc_signed_int8_mode0(tmp_path: Path) -> None:
    frames = counts("int8")
    src = tmp_path / "stack.mrc"
    with mrcfile.new(src) as mrc:
        mrc.set_data(frames)
    out = ingest([src], tmp_path / "s.zarr", pixel_size_A=0.1, frame_rate_hz=40.0)
    check(out, frames, dtype="uint8")


@pytest.mark.parametrize("named", [True, False])
def test_hdf5_dataset(tmp_path: Path, named: bool) -> None:
    frames = counts("uint16")
    src = tmp_path / "frames.h5"
    with h5py.File(src, "w") as f:
        f["meta/note"] = np.arange(3)
        dset = f.create_dataset("data/frames", data=frames, chunks=(4, 24, 20), compression="gzip")
        dset.attrs["pixel_size_A"] = 0.061
        dset.attrs["frame_rate_hz"] = 400.0
    spec = f"{src}:/data/frames" if named else str(src)
    out = ingest([spec], tmp_path / "s.zarr", chunk_frames=8)
    check(out, frames, dtype="uint8", pixel_size_A=0.061, frame_rate_hz=400.0)


def test_npy_memory_mapped_and_whole_floats(tmp_path: Path) -> None:
    frames = counts("uint8")
    src = tmp_path / "frames.npy"
    np.save(src, frames.astype("float32"))
    out = ingest([src], tmp_path / "s.zarr", pixel_size_A=0.061, frame_rate_hz=40.0, chunk_frames=8)
    check(out, frames, dtype="uint8")


def test_several_files_concatenate(tmp_path: Path) -> None:
    frames = counts("uint8")
    np.save(tmp_path / "a.npy", frames[:10])
    tifffile.imwrite(tmp_path / "b.tif", frames[10:])
    out = ingest(
        [tmp_path / "a.npy", tmp_path / "b.tif"], tmp_path / "s.zarr", pixel_size_A=0.1, frame_rate_hz=40.0
    )
    check(out, frames, dtype="uint8")


def test_hspy_via_rosettasciio(tmp_path: Path) -> None:
    from rsciio.hspy import file_writer

    frames = counts("uint16")
    src = tmp_path / "frames.hspy"
    file_writer(str(src), rsciio_signal(frames, 0.025, 0.0061))
    out = ingest([src], tmp_path / "s.zarr", chunk_frames=8)
    check(out, frames, dtype="uint8", pixel_size_A=0.061, frame_rate_hz=40.0)


def test_emd_via_rosettasciio(tmp_path: Path) -> None:
    from rsciio.emd import file_writer

    frames = counts("uint16")
    src = tmp_path / "frames.emd"
    file_writer(str(src), rsciio_signal(frames, 0.05, 0.0061))
    out = ingest([src], tmp_path / "s.zarr", chunk_frames=8)
    check(out, frames, dtype="uint8", pixel_size_A=0.061, frame_rate_hz=20.0)


def test_cli_overrides_file_metadata(tmp_path: Path) -> None:
    frames = counts("uint8")
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, frames, metadata={"pixel_size_A": 0.061, "frame_rate_hz": 40.0})
    out = ingest([src], tmp_path / "s.zarr", pixel_size_A=0.5, frame_rate_hz=10.0, dose_e_per_px=0.45)
    ds = open_series(out)
    assert ds.attrs["pixel_size_A"] == 0.5 and ds.attrs["frame_rate_hz"] == 10.0
    assert ds.attrs["dose_e_per_px"] == 0.45
    np.testing.assert_allclose(ds["time_s"].values, np.arange(SHAPE[0]) / 10.0)


def test_ser_native_reader_agrees_with_rosettasciio(tmp_path: Path) -> None:
    from rsciio.tia import file_reader

    frames = counts("uint16")
    src = tmp_path / "series_1.ser"
    write_ser(src, frames, 6.1e-12, 0.025)
    # An independent reader sees the same frames in the file we wrote ...
    independent = file_reader(str(src))[0]["data"]
    np.testing.assert_array_equal(independent, frames)
    # ... and ingest (lowdose's own bounded-memory SER reader) reproduces them bit for bit.
    out = ingest([src], tmp_path / "s.zarr", chunk_frames=8)
    check(out, frames, dtype="uint8", pixel_size_A=0.061, frame_rate_hz=40.0)


def test_truncated_ser_is_refused(tmp_path: Path) -> None:
    from lowdose.errors import FormatError

    src = tmp_path / "series_1.ser"
    write_ser(src, counts("uint8"), 6.1e-12, 0.025)
    src.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(FormatError, match=r"series_1\.ser: truncated SER"):
        ingest([src], tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_sources_are_read_twice_and_closed_between(tmp_path: Path) -> None:
    """uint16 inputs are scanned, then written: every reader must reopen after close()."""
    frames = counts("uint16")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["frames"] = frames[:20]
    tifffile.imwrite(tmp_path / "b.tif", frames[20:])
    out = ingest(
        [tmp_path / "a.h5", tmp_path / "b.tif"], tmp_path / "s.zarr", pixel_size_A=0.1, frame_rate_hz=40.0
    )
    check(out, frames, dtype="uint8")


@pytest.mark.parametrize(
    ("layout", "raw"),
    [
        ({}, True),
        ({"imagej": True}, True),
        ({"byteorder": ">"}, True),
        ({"contiguous": False}, True),
        ({"tile": (16, 16)}, False),
        ({"compression": "zlib"}, False),
    ],
)
def test_raw_tiff_batches_equal_tifffile_pages(tmp_path: Path, layout: dict, raw: bool) -> None:
    from lowdose.store.readers import open_source

    frames = np.random.default_rng(3).integers(0, 5000, (3, 5, 32, 32)).astype("uint16")
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, frames, photometric="minisblack", **layout)
    source = open_source(src)
    assert (source._raw is not None) == raw  # raw data: one positioned read per batch
    flat = frames.reshape(-1, 32, 32)
    for start, stop in ((0, 15), (2, 9), (14, 15)):
        batch = source.read(start, stop)
        assert batch.dtype == np.dtype("uint16") and batch.dtype.isnative
        np.testing.assert_array_equal(batch, flat[start:stop])
    source.close()


def test_raw_tiff_batches_span_series(tmp_path: Path) -> None:
    from lowdose.store.readers import open_source

    first = counts("uint8")[:5]
    second = counts("uint8", seed=1)[:4]
    src = tmp_path / "two.tif"
    with tifffile.TiffWriter(src) as tif:
        tif.write(first, photometric="minisblack")
        tif.write(second, photometric="minisblack")
    source = open_source(src)
    assert source._raw is not None and len(source._raw) == 2
    np.testing.assert_array_equal(source.read(3, 7), np.concatenate([first, second])[3:7])
    source.close()


def test_raw_tiff_shrunk_after_open_is_a_format_error(tmp_path: Path) -> None:
    from lowdose.errors import FormatError
    from lowdose.store.readers import open_source

    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, counts("uint8"))
    source = open_source(src)
    with src.open("r+b") as handle:  # the file is cut while the ingest runs
        handle.truncate(src.stat().st_size // 2)
    with pytest.raises(FormatError, match=r"stack\.tif: frame \d+: truncated TIFF"):
        source.read(0, SHAPE[0])
    source.close()


def test_raw_tiff_batches_outlive_close_and_map_only_their_bytes(tmp_path: Path) -> None:
    """Raw batches are memory-map views: valid after close(), each mapping its own range."""
    import mmap

    from lowdose.store.readers import open_source

    frames = np.random.default_rng(5).integers(0, 9, (40, 128, 128)).astype("uint8")
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, frames, photometric="minisblack")
    source = open_source(src)
    early = source.read(0, 4)
    late = source.read(30, 40)
    source.close()  # as _batches does while the writer thread still holds the last batch
    np.testing.assert_array_equal(early, frames[:4])
    np.testing.assert_array_equal(late, frames[30:40])
    mapped = late.base
    while mapped is not None and not isinstance(mapped, mmap.mmap):
        mapped = getattr(mapped, "base", None) or getattr(mapped, "obj", None)
    assert isinstance(mapped, mmap.mmap)
    assert len(mapped) < 10 * 128 * 128 + mmap.ALLOCATIONGRANULARITY  # not the whole file
    assert not late.flags.writeable  # a view of the source file can never be written through
