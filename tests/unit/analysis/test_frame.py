import numpy as np
import pandas as pd
import pytest

from lowdose.analysis.frame import AnalysisConfig, analyze_frame, particle_surface
from lowdose.config import config_class, validate_config
from lowdose.errors import ConfigError, LowdoseInputError
from lowdose.store.schema import COLUMN_TABLE_COLUMNS, FRAME_TABLE_COLUMNS
from tests.unit.analysis.synthetic import PIXEL_SIZE_A, grid, particle_on_support


@pytest.fixture(scope="module")
def frame_pair() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    clean, rows = particle_on_support()
    raw = np.random.default_rng(11).poisson(clean).astype(np.uint8)
    return raw, clean, pd.DataFrame(rows)


def test_tables_follow_the_schema(frame_pair: tuple[np.ndarray, np.ndarray, pd.DataFrame]) -> None:
    raw, den, _ = frame_pair
    columns, row = analyze_frame(raw, den, pixel_size_A=PIXEL_SIZE_A, frame=7)
    assert tuple(columns.columns) == COLUMN_TABLE_COLUMNS
    assert set(FRAME_TABLE_COLUMNS) - {"time_s"} <= set(row)
    assert (columns["frame"] == 7).all() and row["frame"] == 7
    assert row["counts"] == int(raw.sum())
    assert row["n_columns"] == len(columns) == 27  # 20 'Pt' + 7 'Ce'
    assert row["n_real"] + row["n_undecided"] + row["n_spurious"] == row["n_columns"]
    assert set(columns["verdict"]) <= {"real", "undecided", "spurious"}
    assert columns["surface"].dtype == bool
    # No region given: every column is the particle's, so the hull spans support and particle.
    assert row["n_particle"] == 27


def test_scores_with_ground_truth_are_perfect_on_clean_columns(
    frame_pair: tuple[np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    raw, den, truth = frame_pair
    _, row = analyze_frame(raw, den, pixel_size_A=PIXEL_SIZE_A, ground_truth=truth)
    # The box of the true Pt columns leaves the 'Ce' support row out of the particle.
    assert row["n_particle"] == 20
    assert row["n_surface"] == int(truth["surface"].sum()) == 5 + 2 * 3  # top row + two sides
    for name in ("surface", "bulk"):
        for metric in ("precision", "recall", "f1", "jaccard"):
            assert row[f"{name}_{metric}"] == 1.0
    # 4 × 3 spacings of 32 px, in Å²
    assert row["particle_area_A2"] == pytest.approx(128 * 96 * PIXEL_SIZE_A**2, rel=0.02)
    # Clean-image 'denoised' columns with enough counts are real.
    assert row["n_real"] >= 15


def test_support_cut_and_roi_select_the_same_particle(
    frame_pair: tuple[np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    raw, den, truth = frame_pair
    cut = AnalysisConfig(support_top_y_px=float(truth.query("element == 'Ce'")["y_px"].min()) - 10)
    roi = AnalysisConfig(particle_roi_px=(30.0, 210.0, 0.0, 150.0))
    a, row_a = analyze_frame(raw, den, pixel_size_A=PIXEL_SIZE_A, config=cut)
    b, row_b = analyze_frame(raw, den, pixel_size_A=PIXEL_SIZE_A, config=roi)
    assert row_a["n_particle"] == row_b["n_particle"] == 20
    pd.testing.assert_series_equal(a["surface"], b["surface"])


def test_interface_row_is_not_surface_except_corners() -> None:
    xy = grid(5, 3, origin=(0.0, 0.0))
    with_interface = particle_surface(xy, AnalysisConfig(), PIXEL_SIZE_A)
    free = particle_surface(xy, AnalysisConfig(exclude_interface=False), PIXEL_SIZE_A)
    bottom_inner = (xy[:, 1] == xy[:, 1].max()) & (xy[:, 0] > 0) & (xy[:, 0] < xy[:, 0].max())
    assert free[bottom_inner].all() and not with_interface[bottom_inner].any()
    np.testing.assert_array_equal(with_interface[~bottom_inner], free[~bottom_inner])


def test_spurious_column_painted_by_denoiser(frame_pair: tuple[np.ndarray, np.ndarray, pd.DataFrame]) -> None:
    _, den, _ = frame_pair
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[: den.shape[0], : den.shape[1]]
    fake = den + 1.5 * np.exp(-((yy - 200) ** 2 + (xx - 230) ** 2) / (2 * 5.0**2))  # over vacuum
    raws = [rng.poisson(den) for _ in range(8)]
    llrs = []
    for r in raws:
        columns, _ = analyze_frame(
            r, fake, pixel_size_A=PIXEL_SIZE_A, config=AnalysisConfig(polarity="bright")
        )
        hit = columns[(columns["x_px"] - 230).abs().lt(3) & (columns["y_px"] - 200).abs().lt(3)]
        assert len(hit) == 1
        llrs.append(float(hit["llr"].iloc[0]))
    assert np.median(llrs) < -0.006


def test_lambda_vac_estimate(frame_pair: tuple[np.ndarray, np.ndarray, pd.DataFrame]) -> None:
    raw, den, _ = frame_pair
    _, row = analyze_frame(raw, den, pixel_size_A=PIXEL_SIZE_A, config=AnalysisConfig(lambda_vac="estimate"))
    assert row["lambda_vac"] == pytest.approx(0.45, rel=0.1)


def test_config_registered_and_strict() -> None:
    assert config_class("analysis") is AnalysisConfig
    cfg = validate_config(
        AnalysisConfig, {"hull": "alpha", "lambda_vac": "estimate", "particle_roi_px": [0, 10, 0, 10]}
    )
    assert cfg.hull == "alpha" and cfg.particle_roi_px == (0.0, 10.0, 0.0, 10.0)
    assert validate_config(AnalysisConfig, AnalysisConfig().model_dump(mode="json")) == AnalysisConfig()
    for bad in (
        {"hull": "graham"},
        {"lambda_vac": -1.0},
        {"llr_radius_A": 0.8},
        {"sigma_min_A": 0.5, "sigma_max_A": 0.3},
        {"real_threshold": -0.01},
        {"particle_roi_px": [10, 0, 0, 10]},
        {"unknown_key": 1},
    ):
        with pytest.raises(ConfigError):
            validate_config(AnalysisConfig, bad, "analysis.yaml")


def test_bad_frames() -> None:
    with pytest.raises(LowdoseInputError, match="shape"):
        analyze_frame(np.zeros((8, 8)), np.zeros((8, 9)), pixel_size_A=PIXEL_SIZE_A)
    with pytest.raises(LowdoseInputError, match="ground_truth"):
        analyze_frame(
            np.zeros((32, 32)),
            np.zeros((32, 32)),
            pixel_size_A=PIXEL_SIZE_A,
            ground_truth=pd.DataFrame({"x_px": []}),
        )


def test_match_ground_truth_splits_real_and_spurious(
    frame_pair: tuple[np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    from lowdose.analysis.frame import match_ground_truth

    raw, den, truth = frame_pair
    columns, _ = analyze_frame(raw, den, pixel_size_A=PIXEL_SIZE_A)
    extra = pd.DataFrame({"x_px": [240.0], "y_px": [10.0]})
    both = pd.concat([columns[["x_px", "y_px"]], extra], ignore_index=True)
    real = match_ground_truth(both, truth, pixel_size_A=PIXEL_SIZE_A)
    assert real[:-1].all() and not real[-1]
    pt_only = match_ground_truth(both, truth, pixel_size_A=PIXEL_SIZE_A, elements=("Pt",))
    assert pt_only.sum() == 20
