"""A minimal TIA SER writer for tests (no library writes SER)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_ser(path: Path, frames: np.ndarray, pixel_size_m: float, frame_interval_s: float) -> None:
    """Minimal TIA SER image series (version 0x0210, time tags), rows stored bottom-up."""
    import struct

    n, ny, nx = frames.shape
    data_type = {np.dtype("uint8"): 1, np.dtype("uint16"): 2, np.dtype("uint32"): 3}[frames.dtype]
    units = b"s"
    dims = struct.pack("<IddII", n, 0.0, frame_interval_s, 0, 0) + struct.pack("<I", len(units)) + units
    offset_table = 30 + len(dims)
    first = offset_table + 8 * n
    element = 50 + frames[0].nbytes + 8  # image header, pixels, time tag
    data_offsets = [first + i * element for i in range(n)]
    tag_offsets = [o + 50 + frames[0].nbytes for o in data_offsets]
    with path.open("wb") as f:
        f.write(struct.pack("<HHHIIIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, n, n, offset_table, 1))
        f.write(dims)
        f.write(np.asarray(data_offsets, "<u4").tobytes() + np.asarray(tag_offsets, "<u4").tobytes())
        for frame in frames:
            f.write(struct.pack("<ddIddIHII", 0.0, pixel_size_m, 0, 0.0, pixel_size_m, 0, data_type, nx, ny))
            f.write(np.ascontiguousarray(frame[::-1]).astype(frame.dtype.newbyteorder("<")).tobytes())
            f.write(struct.pack("<HHI", 0x4152, 0, 0))
