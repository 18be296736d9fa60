"""FEI/TIA ``.ser`` image series reader, element by element at the recorded offsets.

rosettasciio's TIA reader loads every element of a SER file into memory when it
opens it (even with ``lazy=True``), which would break ingest's bounded memory, so
lowdose reads SER itself: header, offset table, then each frame on demand. Layout
(little-endian): a 30-byte header (byte order 0x4949, series id 0x0197, version,
data type 0x4122 for images, tag type, total and valid element counts, offset-table
offset, number of dimensions), dimension records (size, calibration offset and
delta, element, description, units), the data offset table, and per element a
50-byte image header (x/y calibration, data type, size x, size y) followed by the
pixels, rows stored bottom-up.

Imports numpy and the standard library only; never dask or torch.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from lowdose.errors import FormatError
from lowdose.store.readers import TIME_TO_S, FrameSource, library_errors

SER_DTYPES = {1: "<u1", 2: "<u2", 3: "<u4", 4: "<i1", 5: "<i2", 6: "<i4", 7: "<f4", 8: "<f8"}
SER_IMAGE_HEADER = struct.Struct("<ddIddIHII")  # calibration x, y; data type; size x, y (50 bytes)
SER_IMAGE_DATA_TYPE_ID = 0x4122


class SerSource(FrameSource):
    """FEI/TIA ``.ser`` image series, read element by element at their recorded offsets."""

    def __init__(self, path: Path) -> None:
        with library_errors(str(path), "SER"), path.open("rb") as handle:
            size = path.stat().st_size
            head = handle.read(30)
            if len(head) < 30:
                raise FormatError(f"{path}: truncated SER header ({len(head)} bytes)")
            order, series_id, version, data_type_id, _, total, valid = struct.unpack("<HHHIIII", head[:22])
            if order != 0x4949 or series_id != 0x0197:
                raise FormatError(
                    f"{path}: not a TIA SER file (byte order {order:#x}, series id {series_id:#x})"
                )
            if data_type_id != SER_IMAGE_DATA_TYPE_ID:
                raise FormatError(f"{path}: SER holds data type {data_type_id:#x}; expected images (0x4122)")
            wide = version > 0x0210
            offset_format = "<Q" if wide else "<I"
            handle.seek(22)
            (offset_array,) = struct.unpack(offset_format, handle.read(struct.calcsize(offset_format)))
            (n_dims,) = struct.unpack("<I", handle.read(4))
            metadata: dict[str, float] = {}
            for _ in range(n_dims):
                _, _, delta, _, description_length = struct.unpack("<IddII", handle.read(28))
                handle.seek(description_length, 1)
                (units_length,) = struct.unpack("<I", handle.read(4))
                units = handle.read(units_length).decode("latin-1").strip().lower()
                if n_dims == 1 and units in TIME_TO_S and delta > 0:
                    metadata["frame_rate_hz"] = 1.0 / (delta * TIME_TO_S[units])
            if valid < 1 or valid > total or offset_array + valid * struct.calcsize(offset_format) > size:
                raise FormatError(f"{path}: SER header says {valid} valid of {total} elements")
            self._offsets = np.fromfile(
                handle, dtype=offset_format, count=valid, offset=offset_array - handle.tell()
            )
            if len(self._offsets) != valid:
                raise FormatError(f"{path}: truncated SER offset table ({len(self._offsets)} of {valid})")
            handle.seek(int(self._offsets[0]))
            header = SER_IMAGE_HEADER.unpack(handle.read(SER_IMAGE_HEADER.size))
            delta_x_m, data_type, size_x, size_y = header[1], header[6], header[7], header[8]
            if data_type not in SER_DTYPES:
                raise FormatError(f"{path}: SER element data type {data_type} not supported")
            dtype = np.dtype(SER_DTYPES[data_type])
            end = (
                self._offsets.astype("int64").max() + SER_IMAGE_HEADER.size + size_x * size_y * dtype.itemsize
            )
            if end > size:
                raise FormatError(f"{path}: truncated SER: frames need {end} bytes, file has {size}")
            if delta_x_m > 0:
                metadata["pixel_size_A"] = float(delta_x_m) * 1e10
            self._element = (data_type, size_x, size_y)
        super().__init__(path, "ser", int(valid), (int(size_y), int(size_x)), dtype, metadata)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return frames ``[start, stop)`` (TIA stores rows bottom-up; they are flipped)."""
        out = np.empty((stop - start, *self.frame_shape), dtype=self.dtype.newbyteorder("="))
        with library_errors(str(self.path), "SER", frame=start), self.path.open("rb") as handle:
            for i in range(start, stop):
                handle.seek(int(self._offsets[i]))
                header = SER_IMAGE_HEADER.unpack(handle.read(SER_IMAGE_HEADER.size))
                if (header[6], header[7], header[8]) != self._element:
                    raise self.fail(f"element header {header[6:]} differs from frame 0's {self._element}", i)
                pixels = np.fromfile(
                    handle, dtype=self.dtype, count=self.frame_shape[0] * self.frame_shape[1]
                )
                out[i - start] = pixels.reshape(self.frame_shape)[::-1]
        return out
