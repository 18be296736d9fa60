from pathlib import Path

import pytest
from pydantic import Field

from lowdose.config import LowdoseConfig, config_class, load_config, save_config
from lowdose.errors import ConfigError


class ExampleConfig(LowdoseConfig):
    dose_e_per_px: float = Field(0.45, gt=0, description="Dose per pixel.")
    name: str = "x"


def test_round_trip(tmp_path: Path) -> None:
    cfg = ExampleConfig(dose_e_per_px=0.9, name="run")
    path = save_config(cfg, tmp_path / "c.yaml")
    assert load_config(ExampleConfig, path) == cfg


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dose_e_per_px: 0.45\nfrobnicate: 1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*unknown key 'frobnicate'"):
        load_config(ExampleConfig, path)


def test_bad_value_and_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dose_e_per_px: -1\n")
    with pytest.raises(ConfigError, match="dose_e_per_px"):
        load_config(ExampleConfig, path)
    path.write_text("dose_e_per_px: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(ExampleConfig, path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(ExampleConfig, tmp_path / "missing.yaml")
    for empty in ("", "# only a comment\n"):  # not "all defaults": for simulate that is the paper grid
        path.write_text(empty)
        with pytest.raises(ConfigError, match=r"c\.yaml: the config file is empty"):
            load_config(ExampleConfig, path)
    path.write_text("{}\n")
    assert load_config(ExampleConfig, path) == ExampleConfig()


def test_a_block_copied_from_a_larger_config_is_read_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("example:\n  dose_e_per_px: 0.9\n")
    assert load_config(ExampleConfig, path, block="example").dose_e_per_px == 0.9
    with pytest.raises(ConfigError, match="unknown key 'example'"):
        load_config(ExampleConfig, path)
    path.write_text("example:\n  dose_e_per_px: 0.9\nname: y\n")  # not only the block: as it is
    with pytest.raises(ConfigError, match="unknown key 'example'"):
        load_config(ExampleConfig, path, block="example")


def test_wrong_version_and_assignment_validation(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("version: 99\n")
    with pytest.raises(ConfigError, match="version 99"):
        load_config(ExampleConfig, path)
    cfg = ExampleConfig()
    with pytest.raises(ValueError):
        cfg.dose_e_per_px = -2.0


def test_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="unknown config kind"):
        config_class("nope")


def test_pipeline_cluster_name_is_checked_when_the_config_is_read(tmp_path: Path) -> None:
    # a misspelt backend was reported as "--cluster: unknown backend", naming no file
    config = tmp_path / "pipeline.yaml"
    config.write_text("series: s.zarr\nout: run\ncluster: {name: slrum}\n")
    with pytest.raises(ConfigError, match=r"pipeline\.yaml.*'cluster\.name': unknown backend 'slrum'"):
        load_config(config_class("pipeline"), config)
    for name in ("auto", "local", "address", "slurm", "kubernetes"):
        config.write_text(f"series: s.zarr\nout: run\ncluster: {{name: {name}}}\n")
        assert load_config(config_class("pipeline"), config).cluster.name == name


def test_pipeline_device_is_checked_when_the_config_is_read(tmp_path: Path) -> None:
    # a misspelt device used to reach the Dask workers and fail there as a torch RuntimeError
    config = tmp_path / "pipeline.yaml"
    config.write_text("series: s.zarr\nout: run\ndevice: gpu\n")
    with pytest.raises(
        ConfigError, match=r"pipeline\.yaml.*'device': 'gpu': expected auto, cpu, cuda or cuda:N"
    ):
        load_config(config_class("pipeline"), config)
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        config.write_text(f"series: s.zarr\nout: run\ndevice: '{device}'\n")
        assert load_config(config_class("pipeline"), config).device == device


def test_pipeline_analysis_block_is_checked_when_the_config_is_read(tmp_path: Path) -> None:
    # it used to pass `lowdose config validate` and fail only when `lowdose run` built the analysis
    config = tmp_path / "pipeline.yaml"
    for block, expected in (
        ("{polarty: bright}", r"'analysis': unknown key 'polarty'"),
        ("{lambda_vac: -1}", r"'analysis': 'lambda_vac': expected a positive rate or 'estimate'"),
        ("{alpha_A: far}", r"'analysis': 'alpha_A': Input should be a valid number"),
    ):
        config.write_text(f"series: s.zarr\nout: run\nanalysis: {block}\n")
        with pytest.raises(ConfigError, match=r"pipeline\.yaml: invalid config: " + expected):
            load_config(config_class("pipeline"), config)
    config.write_text("series: s.zarr\nout: run\nanalysis: {polarity: dark, lambda_vac: estimate}\n")
    assert load_config(config_class("pipeline"), config).analysis["polarity"] == "dark"
