"""Atomic columns: Laplacian-of-Gaussian detection, matching, surface hull and scores.

The paper (Vincent et al. 2021, Fig. 5) locates Pt columns by Laplacian-of-Gaussian
blob detection (Kong et al. 2013), calls the columns on the hull of the detected set
the *surface* (Graham scan → convex hull; the authors' code used a concave alpha shape
of α ≈ 40 px), and scores precision, recall, F1 and Jaccard separately on the surface
set and the bulk set, two columns matching when their centres are within ≈ 0.6 Å.
All lengths have a pixel form (``_px``) and a physical form (``_A``, ångström).

numpy/scipy/scikit-image/pandas only: never import dask or torch here.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import fft as sfft
from scipy import optimize, spatial
from skimage.feature import peak_local_max

from lowdose.errors import LowdoseInputError

Polarity = Literal["bright", "dark", "auto"]
HullMethod = Literal["convex", "alpha"]

DEFAULT_SIGMA_A: tuple[float, float] = (0.2, 0.45)
"""LoG scale range (Gaussian σ, Å): a projected Pt column image is ≈ 0.3–0.5 Å in radius."""
DEFAULT_MIN_SEPARATION_A = 1.2
"""Smallest centre distance kept between two columns (Pt [110] neighbours are ≥ 1.96 Å apart)."""
DEFAULT_MATCH_TOLERANCE_A = 0.6
"""Two columns are the same column when their centres are within this distance (paper code)."""
DETECTION_COLUMNS = ("x_px", "y_px", "sigma_px", "intensity")
"""Columns of the table :func:`detect_columns` returns."""


def match_tolerance_px(pixel_size_A: float, tolerance_A: float = DEFAULT_MATCH_TOLERANCE_A) -> float:
    """Convert a matching tolerance in ångström to pixels."""
    _check_pixel_size(pixel_size_A)
    return tolerance_A / pixel_size_A


def sigma_range_px(
    pixel_size_A: float, sigma_A: tuple[float, float] = DEFAULT_SIGMA_A, num_sigma: int = 4
) -> npt.NDArray[np.float64]:
    """The LoG scales (Gaussian σ in pixels) used for a pixel size, smallest first."""
    _check_pixel_size(pixel_size_A)
    lo, hi = sigma_A
    if not 0 < lo <= hi:
        raise LowdoseInputError(f"sigma_A: expected 0 < min <= max, got {sigma_A}")
    if num_sigma < 1:
        raise LowdoseInputError(f"num_sigma: expected >= 1, got {num_sigma}")
    return np.linspace(lo / pixel_size_A, hi / pixel_size_A, num_sigma)


def log_halo_px(
    pixel_size_A: float, sigma_A: tuple[float, float] = DEFAULT_SIGMA_A, truncate: float = 4.0
) -> int:
    """Halo (pixels) a chunked LoG needs so that tiled detection equals whole-frame detection.

    It is the radius of the largest Gaussian-Laplacian kernel (``truncate`` × the largest σ,
    scipy's default truncation), rounded up, plus one pixel for the local-maximum test.
    """
    largest = float(sigma_range_px(pixel_size_A, sigma_A)[-1])
    return math.ceil(truncate * largest) + 1


def log_stack(
    image: npt.ArrayLike, sigmas_px: npt.ArrayLike, truncate: float = 4.0
) -> npt.NDArray[np.float64]:
    """Scale-normalised LoG responses ``-σ² ∇²(G_σ * image)``, one slice per σ (bright blobs > 0).

    Computed in Fourier space (one forward FFT shared by all scales, the analytic transfer
    function ``-σ² · 4π²q² · exp(-2π²σ²q²)`` per scale) on the image mirror-padded by
    ``truncate`` × the largest σ, so the borders behave like scipy's
    ``gaussian_laplace(mode="reflect")``; the analytic (continuous) Gaussian differs from
    scipy's sampled kernel by < 0.5 % of the peak response at σ ≥ 3 px, at a fraction of
    the cost of the spatial convolutions.
    """
    img = np.asarray(image, dtype=np.float64)
    sig = np.asarray(sigmas_px, dtype=np.float64).reshape(-1)
    pad = min(math.ceil(truncate * float(sig.max())), *img.shape) if img.size else 0
    # numpy's "symmetric" padding repeats the edge pixel, like ndimage's "reflect"; the
    # far side is padded on to a fast FFT length (prime sizes are slow).
    shape = tuple(sfft.next_fast_len(n + 2 * pad, real=True) for n in img.shape)
    padded = np.pad(
        img, ((pad, shape[0] - img.shape[0] - pad), (pad, shape[1] - img.shape[1] - pad)), mode="symmetric"
    )
    spectrum = sfft.rfft2(padded)
    transfer = _log_transfer((shape[0], shape[1]), tuple(float(s) for s in sig))
    out = np.empty((len(sig), *img.shape))
    for k in range(len(sig)):
        full = sfft.irfft2(spectrum * transfer[k], s=shape)
        out[k] = full[pad : pad + img.shape[0], pad : pad + img.shape[1]]
    return out


@functools.lru_cache(maxsize=16)
def _log_transfer(shape: tuple[int, int], sigmas: tuple[float, ...]) -> npt.NDArray[np.float64]:
    # The LoG transfer functions of an rfft2 grid, one per scale (read-only, cached: every
    # frame of a series has the same padded shape, and the exponentials cost as much as an FFT).
    qy = np.fft.fftfreq(shape[0])[:, None]
    qx = np.fft.rfftfreq(shape[1])[None, :]
    q2 = qy**2 + qx**2
    out = np.empty((len(sigmas), *q2.shape))
    for k, s in enumerate(sigmas):
        out[k] = (s**2) * 4.0 * np.pi**2 * q2 * np.exp(-2.0 * np.pi**2 * s**2 * q2)
    out.flags.writeable = False
    return out


def choose_polarity(
    image: npt.ArrayLike,
    pixel_size_A: float,
    sigma_A: tuple[float, float] = DEFAULT_SIGMA_A,
    num_sigma: int = 4,
    percentile: float = 99.9,
) -> Literal["bright", "dark"]:
    """Guess whether columns are brighter or darker than their surroundings.

    Compares the strongest blob responses of the two polarities: the ``percentile`` of
    the best-scale LoG response for bright blobs against the same for dark blobs (the
    response of a lattice of bright columns has tall peaks at the columns, while the
    gaps between them give only shallow dark "blobs"). On abTEM images of Pt/CeO2 this
    picked the right answer for black, mixed and white contrast; it is still a
    heuristic: state ``polarity`` when it is known, and pass the particle's region
    rather than a frame dominated by the support.
    """
    return _polarity_of(log_stack(image, sigma_range_px(pixel_size_A, sigma_A, num_sigma)), percentile)


def _polarity_of(stack: npt.NDArray[np.float64], percentile: float = 99.9) -> Literal["bright", "dark"]:
    bright = float(np.percentile(stack.max(axis=0), percentile))
    dark = float(np.percentile(-stack.min(axis=0), percentile))  # = max of -stack, without the copy
    return "bright" if bright >= dark else "dark"


def detect_columns(
    image: npt.ArrayLike,
    pixel_size_A: float,
    *,
    polarity: Polarity = "bright",
    min_separation_A: float = DEFAULT_MIN_SEPARATION_A,
    threshold: float = 0.02,
    threshold_rel: float = 0.0,
    sigma_A: tuple[float, float] = DEFAULT_SIGMA_A,
    num_sigma: int = 4,
    exclude_border_px: int = 0,
) -> pd.DataFrame:
    """Find atomic columns by scale-normalised Laplacian-of-Gaussian blob detection.

    The response ``-σ² ∇²(G_σ * image)`` is computed at ``num_sigma`` scales between
    ``sigma_A``; each pixel keeps its best scale, and columns are the local maxima of that
    response at least ``min_separation_A`` apart and above the threshold. For a Gaussian
    column of amplitude ``A`` above its surroundings the response at the matching scale is
    ``A / 2``, so ``threshold`` is half the smallest column contrast worth reporting, in
    the image's units (expected counts per pixel for a denoised frame).

    Parameters
    ----------
    image
        One 2-D frame, usually the denoised one.
    pixel_size_A
        Pixel size in ångström.
    polarity
        ``"bright"`` (columns brighter than surroundings), ``"dark"`` or ``"auto"``
        (:func:`choose_polarity` on this image).
    min_separation_A
        Minimum distance between two detected centres.
    threshold
        Absolute minimum of the LoG response (image units).
    threshold_rel
        Also require a response ≥ ``threshold_rel`` × the largest response in the frame.
    sigma_A
        (smallest, largest) Gaussian σ of the scales searched, Å.
    num_sigma
        Number of scales.
    exclude_border_px
        Drop maxima closer than this to the frame edge.

    Returns
    -------
    pandas.DataFrame
        Columns ``x_px, y_px`` (centre, pixels, float), ``sigma_px`` (best scale) and
        ``intensity`` (the image value at the centre), one row per column, sorted by
        ``(y_px, x_px)``.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:64, :64]
    >>> img = np.exp(-((yy - 30) ** 2 + (xx - 20) ** 2) / (2 * 5.0**2))
    >>> detect_columns(img, 0.061)[["x_px", "y_px"]].to_numpy().tolist()
    [[20.0, 30.0]]
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise LowdoseInputError(f"image: expected a 2-D frame, got shape {img.shape}")
    sigmas = sigma_range_px(pixel_size_A, sigma_A, num_sigma)
    if polarity not in ("bright", "dark", "auto"):
        raise LowdoseInputError(f"polarity: expected 'bright', 'dark' or 'auto', got {polarity!r}")
    stack = log_stack(img, sigmas)
    if polarity == "auto":
        polarity = _polarity_of(stack)
    if polarity == "dark":
        stack = -stack
    best, response = _best_scale(stack)
    min_distance = max(1, round(min_separation_A / pixel_size_A))
    floor = threshold
    if threshold_rel > 0 and response.size:
        floor = max(floor, threshold_rel * float(response.max()))
    peaks = peak_local_max(
        response,
        min_distance=min_distance,
        threshold_abs=floor,
        exclude_border=exclude_border_px if exclude_border_px > 0 else False,
        p_norm=2,
    )
    peaks = peaks[response[peaks[:, 0], peaks[:, 1]] > floor] if len(peaks) else peaks
    order = np.lexsort((peaks[:, 1], peaks[:, 0])) if len(peaks) else np.zeros(0, dtype=int)
    peaks = peaks[order]
    ys, xs = (peaks[:, 0], peaks[:, 1]) if len(peaks) else (np.zeros(0, int), np.zeros(0, int))
    return pd.DataFrame(
        {
            "x_px": xs + _parabolic_offset(response, ys, xs, axis=1),
            "y_px": ys + _parabolic_offset(response, ys, xs, axis=0),
            "sigma_px": sigmas[best[ys, xs]].astype(np.float64),
            "intensity": img[ys, xs].astype(np.float64),
        },
        columns=list(DETECTION_COLUMNS),
    )


def _best_scale(stack: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """``argmax`` over the scale axis and the maximum there (the first scale wins ties).

    The same as ``np.argmax(stack, axis=0)`` and ``take_along_axis`` for NaN-free stacks,
    several times faster: the scale axis is the outer one, so this runs over whole slices.
    """
    response = stack[0].copy()
    best = np.zeros(response.shape, dtype=np.intp)
    for k in range(1, stack.shape[0]):
        better = stack[k] > response
        best[better] = k
        np.maximum(response, stack[k], out=response)
    return best, response


def match_columns(
    pred_xy: npt.ArrayLike, true_xy: npt.ArrayLike, tol_px: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Pair predicted with true columns one-to-one within a tolerance.

    The pairing is an optimal assignment (Hungarian algorithm,
    :func:`scipy.optimize.linear_sum_assignment`): among all one-to-one pairings whose
    pairs are at most ``tol_px`` apart it takes one with the **most** pairs and, among
    those, the smallest summed distance. (Pairs farther than the tolerance cost more
    than any set of admissible pairs, so the solver never trades a pair away.)

    Parameters
    ----------
    pred_xy, true_xy
        ``(n, 2)`` and ``(m, 2)`` column centres (x, y) in pixels.
    tol_px
        Largest centre distance of a match, pixels (inclusive).

    Returns
    -------
    matched, unmatched_pred, unmatched_true
        ``(k, 2)`` int array of ``(pred index, true index)`` pairs sorted by pred index,
        and the sorted indices left unmatched on each side.
    """
    pred = _as_xy(pred_xy, "pred_xy")
    true = _as_xy(true_xy, "true_xy")
    if not tol_px >= 0:
        raise LowdoseInputError(f"tol_px: expected a non-negative distance, got {tol_px}")
    empty = np.zeros((0, 2), dtype=np.intp)
    if len(pred) == 0 or len(true) == 0:
        return empty, np.arange(len(pred), dtype=np.intp), np.arange(len(true), dtype=np.intp)
    # Only pairs within the tolerance matter: solve the assignment on those rows/columns.
    neighbours = spatial.cKDTree(pred).query_ball_point(true, r=tol_px)
    pairs = [(i, j) for j, near in enumerate(neighbours) for i in near]
    matched_list: list[tuple[int, int]] = []
    if pairs:
        rows = np.array([p[0] for p in pairs], dtype=np.intp)
        cols = np.array([p[1] for p in pairs], dtype=np.intp)
        dist = np.linalg.norm(pred[rows] - true[cols], axis=1)
        used_p, r_local = np.unique(rows, return_inverse=True)
        used_t, c_local = np.unique(cols, return_inverse=True)
        big = (tol_px + 1.0) * (min(len(used_p), len(used_t)) + 1)
        cost = np.full((len(used_p), len(used_t)), big)
        cost[r_local, c_local] = dist
        r_idx, c_idx = optimize.linear_sum_assignment(cost)
        keep = cost[r_idx, c_idx] <= tol_px
        matched_list = [
            (int(used_p[r]), int(used_t[c])) for r, c in zip(r_idx[keep], c_idx[keep], strict=True)
        ]
    matched = np.array(sorted(matched_list), dtype=np.intp).reshape(-1, 2)
    unmatched_pred = np.setdiff1d(np.arange(len(pred)), matched[:, 0]).astype(np.intp)
    unmatched_true = np.setdiff1d(np.arange(len(true)), matched[:, 1]).astype(np.intp)
    return matched, unmatched_pred, unmatched_true


def surface_flags(
    xy: npt.ArrayLike,
    method: HullMethod = "convex",
    alpha_px: float = 40.0,
    edge_tol_px: float = 2.0,
) -> npt.NDArray[np.bool_]:
    """Flag the columns on the outline of a particle.

    Parameters
    ----------
    xy
        ``(n, 2)`` centres (x, y) of the particle's columns, pixels.
    method
        ``"convex"``: columns on the convex hull (the paper's Graham scan). Columns on a
        flat facet are collinear, so every column within ``edge_tol_px`` of a hull edge
        counts, not only the hull's corner vertices. ``"alpha"``: columns on the boundary
        of the concave alpha shape: the union of the Delaunay triangles whose circumradius
        is below ``alpha_px``; a column is on the surface when it lies on an edge used by
        exactly one kept triangle or belongs to no kept triangle.
    alpha_px
        Circumradius limit of the alpha shape, pixels (paper code: ≈ 40 px at 0.061 Å/px).
    edge_tol_px
        Distance to a convex-hull edge still counted as on it, pixels.

    Returns
    -------
    numpy.ndarray
        Boolean array of length ``n``; with fewer than 4 columns (or all collinear) every
        column is a surface column.
    """
    pts = _as_xy(xy, "xy")
    n = len(pts)
    if n < 4 or _collinear(pts):
        return np.ones(n, dtype=bool)
    if method == "convex":
        hull = spatial.ConvexHull(pts)
        # hull.equations rows are (unit normal, offset): |n·p + b| is the distance to an edge line.
        distances = np.abs(pts @ hull.equations[:, :2].T + hull.equations[:, 2])
        return np.asarray(distances.min(axis=1) <= edge_tol_px)
    if method == "alpha":
        tri = spatial.Delaunay(pts)
        kept = tri.simplices[_circumradius(pts, tri.simplices) < alpha_px]
        flags = np.ones(n, dtype=bool)
        if len(kept) == 0:
            return flags
        flags[:] = False
        in_kept = np.zeros(n, dtype=bool)
        in_kept[kept.ravel()] = True
        edges = np.sort(np.concatenate([kept[:, [0, 1]], kept[:, [1, 2]], kept[:, [0, 2]]]), axis=1)
        unique, counts = np.unique(edges, axis=0, return_counts=True)
        flags[unique[counts == 1].ravel()] = True
        flags[~in_kept] = True
        return flags
    raise LowdoseInputError(f"method: expected 'convex' or 'alpha', got {method!r}")


def hull_area_px2(xy: npt.ArrayLike, method: HullMethod = "convex", alpha_px: float = 40.0) -> float:
    """Area enclosed by the particle's columns (convex hull or alpha shape), pixels²."""
    pts = _as_xy(xy, "xy")
    if len(pts) < 3 or _collinear(pts):
        return 0.0
    if method == "convex":
        return float(spatial.ConvexHull(pts).volume)
    if method == "alpha":
        tri = spatial.Delaunay(pts)
        kept = tri.simplices[_circumradius(pts, tri.simplices) < alpha_px]
        a, b, c = pts[kept[:, 0]], pts[kept[:, 1]], pts[kept[:, 2]]
        cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        return float(np.abs(cross).sum() / 2.0)
    raise LowdoseInputError(f"method: expected 'convex' or 'alpha', got {method!r}")


SCORE_NAMES = tuple(
    f"{part}_{metric}" for part in ("surface", "bulk") for metric in ("precision", "recall", "f1", "jaccard")
)
"""Keys of :func:`structure_scores`."""


def set_scores(pred_xy: npt.ArrayLike, true_xy: npt.ArrayLike, tol_px: float) -> dict[str, float]:
    """Precision, recall, F1 and Jaccard of one predicted column set against a true set.

    True positives are the one-to-one matches of :func:`match_columns`. Empty sets:
    precision is 1 when nothing is predicted and nothing is true (0 when something is
    true); recall is 1 when nothing is true; F1 is the harmonic mean (0 when both are 0);
    Jaccard ``TP / (|pred| + |true| - TP)`` is 1 when both sets are empty.
    """
    pred = _as_xy(pred_xy, "pred_xy")
    true = _as_xy(true_xy, "true_xy")
    tp = len(match_columns(pred, true, tol_px)[0])
    n_pred, n_true = len(pred), len(true)
    precision = tp / n_pred if n_pred else (1.0 if n_true == 0 else 0.0)
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    union = n_pred + n_true - tp
    jaccard = tp / union if union else 1.0
    return {"precision": precision, "recall": recall, "f1": f1, "jaccard": jaccard}


def structure_scores(
    pred_xy: npt.ArrayLike,
    pred_surface: npt.ArrayLike,
    true_xy: npt.ArrayLike,
    true_surface: npt.ArrayLike,
    tol_px: float,
) -> dict[str, float]:
    """Surface and bulk precision/recall/F1/Jaccard, as in the paper's Fig. 5.

    The predicted and the true columns are each split by their own surface flag; the
    predicted surface set is then scored against the true surface set and the predicted
    bulk set against the true bulk set (:func:`set_scores`), matching one-to-one within
    ``tol_px``. A column that is found but put on the wrong side of the hull therefore
    counts as a false positive on one side and a miss on the other.

    Returns
    -------
    dict
        ``surface_precision, surface_recall, surface_f1, surface_jaccard`` and the same
        four for ``bulk_`` (keys :data:`SCORE_NAMES`).
    """
    pred = _as_xy(pred_xy, "pred_xy")
    true = _as_xy(true_xy, "true_xy")
    ps = np.asarray(pred_surface, dtype=bool).reshape(-1)
    ts = np.asarray(true_surface, dtype=bool).reshape(-1)
    if len(ps) != len(pred) or len(ts) != len(true):
        raise LowdoseInputError("surface flags: expected one flag per column")
    out: dict[str, float] = {}
    for part, p_sel, t_sel in (("surface", ps, ts), ("bulk", ~ps, ~ts)):
        for metric, value in set_scores(pred[p_sel], true[t_sel], tol_px).items():
            out[f"{part}_{metric}"] = float(value)
    return out


def _as_xy(xy: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise LowdoseInputError(f"{name}: expected an (n, 2) array of (x, y), got shape {arr.shape}")
    return arr


def _collinear(pts: npt.NDArray[np.float64]) -> bool:
    centred = pts - pts.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    return bool(singular[-1] <= 1e-9 * max(singular[0], 1.0))


def _circumradius(pts: npt.NDArray[np.float64], simplices: npt.NDArray[np.intc]) -> npt.NDArray[np.float64]:
    a, b, c = pts[simplices[:, 0]], pts[simplices[:, 1]], pts[simplices[:, 2]]
    la = np.linalg.norm(b - c, axis=1)
    lb = np.linalg.norm(a - c, axis=1)
    lc = np.linalg.norm(a - b, axis=1)
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    area2 = np.abs(cross)
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = np.where(area2 > 0, la * lb * lc / (2.0 * area2), np.inf)
    return np.asarray(radius, dtype=np.float64)


def _parabolic_offset(
    response: npt.NDArray[np.float64], ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp], axis: int
) -> npt.NDArray[np.float64]:
    # Sub-pixel centre: vertex of the parabola through the peak and its two neighbours.
    if len(ys) == 0:
        return np.zeros(0)
    size = response.shape[axis]
    pos = ys if axis == 0 else xs
    lo = np.clip(pos - 1, 0, size - 1)
    hi = np.clip(pos + 1, 0, size - 1)
    centre = response[ys, xs]
    left = response[lo, xs] if axis == 0 else response[ys, lo]
    right = response[hi, xs] if axis == 0 else response[ys, hi]
    curvature = left - 2 * centre + right
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    inside = (pos > 0) & (pos < size - 1)
    return np.where(inside, np.clip(offset, -0.5, 0.5), 0.0).astype(np.float64)


def _check_pixel_size(pixel_size_A: float) -> None:
    try:
        ok = math.isfinite(float(pixel_size_A)) and float(pixel_size_A) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise LowdoseInputError(f"pixel_size_A: expected a positive number of ångström, got {pixel_size_A!r}")
