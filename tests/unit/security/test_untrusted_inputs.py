"""Untrusted inputs are refused with clear errors and never run code.

Each attack plants a marker file that would appear if the payload ran, and each
test also proves the payload is live (running it the unsafe way creates the
marker), so a refusal cannot pass by accident.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lowdose.dashboard.serve import auth_options
from lowdose.errors import ConfigError, FormatError, LowdoseInputError
from lowdose.models import build
from lowdose.models.artefact import import_torch_checkpoint, load_model, write_card
from lowdose.store.catalog import open_catalog
from lowdose.store.catalog_safety import CatalogError
from lowdose.store.readers import open_source

PLATFORM = Path(__file__).resolve().parents[3] / "platform" / "lowdose"
CONFIG = {"depth": 3, "channels": 4}


class Planted:
    """Unpickling this object opens (creates) the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _artefact(folder: Path, model: torch.nn.Module | None = None) -> Path:
    """A dncnn artefact written directly (save_artefact's FLOP and receptive-field probes are slow)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model = model or build("dncnn", **CONFIG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    write_card(
        folder,
        {
            "format": 1,
            "architecture": {"name": "dncnn", "config": dict(CONFIG)},
            "weights": {"file": "model.safetensors"},
        },
    )
    return folder


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    state = build("dncnn", **CONFIG).state_dict()
    torch.save({"state_dict": {**state, "extra": Planted(marker)}}, path)
    return path


def _payload_is_live(path: Path, marker: Path) -> None:
    """Control: loading the same bytes the unsafe way runs the payload."""
    assert not marker.exists()
    copy = path.with_name("control.pt")  # torch.load hands *.safetensors names to safetensors
    copy.write_bytes(path.read_bytes())
    torch.load(copy, weights_only=False)
    assert marker.exists()


# --- checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_pickle_checkpoint_is_refused_by_load_model(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / f"model{suffix}", marker)
    with pytest.raises(FormatError, match=r"pickle-based checkpoint; .*import_torch_checkpoint") as info:
        load_model(evil)
    assert str(evil) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()
    _payload_is_live(evil, marker)


def test_pickle_checkpoint_is_refused_by_the_explicit_import(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "model.pt", marker)
    with pytest.raises(FormatError, match=r"model\.pt: refused: .* could run code \(.*GLOBAL.*open") as info:
        import_torch_checkpoint(evil, "dncnn", **CONFIG)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    _payload_is_live(evil, marker)


@pytest.mark.slow  # save_artefact probes FLOPs and receptive field at 1024²
def test_cli_model_import_refuses_the_pickle_and_imports_the_state_dict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.inprocess import Ran, lowdose_main

    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    torch.save(build("dncnn", **CONFIG).state_dict(), tmp_path / "plain.pt")
    args = ["--architecture", "dncnn", "--config", "depth=3", "--config", "channels=4"]
    monkeypatch.chdir(tmp_path)

    def cli(source: str, out: str) -> Ran:  # the console entry point, in this process
        return lowdose_main(capsys, "model", "import", source, *args, "--out", out)

    refused = cli(str(evil), "evil_artefact")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "could run code" in refused.stderr
    assert not marker.exists() and not (tmp_path / "evil_artefact").exists()
    imported = cli("plain.pt", "artefact")
    assert imported.returncode == 0, imported.stderr
    model, card = load_model(tmp_path / "artefact")
    assert card["training"]["imported_from"] == "plain.pt"
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    _payload_is_live(evil, marker)


def test_explicit_import_of_a_plain_state_dict_works(tmp_path: Path) -> None:
    model = build("dncnn", **CONFIG)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    imported = import_torch_checkpoint(tmp_path / "plain.pt", "dncnn", **CONFIG)
    out = _artefact(tmp_path / "artefact", imported)
    loaded, _ = load_model(out)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_pickle_disguised_as_safetensors_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    out = _artefact(tmp_path / "m")
    _evil_checkpoint(out / "model.safetensors", marker)
    with pytest.raises(FormatError, match=r"model\.safetensors: not a readable safetensors file"):
        load_model(out)
    assert not marker.exists()
    _payload_is_live(out / "model.safetensors", marker)


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("../../elsewhere/model.safetensors", "must be a file name inside the artefact directory"),
        ("/etc/passwd", "must be a file name inside the artefact directory"),
        ("model.pt", "pickle-based checkpoint"),
        ("model.npz", "expected a .safetensors file"),
    ],
)
def test_card_cannot_point_the_weights_elsewhere(tmp_path: Path, file: str, message: str) -> None:
    out = _artefact(tmp_path / "m")
    card = yaml.safe_load((out / "model.yaml").read_text())
    card["weights"]["file"] = file
    (out / "model.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(FormatError, match=message):
        load_model(out)


# --- model artefacts whose card does not describe the weights -------------------------------


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        ({"name": "dncnn", "config": {"depth": 5, "channels": 4}}, r"missing tensor '[\w.]+'"),
        (
            {"name": "dncnn", "config": {"depth": 3, "channels": 8}},
            r"tensor '[\w.]+' has shape \(\d+,.*expects \(8,",
        ),
        ({"name": "compact", "config": {}}, "weights do not match the architecture"),
        ({"name": "os.system", "config": {}}, r"model\.yaml: architecture: unknown model 'os\.system'"),
        ({"name": "dncnn", "config": {"depth": 3, "evil": 1}}, r"model\.yaml: architecture: .*evil"),
        ({"name": "dncnn", "config": [1, 2]}, r"model\.yaml: architecture\.config must be a mapping"),
    ],
)
def test_architecture_mismatch_is_a_clear_error(tmp_path: Path, architecture: dict, message: str) -> None:
    out = _artefact(tmp_path / "m")
    card = yaml.safe_load((out / "model.yaml").read_text())
    card["architecture"] = architecture
    (out / "model.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(FormatError, match=message) as info:
        load_model(out)
    assert "\n" not in str(info.value)


def test_absurd_architecture_is_refused_before_allocating(tmp_path: Path) -> None:
    """A card asking for a 10^12-parameter network is checked on the meta device, not built."""
    import tracemalloc

    out = _artefact(tmp_path / "m")
    card = yaml.safe_load((out / "model.yaml").read_text())
    card["architecture"]["config"] = {"depth": 3, "channels": 400_000}
    (out / "model.yaml").write_text(yaml.safe_dump(card))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="has shape"):
            load_model(out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


# --- catalogs ------------------------------------------------------------------------------------

PLANTED = "tests.unit.security.planted_reader:Reader"


def _evil_catalog(tmp_path: Path, reader: str) -> Path:
    """A catalog naming ``reader``, complete enough for Intake itself to act on (see the control)."""
    (tmp_path / "data.zarr").mkdir()
    zarr = {"url": "{CATALOG_DIR}/data.zarr"}
    raw = {
        "version": 2,
        "metadata": {},
        "user_parameters": {},
        "aliases": {},
        "data": {
            "d": {
                "datatype": "intake.readers.datatypes:Zarr",
                "kwargs": zarr,
                "metadata": {},
                "user_parameters": {},
            }
        },
        "entries": {
            "evil": {
                "reader": reader,
                "kwargs": {"args": ["{data(d)}"]},
                "metadata": {"kind": "FrameSeries"},
                "user_parameters": {},
                "output_instance": "xarray:Dataset",
            }
        },
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "reader", [PLANTED, "os:system", "subprocess:Popen", "builtins:eval", "pickle:loads"]
)
def test_catalog_naming_an_arbitrary_reader_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LOWDOSE_TEST_PLANTED_MARKER", str(marker))
    path = _evil_catalog(tmp_path, reader)
    with pytest.raises(
        CatalogError, match=rf"entry 'evil' names reader '{reader}', which is not allowed"
    ) as info:
        open_catalog(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists() and "tests.unit.security.planted_reader" not in sys.modules


@pytest.mark.slow  # two Python subprocesses
def test_planted_reader_through_the_cli_and_the_trap_is_live(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _evil_catalog(tmp_path, PLANTED)
    env = {**os.environ, "LOWDOSE_TEST_PLANTED_MARKER": str(marker)}
    out = subprocess.run(
        [sys.executable, "-m", "lowdose", "catalog", "list", "--catalog", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "not allowed" in out.stderr
    assert not marker.exists()
    # Control: Intake itself, handed the same file, imports the planted module.
    control = "import intake, sys; cat = intake.from_yaml_file(sys.argv[1]); cat['evil'].read()"
    subprocess.run(
        [sys.executable, "-c", control, str(path)],
        capture_output=True,
        env={**env, "PYTHONPATH": str(PLATFORM.parents[1])},
        cwd=tmp_path,
        timeout=120,
    )
    assert marker.exists()


def test_yaml_tags_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = f"!!python/object/apply:builtins.open [{str(marker)!r}, 'w']\n"
    (tmp_path / "catalog.yaml").write_text(payload)
    (tmp_path / "config.yaml").write_text(payload)
    with pytest.raises(CatalogError, match="not safe plain YAML"):
        open_catalog(tmp_path / "catalog.yaml")
    from lowdose.config.base import load_config
    from lowdose.training.config import TrainingConfig

    with pytest.raises(ConfigError, match=r"config\.yaml: not valid YAML"):
        load_config(TrainingConfig, tmp_path / "config.yaml")
    assert not marker.exists()
    yaml.unsafe_load(payload)  # control: an unsafe loader runs it
    assert marker.exists()


def _catalog_with_location(tmp_path: Path, url: str) -> Path:
    raw = {
        "version": 2,
        "data": {"d": {"datatype": "intake.readers.datatypes:Parquet", "kwargs": {"url": url}}},
        "entries": {
            "t": {
                "reader": "intake.readers.readers:PandasParquet",
                "kwargs": {"args": ["{data(d)}"]},
                "metadata": {"kind": "FrameTable"},
            }
        },
    }
    folder = tmp_path / "shared" / "catalogs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "catalog.yaml").write_text(yaml.safe_dump(raw))
    return folder / "catalog.yaml"


@pytest.mark.parametrize(
    "url",
    [
        "{CATALOG_DIR}/../../etc/passwd",
        "{CATALOG_DIR}/a/../../../etc/passwd",
        "{CATALOG_DIR}//etc/passwd",
        "/etc/passwd",
        "file:///etc/passwd",
        "{CATALOG_DIR}/{env(HOME)}/x",
    ],
)
def test_catalog_paths_cannot_escape_the_folder(tmp_path: Path, url: str) -> None:
    path = _catalog_with_location(tmp_path, url)
    with pytest.raises(CatalogError, match=r"entry 't' location .*(escapes|absolute|not a|template)") as info:
        open_catalog(path)
    assert str(path) in str(info.value)


def test_absolute_paths_only_when_allowed(tmp_path: Path) -> None:
    path = _catalog_with_location(tmp_path, "/etc/passwd")
    catalog = open_catalog(path, allow_absolute=True)
    assert catalog.location("t") == "/etc/passwd"


def test_symlink_out_of_the_catalog_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "private"
    outside.mkdir()
    pd.DataFrame({"frame": [0, 1, 2]}).to_parquet(outside / "frames.parquet")
    path = _catalog_with_location(tmp_path, "{CATALOG_DIR}/frames.parquet")
    (path.parent / "frames.parquet").symlink_to(outside / "frames.parquet")
    catalog = open_catalog(path)
    with pytest.raises(CatalogError, match=r"resolves to .*private.* through a symbolic link"):
        catalog.open("t")
    assert len(open_catalog(path, allow_absolute=True).open("t")) > 0  # trusted: followed
    inside = path.parent / "real.parquet"
    inside.write_bytes((outside / "frames.parquet").read_bytes())
    (path.parent / "frames.parquet").unlink()
    (path.parent / "frames.parquet").symlink_to(inside)
    assert len(open_catalog(path).open("t")) > 0  # a link inside the folder is fine


# --- HDF5 inputs that read other files -------------------------------------------------------


def test_hdf5_external_storage_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(240, dtype="uint8").tobytes())
    src = tmp_path / "input.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("frames", shape=(2, 12, 10), dtype="uint8", external=[(str(secret), 0, 240)])
    with pytest.raises(FormatError, match=r"input\.h5:/frames: dataset reads its data from other files"):
        open_source(src)


# --- dashboard authentication ----------------------------------------------------------------


def test_auth_options() -> None:
    assert auth_options() == {}
    basic = auth_options(basic_auth="ann:pw")
    assert basic["basic_auth"] == {"ann": "pw"} and len(basic["cookie_secret"]) == 64
    oauth = auth_options(
        oauth_provider="github", oauth_key="id", oauth_secret="s", oauth_redirect_uri="https://x/"
    )
    assert {k: oauth[k] for k in ("oauth_provider", "oauth_key", "oauth_secret", "oauth_redirect_uri")} == {
        "oauth_provider": "github",
        "oauth_key": "id",
        "oauth_secret": "s",
        "oauth_redirect_uri": "https://x/",
    }
    assert (
        oauth["cookie_secret"]
        != auth_options(oauth_provider="github", oauth_key="id", oauth_secret="s")["cookie_secret"]
    )
    for kwargs, message in [
        ({"basic_auth": "a:b", "oauth_provider": "github"}, "exclude each other"),
        ({"oauth_provider": "myspace", "oauth_key": "k", "oauth_secret": "s"}, "expected one of"),
        ({"oauth_provider": "github", "oauth_key": "k"}, "also needs --oauth-secret"),
        ({"oauth_key": "k"}, "need --oauth-provider"),
    ]:
        with pytest.raises(LowdoseInputError, match=message):
            auth_options(**kwargs)


# --- static guards over the package source ---------------------------------------------------


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = ast.unparse(func)
            found.append((name, node))
    return found


def test_no_unsafe_loaders_in_the_package() -> None:
    """YAML through safe loaders, torch.load weights-only, no pickle/marshal/eval, np.load without pickles.

    Scans the package, ``dashboards/`` and ``deploy/``.
    """
    problems = []
    repo = PLATFORM.parents[1]
    files = sorted(PLATFORM.rglob("*.py")) + sorted((repo / "dashboards").rglob("*.py"))
    files += sorted((repo / "deploy").rglob("*.py"))
    assert len(files) > 50
    for file in files:
        tree = ast.parse(file.read_text(), filename=str(file))
        for name, call in _calls(tree):
            where = f"{file.relative_to(repo)}:{call.lineno}"
            keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
            if name in ("yaml.load", "yaml.load_all") and "Safe" not in keywords.get("Loader", ""):
                problems.append(f"{where}: {name} without a safe Loader")
            if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"):
                problems.append(f"{where}: {name}")
            if name == "torch.load" and keywords.get("weights_only") != "True":
                problems.append(f"{where}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "marshal.loads", "eval", "exec", "dill.load"):
                problems.append(f"{where}: {name}")
            if name == "np.load" and keywords.get("allow_pickle") != "False":
                problems.append(f"{where}: np.load without allow_pickle=False")
    assert problems == []


def test_dashboard_reads_no_request_parameters() -> None:
    """Pages are built from the catalog given at start-up; no URL argument reaches the filesystem."""
    for file in sorted((PLATFORM / "dashboard").glob("*.py")):
        text = file.read_text()
        for token in (
            "session_args",
            "query_params",
            "location.search",
            "request.arguments",
            "pn.state.location",
        ):
            assert token not in text, f"{file.name} reads {token}"
