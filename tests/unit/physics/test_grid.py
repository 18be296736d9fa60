import pytest

from lowdose.config import config_class, validate_config
from lowdose.errors import ConfigError
from lowdose.physics.grid import PRESETS, SimulationGridConfig, expand_grid, load_preset, tilt_states


def test_paper_grid_expands_to_17955_images_without_running():
    config = load_preset("paper-grid")
    jobs = expand_grid(config)
    assert len(jobs) == 855
    assert sum(j.n_images for j in jobs) == 17_955
    assert len(config.defocus_nm) == 21 and config.gpts == 1024
    assert {j.params.particle for j in jobs} == {"PtNp1", "PtNp2", "PtNp3", "PtNp4"}
    assert {j.params.defect for j in jobs} == {"D0", "D1", "D2", "Dh", "Ds"}


def test_small_preset_covers_every_class_thickness_and_tilt():
    config = load_preset("small")
    jobs = expand_grid(config)
    n_images = sum(j.n_images for j in jobs)
    assert 200 <= n_images <= 600
    classes = {(j.params.particle, j.params.defect) for j in jobs}
    assert len(classes) == 20
    assert {j.params.support_thickness_nm for j in jobs} == {3.0, 4.0, 5.0, 6.0}
    assert {j.params.support_surface for j in jobs} == {"faceted", "stepped"}
    assert any(j.params.tilt_x_deg > 0 for j in jobs) and any(j.params.tilt_y_deg > 0 for j in jobs)
    assert min(config.defocus_nm) <= 1 and max(config.defocus_nm) >= 10


def test_expansion_is_deterministic_and_seeds_are_drawn_up_front():
    config = load_preset("small")
    a, b = expand_grid(config), expand_grid(config)
    assert a == b
    assert len({j.params.seed for j in a}) == len(a)
    other = expand_grid(config.model_copy(update={"seed": config.seed + 1}))
    assert [j.params.seed for j in other] != [j.params.seed for j in a]
    assert [j.first_image for j in a] == [i * len(config.defocus_nm) for i in range(len(a))]


def test_tilt_states_zero_once_then_each_axis():
    config = SimulationGridConfig.model_validate({"tilt_deg": [0, 2], "tilt_axes": ["x", "y"]})
    assert tilt_states(config) == [(0.0, 0.0), (2.0, 0.0), (0.0, 2.0)]


@pytest.mark.parametrize(
    "bad",
    [
        {"particles": ["PtNp9"]},
        {"defects": ["D7"]},
        {"support_thickness_nm": [30.0]},
        {"defocus_nm": []},
        {"n_structures": 10_000},
        {"tilt_axes": ["z"]},
        {"unknown_key": 1},
    ],
)
def test_bad_grid_configs_are_refused_with_a_message(bad):
    with pytest.raises(ConfigError, match=r"grid\.yaml"):
        validate_config(SimulationGridConfig, bad, "grid.yaml")


def test_presets_validate_and_config_kind_registered():
    for name in PRESETS:
        assert isinstance(load_preset(name), SimulationGridConfig)
    assert config_class("simulate") is SimulationGridConfig
    with pytest.raises(ConfigError):
        load_preset("huge")
