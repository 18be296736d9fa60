"""Tiny synthetic column images for the analysis tests (Gaussian blobs at known centres)."""

from __future__ import annotations

import numpy as np

PIXEL_SIZE_A = 0.061
SPACING_PX = 32.0
SIGMA_PX = 5.0


def render(
    shape: tuple[int, int], xy: np.ndarray, amplitude: float, base: float, sigma_px: float = SIGMA_PX
) -> np.ndarray:
    """``base`` plus a Gaussian of ``amplitude`` (may be negative) at every (x, y) in ``xy``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    img = np.full(shape, base, dtype=np.float64)
    for x, y in xy:
        img += amplitude * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma_px**2))
    return img


def grid(
    n_x: int, n_y: int, origin: tuple[float, float] = (24.3, 20.6), spacing: float = SPACING_PX
) -> np.ndarray:
    """(n, 2) centres (x, y) of an ``n_x × n_y`` rectangular grid, rows ordered by y then x."""
    ys, xs = np.mgrid[:n_y, :n_x].astype(np.float64)
    return np.stack([origin[0] + spacing * xs.ravel(), origin[1] + spacing * ys.ravel()], axis=1)


def particle_on_support(size: int = 256) -> tuple[np.ndarray, list[dict[str, object]]]:
    """A clean image of a 5 × 4 'Pt' block above a row of 'Ce' support columns, with ground truth."""
    pt = grid(5, 4, origin=(56.2, 40.4))
    support = grid(7, 1, origin=(24.0, 40.4 + 4 * SPACING_PX + 20.0))
    xy = np.concatenate([pt, support])
    image = render((size, size), xy, amplitude=0.5, base=0.45)
    rows: list[dict[str, object]] = []
    bottom = pt[:, 1].max()
    for x, y in pt:
        on_edge = x in (pt[:, 0].min(), pt[:, 0].max()) or y == pt[:, 1].min()
        corner = y == bottom and x in (pt[:, 0].min(), pt[:, 0].max())
        rows.append({"x_px": x, "y_px": y, "element": "Pt", "surface": bool(on_edge or corner)})
    for x, y in support:
        rows.append({"x_px": x, "y_px": y, "element": "Ce", "surface": False})
    return image, rows
