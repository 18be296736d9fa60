"""Bad input gives a one-line FormatError naming the file and leaves no store behind."""

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile

from lowdose.errors import FormatError, StoreError
from lowdose.store.ingest import ingest
from lowdose.store.series import open_series

META = {"pixel_size_A": 0.061, "frame_rate_hz": 40.0}


def frames(dtype: str = "uint8", n: int = 24) -> np.ndarray:
    return np.random.default_rng(3).poisson(0.45, (n, 32, 28)).astype(dtype)


def refused(tmp_path: Path, inputs: list, match: str, **kwargs: object) -> FormatError:
    out = tmp_path / "s.zarr"
    with pytest.raises(FormatError, match=match) as info:
        ingest(inputs, out, chunk_frames=4, batch_frames=4, **{**META, **kwargs})
    message = str(info.value)
    assert "\n" not in message
    assert not out.exists()
    assert not out.with_name("s.zarr.partial").exists()
    return info.value


@pytest.mark.parametrize("kwargs", [{}, {"imagej": True}, {"compression": "zlib"}])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_tiff(tmp_path: Path, kwargs: dict, keep: float) -> None:
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, frames(), **kwargs)
    src.write_bytes(src.read_bytes()[: int(src.stat().st_size * keep)])
    err = refused(tmp_path, [src], "stack.tif")
    assert "trunc" in str(err) or "corrupt" in str(err)


def test_tiff_with_a_bad_page(tmp_path: Path) -> None:
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, frames(), compression="zlib")
    with tifffile.TiffFile(src) as tif:
        offset, size = tif.pages[13].dataoffsets[0], tif.pages[13].databytecounts[0]
    raw = bytearray(src.read_bytes())
    raw[offset : offset + size] = b"\xff" * size
    src.write_bytes(bytes(raw))
    refused(tmp_path, [src], r"stack.tif: frame 1[23]")


def test_tiff_with_a_page_of_another_shape(tmp_path: Path) -> None:
    src = tmp_path / "stack.tif"
    with tifffile.TiffWriter(src) as tif:
        for i, frame in enumerate(frames(n=6)):
            tif.write(frame[:16] if i == 4 else frame, contiguous=False)
    refused(tmp_path, [src], "stack.tif: page 4 has frame shape")


@pytest.mark.parametrize("nz", [40, 12])
def test_mrc_with_a_lying_header(tmp_path: Path, nz: int) -> None:
    src = tmp_path / "stack.mrc"
    with mrcfile.new(src) as mrc:
        mrc.set_data(frames("uint16"))
    raw = bytearray(src.read_bytes())
    raw[8:12] = np.int32(nz).tobytes()  # header claims nz frames; data holds 24
    src.write_bytes(bytes(raw))
    refused(tmp_path, [src], "stack.mrc")


def test_float_with_nan(tmp_path: Path) -> None:
    data = frames("float32")
    data[17, 3, 3] = np.nan
    np.save(tmp_path / "f.npy", data)
    refused(tmp_path, [tmp_path / "f.npy"], r"f.npy: frame 17: NaN")


def test_non_integer_floats_refused_unless_round(tmp_path: Path) -> None:
    data = frames("float32") + 0.25
    np.save(tmp_path / "f.npy", data)
    refused(tmp_path, [tmp_path / "f.npy"], "f.npy: frame 0: non-integer .*--float-policy round")
    out = ingest([tmp_path / "f.npy"], tmp_path / "s.zarr", float_policy="round", **META)
    np.testing.assert_array_equal(open_series(out)["counts"].values, np.rint(data))


def test_negative_counts(tmp_path: Path) -> None:
    data = frames("int16")
    data[9, 0, 0] = -1
    np.save(tmp_path / "n.npy", data)
    refused(tmp_path, [tmp_path / "n.npy"], r"n.npy: frame 9: negative")


def test_mismatched_frame_shapes_between_files(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", frames())
    np.save(tmp_path / "b.npy", frames()[:, :20])
    refused(
        tmp_path,
        [tmp_path / "a.npy", tmp_path / "b.npy"],
        r"b.npy: frame shape \(20, 28\); expected \(32, 28\)",
    )


def test_unknown_format_missing_file_and_missing_metadata(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"not an image")
    refused(tmp_path, [tmp_path / "x.jpg"], "x.jpg: unknown format '.jpg'")
    refused(tmp_path, [tmp_path / "nope.tif"], "nope.tif: no such file")
    np.save(tmp_path / "a.npy", frames())
    with pytest.raises(FormatError, match=r"a.npy: .*pixel_size_A; pass --pixel-size-A"):
        ingest([tmp_path / "a.npy"], tmp_path / "s.zarr", frame_rate_hz=40.0)


def test_garbage_with_a_known_suffix(tmp_path: Path) -> None:
    for name in ("g.tif", "g.mrc", "g.npy", "g.h5", "g.hspy", "g.emd", "g.dm4", "g.ser"):
        (tmp_path / name).write_bytes(bytes(range(256)) * 3)
        refused(tmp_path, [tmp_path / name], name)


def test_error_after_committed_batches_leaves_no_store(tmp_path: Path) -> None:
    """uint8 data is not pre-scanned; a bad page late in the file is found mid-ingest."""
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, frames(n=40), compression="zlib")
    with tifffile.TiffFile(src) as tif:
        offset, size = tif.pages[33].dataoffsets[0], tif.pages[33].databytecounts[0]
    raw = bytearray(src.read_bytes())
    raw[offset : offset + size] = b"\x00" * size
    src.write_bytes(bytes(raw))
    refused(tmp_path, [src], "stack.tif: frame 3[23]")


def test_out_holding_another_series_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", frames())
    np.save(tmp_path / "b.npy", frames()[::-1])
    out = ingest([tmp_path / "a.npy"], tmp_path / "s.zarr", **META)
    before = open_series(out)["counts"].values
    with pytest.raises(StoreError, match="different series"):
        ingest([tmp_path / "b.npy"], out, **META)
    np.testing.assert_array_equal(open_series(out)["counts"].values, before)


@pytest.mark.filterwarnings("ignore:.*stored as RGB:DeprecationWarning")  # the default this test is about
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((3, 32, 28), "uint8"), ((4, 32, 28), "uint8"), ((32, 28, 3), "uint8"), ((3, 32, 28), "float32")],
)
def test_colour_tiff_is_refused_saying_why_and_what_to_do(
    tmp_path: Path, shape: tuple[int, ...], dtype: str
) -> None:
    """A few frames written plainly with tifffile become one RGB(A) page: refused, with the fix."""
    src = tmp_path / "rgb.tif"
    tifffile.imwrite(src, np.random.default_rng(4).poisson(0.45, shape).astype(dtype))
    samples = min(shape[0], shape[-1])
    layout = "planar" if shape[0] < shape[-1] else "interleaved"
    err = refused(
        tmp_path,
        [src],
        rf"rgb.tif: TIFF holds 1 page with {samples} samples per pixel \(RGB, {layout}, {dtype}\)",
    )
    assert "not grey count frames" in str(err)
    assert "photometric='minisblack'" in str(err) and "separate grey pages" in str(err)


def test_frames_written_as_the_colour_refusal_advises_ingest(tmp_path: Path) -> None:
    data = np.random.default_rng(4).poisson(0.45, (3, 32, 28)).astype("uint8")
    tifffile.imwrite(tmp_path / "grey.tif", data, photometric="minisblack")
    out = ingest([tmp_path / "grey.tif"], tmp_path / "s.zarr", **META)
    np.testing.assert_array_equal(open_series(out)["counts"].values, data)


@pytest.mark.filterwarnings("ignore:.*stored as RGB:DeprecationWarning")
def test_colour_series_after_grey_frames_is_refused(tmp_path: Path) -> None:
    """Three RGB planes of a later series must not pass as three more frames."""
    src = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(src) as tif:
        tif.write(frames(n=4), photometric="minisblack")
        tif.write(frames(n=3))  # a (3, 32, 28) uint8 array: one planar RGB page
    refused(
        tmp_path, [src], r"mixed.tif: TIFF series 1 \(after frame 4\) has 1 page with 3 samples per pixel"
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("pixel_size_A", float("inf"), "pixel_size_A must be a finite number > 0, got inf"),
        ("frame_rate_hz", float("inf"), "frame_rate_hz must be a finite number > 0, got inf"),
        ("frame_rate_hz", float("nan"), "frame_rate_hz must be a finite number > 0, got nan"),
        ("dose_e_per_px", -3.0, "dose_e_per_px must be a finite number ≥ 0 \\(0 = not known\\), got -3.0"),
        ("dose_e_per_px", float("nan"), "dose_e_per_px must be a finite number ≥ 0"),
        ("dose_e_per_px", float("inf"), "dose_e_per_px must be a finite number ≥ 0"),
    ],
)
def test_metadata_that_is_not_a_finite_positive_number_is_refused(
    tmp_path: Path, key: str, value: float, expected: str
) -> None:
    tifffile.imwrite(tmp_path / "a.tif", frames())
    refused(tmp_path, [tmp_path / "a.tif"], f"a.tif: {expected}", **{key: value})
    ingest([tmp_path / "a.tif"], tmp_path / "ok.zarr", dose_e_per_px=0.0, **META)  # 0: dose not known
    assert open_series(tmp_path / "ok.zarr").attrs["dose_e_per_px"] == 0.0


def test_an_hdf5_dataset_named_for_a_tiff_is_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", frames())
    refused(
        tmp_path,
        [tmp_path / "a.tif"],
        r"--h5-dataset /x: none of the inputs is an HDF5 file",
        h5_dataset="/x",
    )
