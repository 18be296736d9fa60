import numpy as np
import pandas as pd
import pytest

from lowdose.analysis.columns import (
    DETECTION_COLUMNS,
    choose_polarity,
    detect_columns,
    hull_area_px2,
    log_halo_px,
    match_columns,
    match_tolerance_px,
    set_scores,
    structure_scores,
    surface_flags,
)
from lowdose.errors import LowdoseInputError
from tests.unit.analysis.synthetic import PIXEL_SIZE_A, grid, render


def _nearest_distances(found: pd.DataFrame, truth: np.ndarray) -> np.ndarray:
    xy = found[["x_px", "y_px"]].to_numpy()
    return np.linalg.norm(xy[:, None, :] - truth[None, :, :], axis=2).min(axis=0)


@pytest.mark.parametrize("polarity", ["bright", "dark", "auto"])
def test_detects_lattice_within_tolerance(polarity: str) -> None:
    truth = grid(5, 4)
    amplitude = 0.4 if polarity != "dark" else -0.3
    image = render((160, 190), truth, amplitude=amplitude, base=0.45)
    if polarity == "auto":
        image = render((160, 190), truth, amplitude=-0.3, base=0.45)
        assert choose_polarity(image, PIXEL_SIZE_A) == "dark"
    found = detect_columns(image, PIXEL_SIZE_A, polarity=polarity)  # type: ignore[arg-type]
    assert list(found.columns) == list(DETECTION_COLUMNS)
    assert len(found) == len(truth)
    # Sub-pixel refinement: well inside the 0.6 Å (≈ 10 px) matching tolerance.
    assert _nearest_distances(found, truth).max() < 0.5
    assert np.all((found["sigma_px"] > 3) & (found["sigma_px"] < 8))


def test_wrong_polarity_finds_the_gaps_not_the_columns() -> None:
    truth = grid(4, 4)
    image = render((150, 150), truth, amplitude=0.4, base=0.45)
    found = detect_columns(image, PIXEL_SIZE_A, polarity="dark")
    assert len(found) == 0 or _nearest_distances(found, truth).min() > 5


def test_auto_polarity_on_noisy_bright_lattice() -> None:
    truth = grid(5, 5)
    clean = render((180, 180), truth, amplitude=0.4, base=0.45)
    noisy_smooth = clean + np.random.default_rng(0).normal(0, 0.02, clean.shape)
    assert choose_polarity(noisy_smooth, PIXEL_SIZE_A) == "bright"


def test_threshold_rejects_weak_blobs_and_flat_image() -> None:
    truth = grid(3, 1)
    image = render((80, 120), truth, amplitude=0.02, base=0.45)
    assert len(detect_columns(image, PIXEL_SIZE_A, threshold=0.02)) == 0
    assert len(detect_columns(image, PIXEL_SIZE_A, threshold=0.005)) == 3
    assert len(detect_columns(np.full((64, 64), 0.45), PIXEL_SIZE_A)) == 0


def test_min_separation_merges_close_blobs() -> None:
    pair = np.array([[40.0, 40.0], [52.0, 40.0]])  # 12 px ≈ 0.73 Å apart
    image = render((80, 100), pair, amplitude=0.5, base=0.0, sigma_px=3.5)
    assert len(detect_columns(image, PIXEL_SIZE_A, min_separation_A=0.5, sigma_A=(0.18, 0.3))) == 2
    assert len(detect_columns(image, PIXEL_SIZE_A, min_separation_A=1.2, sigma_A=(0.18, 0.3))) == 1


def test_halo_makes_tiled_detection_equal_whole_frame() -> None:
    truth = grid(6, 5)
    image = render((180, 220), truth, amplitude=0.4, base=0.45)
    whole = detect_columns(image, PIXEL_SIZE_A)
    halo = log_halo_px(PIXEL_SIZE_A)
    assert halo == int(np.ceil(4 * 0.45 / PIXEL_SIZE_A)) + 1
    split = 100
    left = detect_columns(image[:, : split + halo], PIXEL_SIZE_A)
    right = detect_columns(image[:, split - halo :], PIXEL_SIZE_A)
    right["x_px"] += split - halo
    tiled = pd.concat([left[left["x_px"] < split], right[right["x_px"] >= split]])

    # Same columns; values agree to FFT round-off (the two tiles are padded differently).
    def ordered(t: pd.DataFrame) -> pd.DataFrame:
        t = t.reset_index(drop=True)
        key = t[["y_px", "x_px"]].round(2)
        return t.loc[key.sort_values(["y_px", "x_px"]).index].reset_index(drop=True)

    pd.testing.assert_frame_equal(ordered(tiled), ordered(whole), rtol=0, atol=1e-6)


def test_detect_rejects_bad_input() -> None:
    with pytest.raises(LowdoseInputError, match="pixel_size_A"):
        detect_columns(np.zeros((8, 8)), 0.0)
    with pytest.raises(LowdoseInputError, match="2-D"):
        detect_columns(np.zeros((2, 8, 8)), 0.061)
    with pytest.raises(LowdoseInputError, match="polarity"):
        detect_columns(np.zeros((8, 8)), 0.061, polarity="grey")  # type: ignore[arg-type]


def test_match_tolerance_conversion() -> None:
    assert match_tolerance_px(0.061) == pytest.approx(9.836, abs=1e-3)


def test_match_empty_sets() -> None:
    m, up, ut = match_columns(np.zeros((0, 2)), [[1.0, 2.0]], 5.0)
    assert m.shape == (0, 2) and up.size == 0 and ut.tolist() == [0]
    m, up, ut = match_columns([[1.0, 2.0]], [], 5.0)
    assert m.shape == (0, 2) and up.tolist() == [0] and ut.size == 0


def test_match_is_one_to_one_and_inclusive() -> None:
    pred = [[0.0, 0.0], [0.5, 0.0]]
    true = [[0.2, 0.0]]
    m, up, ut = match_columns(pred, true, 1.0)
    assert m.tolist() == [[0, 0]] and up.tolist() == [1] and ut.size == 0
    # exactly at the tolerance still matches; just beyond does not
    assert len(match_columns([[0.0, 0.0]], [[3.0, 4.0]], 5.0)[0]) == 1
    assert len(match_columns([[0.0, 0.0]], [[3.0, 4.0]], 4.999)[0]) == 0
    # coincident points match
    assert match_columns([[1.0, 1.0]], [[1.0, 1.0]], 0.0)[0].tolist() == [[0, 0]]


def test_match_maximises_pairs_where_greedy_would_not() -> None:
    # Greedy nearest-first pairs pred 0 with true 1 (distance 1) and leaves both ends
    # unmatched; the optimal assignment pairs 0-0 and 1-1 (distances 2 and 2, tol 2.5).
    pred = [[0.0, 0.0], [3.0, 0.0]]
    true = [[-2.0, 0.0], [1.0, 0.0]]
    m, up, ut = match_columns(pred, true, 2.5)
    assert m.tolist() == [[0, 0], [1, 1]] and up.size == 0 and ut.size == 0


def test_match_rejects_bad_shapes() -> None:
    with pytest.raises(LowdoseInputError, match="pred_xy"):
        match_columns(np.zeros((3, 3)), np.zeros((1, 2)), 1.0)


def _square(n: int, spacing: float = 32.0) -> np.ndarray:
    return grid(n, n, origin=(0.0, 0.0), spacing=spacing)


def test_convex_hull_flags_whole_facets() -> None:
    xy = _square(5)
    flags = surface_flags(xy, "convex")
    border = (xy[:, 0] == 0) | (xy[:, 1] == 0) | (xy[:, 0] == 128) | (xy[:, 1] == 128)
    np.testing.assert_array_equal(flags, border)
    assert flags.sum() == 16


def test_alpha_shape_follows_a_concave_notch() -> None:
    # An L shape: the 5×5 square minus its 3×3 top-right block, as two arms 2 columns thick.
    xy = _square(5)
    keep = ~((xy[:, 0] >= 64) & (xy[:, 1] <= 64))
    xy = xy[keep]
    inner_corner = np.flatnonzero((xy[:, 0] == 32) & (xy[:, 1] == 96))
    notch_edge = np.flatnonzero((xy[:, 0] == 64) & (xy[:, 1] == 96))
    convex = surface_flags(xy, "convex")
    alpha = surface_flags(xy, "alpha", alpha_px=40.0)
    assert not convex[notch_edge].any()  # inside the convex hull
    assert alpha[notch_edge].all()  # on the notch's boundary
    assert alpha.sum() == len(xy) - len(inner_corner)  # two-thick arms: all surface but the corner
    assert not alpha[inner_corner].any()
    # An alpha radius larger than any triangle is the convex hull again.
    np.testing.assert_array_equal(surface_flags(xy, "alpha", alpha_px=1e6, edge_tol_px=0), convex & True)


def test_surface_flags_small_and_degenerate_sets() -> None:
    assert surface_flags(np.zeros((0, 2))).shape == (0,)
    assert surface_flags([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]).all()
    assert surface_flags([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], "alpha").all()
    with pytest.raises(LowdoseInputError, match="method"):
        surface_flags(_square(3), "graham")  # type: ignore[arg-type]


def test_hull_area() -> None:
    xy = _square(3, spacing=10.0)
    assert hull_area_px2(xy, "convex") == pytest.approx(400.0)
    assert hull_area_px2(xy, "alpha", alpha_px=20.0) == pytest.approx(400.0)
    assert hull_area_px2(xy[:2]) == 0.0


def test_set_scores_counts_and_empty_conventions() -> None:
    true = _square(3)
    pred = np.concatenate([true[:-1] + 1.0, [[500.0, 500.0]]])  # 8 hits, 1 miss, 1 false positive
    s = set_scores(pred, true, 5.0)
    assert s["precision"] == pytest.approx(8 / 9) and s["recall"] == pytest.approx(8 / 9)
    assert s["f1"] == pytest.approx(8 / 9) and s["jaccard"] == pytest.approx(8 / 10)
    assert set_scores([], [], 1.0) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "jaccard": 1.0}
    assert set_scores([], [[0.0, 0.0]], 1.0)["recall"] == 0.0
    assert set_scores([[0.0, 0.0]], [], 1.0)["precision"] == 0.0


def test_structure_scores_split_surface_and_bulk() -> None:
    xy = _square(4)
    surf = surface_flags(xy)
    perfect = structure_scores(xy + 0.5, surf, xy, surf, 2.0)
    assert all(v == 1.0 for v in perfect.values()) and len(perfect) == 8
    # Call one surface column bulk: the surface set loses it (recall), the bulk set gains a false positive.
    wrong = surf.copy()
    wrong[np.flatnonzero(surf)[0]] = False
    s = structure_scores(xy, wrong, xy, surf, 2.0)
    assert s["surface_precision"] == 1.0 and s["surface_recall"] == pytest.approx(11 / 12)
    assert s["bulk_recall"] == 1.0 and s["bulk_precision"] == pytest.approx(4 / 5)
    with pytest.raises(LowdoseInputError, match="flag"):
        structure_scores(xy, surf[:-1], xy, surf, 2.0)


def test_fourier_log_matches_scipy_gaussian_laplace() -> None:
    from scipy import ndimage

    from lowdose.analysis.columns import log_stack

    rng = np.random.default_rng(0)
    image = render((90, 110), grid(3, 3), amplitude=0.4, base=0.45) + rng.normal(0, 0.05, (90, 110))
    sigmas = [3.3, 5.0, 7.4]
    got = log_stack(image, sigmas)
    want = np.stack([-(s**2) * ndimage.gaussian_laplace(image, s, mode="reflect") for s in sigmas])
    assert np.abs(got - want).max() < 0.005 * np.abs(want).max()


def test_best_scale_equals_argmax_including_ties() -> None:
    from lowdose.analysis.columns import _best_scale

    rng = np.random.default_rng(1)
    stack = rng.integers(0, 4, size=(5, 40, 50)).astype(np.float64)  # many ties between scales
    best, response = _best_scale(stack)
    np.testing.assert_array_equal(best, np.argmax(stack, axis=0))
    np.testing.assert_array_equal(response, stack.max(axis=0))


def test_log_stack_reuses_transfer_functions_exactly() -> None:
    """The cached transfer functions give bit-identical responses to computing them afresh."""
    import math

    from scipy import fft as sfft

    from lowdose.analysis.columns import _log_transfer, log_stack

    rng = np.random.default_rng(2)
    image = render((70, 90), grid(2, 2), amplitude=0.4, base=0.45) + rng.normal(0, 0.05, (70, 90))
    sigmas = [3.3, 5.0, 7.4]
    first, second = log_stack(image, sigmas), log_stack(image, sigmas)
    pad = math.ceil(4.0 * 7.4)
    shape = tuple(sfft.next_fast_len(n + 2 * pad, real=True) for n in image.shape)
    padded = np.pad(
        image,
        ((pad, shape[0] - 70 - pad), (pad, shape[1] - 90 - pad)),
        mode="symmetric",
    )
    q2 = np.fft.fftfreq(shape[0])[:, None] ** 2 + np.fft.rfftfreq(shape[1])[None, :] ** 2
    for k, s in enumerate(sigmas):
        transfer = (s**2) * 4.0 * np.pi**2 * q2 * np.exp(-2.0 * np.pi**2 * s**2 * q2)
        want = sfft.irfft2(sfft.rfft2(padded) * transfer, s=shape)[pad : pad + 70, pad : pad + 90]
        np.testing.assert_array_equal(first[k], want)
    np.testing.assert_array_equal(first, second)
    assert not _log_transfer(shape, tuple(sigmas)).flags.writeable
