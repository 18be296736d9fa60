"""The analysis kernels on a real abTEM image: surface labels agree with the physics ground truth."""

import numpy as np
import pytest

from lowdose.analysis.columns import match_columns
from lowdose.analysis.frame import AnalysisConfig, analyze_frame
from lowdose.physics.imaging import simulate_structure
from lowdose.physics.structures import StructureParams


@pytest.fixture(scope="module")
def stack():  # type: ignore[no-untyped-def]
    params = StructureParams(particle="PtNp1", defect="D0", seed=1, lateral_nm=3.0, support_thickness_nm=3.0)
    return simulate_structure(params, [8.0], gpts=256)


@pytest.mark.slow
def test_clean_image_recovers_ground_truth_surface(stack) -> None:  # type: ignore[no-untyped-def]
    image = stack.images[0].astype(np.float64)
    truth = stack.columns
    raw = np.random.default_rng(0).poisson(image)
    for hull in ("convex", "alpha"):
        columns, row = analyze_frame(
            raw, image, pixel_size_A=stack.pixel_size_A, config=AnalysisConfig(hull=hull), ground_truth=truth
        )
        assert row["n_particle"] == int((truth["element"] == "Pt").sum())
        for name in ("surface_f1", "bulk_f1", "surface_jaccard", "bulk_jaccard"):
            assert row[name] == 1.0, (hull, name, row)
    # Detected Pt column centres sit within 0.2 Å of the projected atom positions.
    pt = truth[truth["element"] == "Pt"][["x_px", "y_px"]].to_numpy()
    found = columns[["x_px", "y_px"]].to_numpy()
    matched, _, _ = match_columns(found, pt, 0.6 / stack.pixel_size_A)
    err_A = np.linalg.norm(found[matched[:, 0]] - pt[matched[:, 1]], axis=1) * stack.pixel_size_A
    assert len(matched) == len(pt) and err_A.max() < 0.2


@pytest.mark.slow
def test_llr_separates_real_pt_columns_from_painted_ones(stack) -> None:  # type: ignore[no-untyped-def]
    image = stack.images[0].astype(np.float64)
    truth = stack.columns
    pt = truth[truth["element"] == "Pt"]
    rng = np.random.default_rng(1)
    # A 'denoiser' that paints a Pt-like column 2 Å above the particle, in vacuum.
    x0, y0 = float(pt["x_px"].mean()), float(pt["y_px"].min() - 2.0 / stack.pixel_size_A)
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    painted = image + 0.15 * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 5.0**2))
    real_llr, fake_llr = [], []
    for _ in range(6):
        raw = rng.poisson(image)
        columns, _ = analyze_frame(
            raw, painted, pixel_size_A=stack.pixel_size_A, config=AnalysisConfig(polarity="bright")
        )
        xy = columns[["x_px", "y_px"]].to_numpy()
        on_pt = match_columns(xy, pt[["x_px", "y_px"]].to_numpy(), 5.0)[0][:, 0]
        fake = np.flatnonzero(np.hypot(xy[:, 0] - x0, xy[:, 1] - y0) < 5.0)
        assert len(fake) == 1
        real_llr.append(float(np.median(columns["llr"].to_numpy()[on_pt])))
        fake_llr.append(float(columns["llr"].to_numpy()[fake[0]]))
    assert np.median(real_llr) > 0 > np.median(fake_llr)
