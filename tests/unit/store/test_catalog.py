import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import intake
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from lowdose.errors import LowdoseInputError, StoreError
from lowdose.store.catalog import (
    CatalogEntry,
    CatalogError,
    ProductKind,
    open_catalog,
    product_entry,
    register,
    register_products,
    register_run_outputs,
    remove_entries,
    trust_needed,
)
from lowdose.store.catalog_readers import ModelArtefact
from lowdose.store.catalog_safety import ALLOWED_READERS
from tests.catalog_products import write_model, write_series_products, write_simulation

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one catalog and every kind of product."""
    folder = tmp_path_factory.mktemp("catalog")
    products = write_series_products(folder / "data", n_frames=12, size=32)
    model = write_model(folder / "data" / "model")
    sim = write_simulation(folder / "data")
    cat = folder / "lowdose.yaml"
    register(cat, "run1", products["series"], source="test")
    register_run_outputs(cat, folder / "data", prefix="run1", series="run1")
    register(cat, "unet", model)
    register(cat, "sim", sim)
    return folder


def test_round_trip_opens_every_kind(shared: Path) -> None:
    cat = open_catalog(shared / "lowdose.yaml")
    assert cat.list() == ["run1", "run1.denoised", "run1.columns", "run1.frames", "unet", "sim"]
    series = cat.open("run1")
    assert isinstance(series, xr.Dataset)
    assert series["counts"].chunks is not None, "series must open lazily"
    assert series.sizes["frame"] == 12 and series.attrs["dose_e_per_px"] == 0.45
    reference = xr.open_zarr(shared / "data" / "series.zarr", consolidated=False)
    np.testing.assert_array_equal(
        series["counts"].isel(frame=5).values, reference["counts"].isel(frame=5).values
    )
    assert cat.open("run1.denoised")["denoised"].dtype == np.float32
    columns = cat.open("run1.columns")
    pd.testing.assert_frame_equal(columns, pd.read_parquet(shared / "data" / "columns.parquet"))
    frames = cat.open("run1.frames", dataframe="dask")
    assert type(frames).__module__.startswith("dask")
    assert len(frames.compute()) == 12
    model = cat.open("unet")
    assert isinstance(model, ModelArtefact)
    assert model.config["model_id"] == "unet-test" and model.weights[0].endswith("weights.safetensors")
    sim = cat.open("sim")
    assert sim.sizes["image"] == 3
    assert cat.describe("sim")["metadata"]["defocus_range_nm"] == [-10.0, 10.0]


def test_written_file_is_a_plain_intake_v2_catalog(shared: Path) -> None:
    raw = yaml.safe_load((shared / "lowdose.yaml").read_text())
    assert raw["version"] == 2
    for entry in raw["entries"].values():
        assert entry["reader"] in ALLOWED_READERS
    native = intake.from_yaml_file(str(shared / "lowdose.yaml"))
    assert native["run1.frames"].read()["frame"].tolist() == list(range(12))


def test_search_by_metadata(shared: Path) -> None:
    cat = open_catalog(shared / "lowdose.yaml")
    assert cat.search(kind="FrameSeries") == ["run1"]
    assert cat.search(kind="frameseries", dose_e_per_px="0.45", material="pt/ceo2") == ["run1"]
    assert cat.search(series="run1") == ["run1.denoised", "run1.columns", "run1.frames"]
    assert cat.search(defocus_range_nm=3.5) == ["sim"]
    assert cat.search(defocus_range_nm=30) == []
    assert cat.search(frame_rate_hz=(10, None)) == ["run1"]
    assert cat.search(frame_rate_hz=(None, 10)) == []
    assert cat.search(model_id="unet-test", kind="ModelArtefact") == ["unet"]
    typo = r"no entry has metadata \['kindd'\]; searchable keys are .*'kind'"
    with pytest.raises(CatalogError, match=typo):
        cat.search(kindd="FrameSeries")  # a typo is an error, not an empty result
    assert cat.products_of("run1") == {
        "DenoisedSeries": ["run1.denoised"],
        "ColumnTable": ["run1.columns"],
        "FrameTable": ["run1.frames"],
    }


def test_relative_paths_survive_moving_the_folder(shared: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(shared, moved)
    text = (moved / "lowdose.yaml").read_text()
    assert str(shared) not in text, "catalog must not record absolute paths"
    cat = open_catalog(moved / "lowdose.yaml")
    assert cat.location("run1").startswith(str(moved))
    assert cat.open("run1").sizes["frame"] == 12


def test_update_replaces_and_remove_drops(tmp_path: Path) -> None:
    products = write_series_products(tmp_path, n_frames=4, size=16)
    cat_path = tmp_path / "c.yaml"
    register(cat_path, "a", products["series"], metadata={"note": "first"})
    register(cat_path, "a", products["series"], metadata={"note": "second"})
    register(cat_path, "b", products["frames"])
    cat = open_catalog(cat_path)
    assert cat.list() == ["a", "b"] and cat.describe("a")["metadata"]["note"] == "second"
    with pytest.raises(CatalogError, match="exists"):
        register_products(cat_path, [product_entry("a", products["series"])], replace=False)
    remove_entries(cat_path, ["a"])
    raw = yaml.safe_load(cat_path.read_text())
    assert list(raw["entries"]) == ["b"] and list(raw["data"]) == ["b.data"]
    with pytest.raises(CatalogError, match="no entry 'a'"):
        open_catalog(cat_path).open("a")


def test_concurrent_registrations_keep_every_entry(tmp_path: Path) -> None:
    products = write_series_products(tmp_path, n_frames=4, size=16)
    cat_path = tmp_path / "c.yaml"
    entry = product_entry("x", products["frames"])

    def add(i: int) -> None:
        register_products(cat_path, [CatalogEntry(f"t{i}", entry.kind, entry.location, entry.metadata)])

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(open_catalog(cat_path).list()) == sorted(f"t{i}" for i in range(8))
    assert not list(tmp_path.glob(".c.yaml.*.tmp"))


def test_products_outside_the_folder_need_a_root_or_absolute(tmp_path: Path) -> None:
    products = write_series_products(tmp_path / "data", n_frames=4, size=16)
    cat_path = tmp_path / "catalogs" / "c.yaml"
    with pytest.raises(CatalogError, match="outside the catalog folder") as err:
        register(cat_path, "s", products["series"])
    assert "(CLI: --allow-absolute" in str(err.value)  # `lowdose catalog add` has no root=
    register_products(cat_path, [product_entry("s", products["series"])], root=tmp_path)
    assert "{CATALOG_DIR}/../data/series.zarr" in cat_path.read_text()
    with pytest.raises(CatalogError, match="escapes the catalog folder"):
        open_catalog(cat_path)
    assert open_catalog(cat_path, root=tmp_path).open("s").sizes["frame"] == 4
    assert open_catalog(cat_path, allow_absolute=True).open("s").sizes["frame"] == 4  # trusts any location
    assert trust_needed(cat_path) == (tmp_path.resolve(), False)
    with pytest.raises(CatalogError, match="does not enclose"):
        open_catalog(cat_path, root=tmp_path / "data")
    abs_cat = tmp_path / "abs" / "c.yaml"
    register(abs_cat, "s", products["series"], allow_absolute=True)
    with pytest.raises(CatalogError, match="absolute or a URL"):
        open_catalog(abs_cat)
    assert open_catalog(abs_cat, allow_absolute=True).open("s").sizes["frame"] == 4
    assert trust_needed(abs_cat) == (None, True)


def _catalog_with(tmp_path: Path, entry: dict, data: dict | None = None) -> Path:
    raw = {
        "version": 2,
        "metadata": {},
        "aliases": {},
        "user_parameters": {},
        "entries": {"bad": entry},
        "data": data
        if data is not None
        else {
            "d": {
                "datatype": "intake.readers.datatypes:Parquet",
                "kwargs": {"url": "{CATALOG_DIR}/t.parquet"},
            }
        },
    }
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


GOOD_ENTRY = {
    "reader": "intake.readers.readers:PandasParquet",
    "kwargs": {"args": ["{data(d)}"]},
    "metadata": {"kind": "FrameTable"},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reader": "os:system"}, "reader 'os:system', which is not allowed"),
        ({"reader": "intake.readers.readers:PythonCall"}, "not allowed"),
        ({"reader": "intake.readers.readers:XArrayDatasetReader"}, "cannot read datatype"),
        ({"kwargs": {"args": ["{data(d)}"], "engine": "{func(os:getcwd)}"}}, "passes reader kwargs"),
        ({"kwargs": {"args": ["{data(d)}"], "columns": ["{env(HOME)}"]}}, "template"),
        ({"kwargs": {"args": ["rm -rf /"]}}, "kwargs.args"),
        ({"user_parameters": {"x": {"cls": "os:system"}}}, "user_parameters"),
        ({"metadata": {"kind": "Evil"}}, "metadata.kind"),
        ({"cls": "os:system"}, "unknown keys"),
        ({"output_instance": "builtins:eval"}, "output_instance"),
    ],
)
def test_refuses_unknown_readers_and_code(tmp_path: Path, change: dict, message: str) -> None:
    path = _catalog_with(tmp_path, {**GOOD_ENTRY, **change})
    with pytest.raises(CatalogError, match=message) as info:
        open_catalog(path)
    assert "evil.yaml" in str(info.value)
    assert isinstance(info.value, LowdoseInputError)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"d": {"datatype": "os:system", "kwargs": {"url": "x"}}}, "datatype 'os:system'"),
        (
            {"d": {"datatype": "intake.readers.datatypes:Parquet", "kwargs": {"url": "{CATALOG_DIR}/../x"}}},
            "escapes",
        ),
        (
            {
                "d": {
                    "datatype": "intake.readers.datatypes:Parquet",
                    "kwargs": {"url": "{CATALOG_DIR}/a/../../x"},
                }
            },
            "escapes",
        ),
        (
            {"d": {"datatype": "intake.readers.datatypes:Parquet", "kwargs": {"url": "/etc/passwd"}}},
            "absolute",
        ),
        (
            {"d": {"datatype": "intake.readers.datatypes:Parquet", "kwargs": {"url": "file:///etc/passwd"}}},
            "absolute",
        ),
        (
            {"d": {"datatype": "intake.readers.datatypes:Parquet", "kwargs": {"url": "{env(HOME)}/x"}}},
            "template",
        ),
        (
            {
                "d": {
                    "datatype": "intake.readers.datatypes:Parquet",
                    "kwargs": {"url": "{CATALOG_DIR}//etc/x"},
                }
            },
            "relative",
        ),
        (
            {"e": {"datatype": "intake.readers.datatypes:Parquet", "kwargs": {"url": "{CATALOG_DIR}/x"}}},
            "not in the",
        ),
        (
            {
                "d": {
                    "datatype": "intake.readers.datatypes:Parquet",
                    "kwargs": {"url": "{CATALOG_DIR}/x", "storage_options": {"k": "{func(os:getcwd)}"}},
                }
            },
            "template",
        ),
    ],
)
def test_refuses_path_escapes_and_bad_data(tmp_path: Path, data: dict, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        open_catalog(_catalog_with(tmp_path, GOOD_ENTRY, data))


def test_malicious_yaml_tags_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "tags.yaml"
    path.write_text(
        f"version: 2\nmetadata: !!python/object/apply:os.system ['touch {marker}']\n"
        "entries: {}\ndata: {}\naliases: {}\nuser_parameters: {}\n"
    )
    with pytest.raises(CatalogError, match=r"tags\.yaml: not safe plain YAML"):
        open_catalog(path)
    assert not marker.exists()
    path.write_text("version: 2\nentries: !!python/name:os.system\n")
    with pytest.raises(CatalogError, match="not safe plain YAML"):
        open_catalog(path)


@pytest.mark.parametrize("text", ["- a list\n", "version: 1\nentries: {}\n", "version: 2\nfoo: 1\n", "{{{"])
def test_malformed_catalogs_are_one_line_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError, match=r"bad\.yaml"):
        open_catalog(path)


def test_missing_products_and_wrong_layouts_are_store_errors(tmp_path: Path) -> None:
    products = write_series_products(tmp_path, n_frames=4, size=16)
    cat_path = tmp_path / "c.yaml"
    register(cat_path, "s", products["series"])
    register_products(cat_path, [CatalogEntry("fake", ProductKind.DENOISED_SERIES, str(products["series"]))])
    cat = open_catalog(cat_path)
    with pytest.raises(StoreError, match="expected a lowdose DenoisedSeries"):
        cat.open("fake")
    shutil.rmtree(products["series"])
    with pytest.raises(StoreError, match=r"entry 's'.*cannot open"):
        cat.open("s")
    with pytest.raises(CatalogError, match="no such product"):
        register(cat_path, "gone", tmp_path / "gone.zarr")
    with pytest.raises(CatalogError, match="not a"):
        register(cat_path, "other", products["frames"], kind="ColumnTable")


def test_remote_catalog_reads_products_through_fsspec(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    products = write_series_products(tmp_path / "local", n_frames=4, size=16)
    register(tmp_path / "local" / "c.yaml", "frames", products["frames"])
    fs = fsspec.filesystem("memory")
    fs.put(str(tmp_path / "local" / "c.yaml"), "/share/c.yaml")
    fs.put(str(products["frames"]), "/share/frames.parquet")
    cat = open_catalog("memory://share/c.yaml")
    assert cat.location("frames") == "memory://share/frames.parquet"
    assert len(cat.open("frames")) == 4


def test_demo_catalog_is_valid() -> None:
    path = REPO / "catalogs" / "demo.yaml"
    raw = yaml.safe_load(path.read_text())
    assert all(e["reader"] in ALLOWED_READERS for e in raw["entries"].values())
    cat = open_catalog(path, root=REPO)
    kinds = {cat.entries[name].kind for name in cat.list()}
    # everything `lowdose demo` writes (it simulates a series, not a SimulationSet)
    assert kinds == set(ProductKind) - {ProductKind.SIMULATION_SET}
    for name in cat.list():
        location = Path(cat.location(name))
        assert location.is_relative_to(REPO / "lowdose-demo"), location
    assert set(cat.products_of("demo.series")) == {"DenoisedSeries", "ColumnTable", "FrameTable"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOWDOSE_CATALOG")}
    return subprocess.run(
        [sys.executable, "-m", "lowdose", "catalog", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def invoke(*args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from typer.testing import CliRunner

    from lowdose.cli import app

    monkeypatch.chdir(cwd)
    monkeypatch.delenv("LOWDOSE_CATALOG", raising=False)
    monkeypatch.delenv("LOWDOSE_CATALOG_ROOT", raising=False)
    result = CliRunner().invoke(app, ["catalog", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_cli_list_show_search_add(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cat = str(shared / "lowdose.yaml")
    out = invoke("list", "--catalog", cat, cwd=tmp_path, monkeypatch=monkeypatch)
    assert out.splitlines()[0].split()[:2] == ["run1", "FrameSeries"]
    out = invoke(
        "search", "kind=FrameTable", "series=run1", "--catalog", cat, cwd=tmp_path, monkeypatch=monkeypatch
    )
    assert out.split() == ["run1.frames"]
    out = invoke("search", "frame_rate_hz>=30", "--catalog", cat, cwd=tmp_path, monkeypatch=monkeypatch)
    assert out.split() == ["run1"]
    out = invoke("search", "frame_rate_hz=50..60", "--catalog", cat, cwd=tmp_path, monkeypatch=monkeypatch)
    assert out.split() == []
    out = invoke("show", "sim", "--catalog", cat, cwd=tmp_path, monkeypatch=monkeypatch)
    assert '"defocus_range_nm"' in out
    new = tmp_path / "new.yaml"
    shutil.copytree(shared / "data", tmp_path / "data")
    invoke(
        "add",
        "x",
        "data/frames.parquet",
        "--catalog",
        str(new),
        "--meta",
        "operator=ann",
        cwd=tmp_path,
        monkeypatch=monkeypatch,
    )
    assert open_catalog(new).describe("x")["metadata"]["operator"] == "ann"
    bad_meta = run_cli(
        "add", "y", "data/series.zarr", "--catalog", str(new), "--meta", "novalue", cwd=tmp_path
    )
    assert bad_meta.returncode == 2 and "--meta 'novalue': expected KEY=VALUE" in bad_meta.stderr
    again = run_cli("add", "x", "data/series.zarr", "--catalog", str(new), cwd=tmp_path)
    assert again.returncode == 2 and "entry 'x' exists" in again.stderr and "--replace" in again.stderr
    assert open_catalog(new).describe("x")["kind"] == "FrameTable"  # kept
    invoke(
        "add",
        "x",
        "data/series.zarr",
        "--catalog",
        str(new),
        "--replace",
        cwd=tmp_path,
        monkeypatch=monkeypatch,
    )
    assert open_catalog(new).describe("x")["kind"] == "FrameSeries"
    invoke("remove", "x", "--catalog", str(new), cwd=tmp_path, monkeypatch=monkeypatch)
    assert open_catalog(new).list() == []
    out = invoke("list", cwd=REPO, monkeypatch=monkeypatch)
    assert "demo.series" in out


def test_cli_errors_are_one_line_exit_2(shared: Path, tmp_path: Path) -> None:
    out = run_cli("show", "nope", "--catalog", str(shared / "lowdose.yaml"), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "no entry 'nope'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    for command in (["add", "x", str(shared), "--kind", "simulation"], ["list", "--kind", "simulation"]):
        out = run_cli(*command, "--catalog", str(shared / "lowdose.yaml"), cwd=tmp_path)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert "kind 'simulation': expected one of SimulationSet, FrameSeries" in out.stderr


def test_a_link_to_a_missing_series_is_refused_and_the_catalog_kept(tmp_path: Path) -> None:
    products = write_series_products(tmp_path / "data", n_frames=4, size=16)
    cat = tmp_path / "lowdose.yaml"
    register(cat, "run1", products["series"])
    before = cat.read_bytes()
    with pytest.raises(CatalogError, match=r"entry 'run1.columns' links to series 'nosuch'"):
        register(cat, "run1.columns", tmp_path / "data" / "columns.parquet", series="nosuch")
    with pytest.raises(CatalogError, match=r"links to series 'self'"):
        register(cat, "self", products["series"], series="self")
    assert cat.read_bytes() == before
    register(cat, "run1.columns", tmp_path / "data" / "columns.parquet", series="run1")
    assert open_catalog(cat).products_of("run1") == {"ColumnTable": ["run1.columns"]}


def test_a_binary_file_given_as_the_catalog_is_named_and_kept(tmp_path: Path) -> None:
    binary = tmp_path / "stack.tif"
    binary.write_bytes(bytes(range(256)) * 8)
    series = write_series_products(tmp_path / "data", n_frames=4, size=16)["series"]
    for call in (lambda: open_catalog(binary), lambda: register(binary, "x", series)):
        with pytest.raises(CatalogError, match=r"stack\.tif: not a catalog \(not UTF-8 text"):
            call()
    assert binary.read_bytes() == bytes(range(256)) * 8
