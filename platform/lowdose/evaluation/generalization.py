"""``lowdose evaluate generalization``: train on one class, test on the others (PSNR matrices).

For each factor (``contrast``, ``particle``, ``defect``) and each of its classes, a
denoiser of the chosen architecture is trained with a small, fixed budget
(:func:`lowdose.training.trainer.train`) on the images of that class only, then
scored on held-out images of every class of the factor. Structures (``model_id``)
are split once into a training pool and a test pool, so no test image shares a
structure with any training image — the diagonal is generalisation to new
structures of the same class, the off-diagonal to new classes. One more run on
the whole training pool (``all``, same budget) and a Gaussian blur with σ tuned
on training-pool images give reference rows; the raw noisy PSNR is reported too.

Every training run (with its scoring) is one Dask task when a client is given;
each writes its own folder under ``generalization_runs/`` (named by a hash of its
training config), so a re-run reuses finished cells, resumes interrupted
training from its checkpoint, and recomputes nothing else. Writes
``generalization.md``, ``generalization.csv`` (long form: one row per train class
× test class) and ``generalization.png`` (one heat map per factor).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lowdose.errors import LowdoseInputError
from lowdose.evaluation._options import parse_options

if TYPE_CHECKING:
    import distributed
    import xarray as xr

NAME = "generalization"
FACTORS = ("contrast", "particle", "defect")
REFERENCE_SIGMAS_PX = (4.0, 6.0, 8.0, 10.0, 12.0, 16.0)
DEFAULTS: dict[str, Any] = {
    "factors": FACTORS,
    "steps": 300,
    "patch_size": 128,
    "batch_size": 4,
    "learning_rate": 1e-3,
    "validate_every": 100,
    "validation_patches": 4,
    "validation_patch_size": 256,
    "test_fraction": 0.3,
    "split_seed": 0,
    "seed": 0,
    "test_images": 4,
    "realisations": 1,
    "dose_e_per_px": 0.45,
    "include_all": True,
}
"""Options: the factors to vary; the training budget of every cell (``steps``,
``patch_size``, ``batch_size``, ``learning_rate``, validation cadence and patches);
``test_fraction`` of structures held out (``split_seed``); ``test_images`` per test
class (evenly spaced over the held-out images of that class) × ``realisations``
noise draws at ``dose_e_per_px``; ``include_all`` adds the run on the whole pool."""

CSV_COLUMNS = (
    "factor",
    "train_class",
    "test_class",
    "psnr_db",
    "psnr_std_db",
    "raw_psnr_db",
    "n_images",
    "realisations",
    "train_images",
    "steps",
    "best_validation_psnr_db",
    "train_seconds",
    "gaussian_sigma_px",
)
ALL = "all"
GAUSSIAN = "gaussian"


@dataclass
class Cell:
    """One training run (or the Gaussian reference) and the test sets it is scored on."""

    factor: str
    train_class: str
    run_dir: Path
    config: dict[str, Any] | None
    """``TrainingConfig`` as a dict; ``None`` for the Gaussian reference."""
    tests: dict[str, dict[str, list[int]]]
    """factor → test class → image indices."""
    tune_images: list[int] = field(default_factory=list)
    dose_scale: float = 1.0
    realisations: int = 1
    seed: int = 0
    data: str = ""


def _strings(values: Any) -> np.ndarray:
    return np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _evenly(images: np.ndarray, n: int) -> list[int]:
    if len(images) <= n:
        return [int(i) for i in images]
    picks = np.round(np.linspace(0, len(images) - 1, n)).astype(int)
    return [int(images[i]) for i in picks]


def _score(model: Any, cell: Cell, images: list[int]) -> tuple[list[float], list[float]]:
    from scipy import ndimage

    from lowdose.training.evaluate import denoise_image, noisy_pairs, psnr_db

    ours, raw = [], []
    for _, noisy, clean in noisy_pairs(cell.data, images, cell.dose_scale, cell.realisations, cell.seed):
        estimate = (
            ndimage.gaussian_filter(noisy, float(model), mode="reflect")
            if isinstance(model, float)
            else denoise_image(model, noisy)
        )
        ours.append(psnr_db(estimate, clean))
        raw.append(float(10 * np.log10(1.0 / np.mean((noisy.astype(np.float64) - clean) ** 2))))
    return ours, raw


def _key(cell: Cell) -> str:
    return json.dumps(
        {
            "config": cell.config,
            "tests": cell.tests,
            "tune": cell.tune_images,
            "dose_scale": cell.dose_scale,
            "realisations": cell.realisations,
            "seed": cell.seed,
            "data": cell.data,
        },
        sort_keys=True,
    )


def train_and_score(cell: Cell) -> list[dict[str, Any]]:
    """Train ``cell`` (or resume, or reuse its artefact) and score it; one Dask task.

    The rows are cached in ``run_dir/scores.json``, keyed by the cell's config and
    test sets, so a finished cell costs nothing on a re-run.
    """
    import torch

    scores_path = cell.run_dir / "scores.json"
    key = _key(cell)
    if scores_path.exists():
        cached = json.loads(scores_path.read_text())
        if cached.get("key") == key:
            return list(cached["rows"])
    torch.set_num_threads(1)
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info: dict[str, Any] = {"train_images": 0, "steps": 0, "best_validation_psnr_db": float("nan")}
    model: Any
    if cell.config is None:
        from lowdose.training.evaluate import tune_gaussian

        model, _ = tune_gaussian(
            cell.data, cell.tune_images, cell.dose_scale, 1, cell.seed, REFERENCE_SIGMAS_PX
        )
        info["train_images"] = len(cell.tune_images)
    else:
        from lowdose.models.artefact import load_model, read_card
        from lowdose.training.config import TrainingConfig
        from lowdose.training.trainer import train

        artefact = cell.run_dir / "model"
        if not (artefact / "model.yaml").exists():
            config = TrainingConfig.model_validate(cell.config)
            resume = (cell.run_dir / "checkpoint" / "state.json").exists()
            train(config, cell.run_dir, resume=resume, progress=False)
        model, _ = load_model(artefact)
        record = read_card(artefact).get("training", {})
        info.update(
            train_images=int(record.get("split_images", {}).get("train", 0)),
            steps=int(record.get("steps", 0)),
            best_validation_psnr_db=float(record.get("validation_psnr_db", float("nan"))),
        )
    seconds = time.perf_counter() - started
    rows = []
    for factor, classes in cell.tests.items():
        for test_class, images in classes.items():
            ours, raw = _score(model, cell, images)
            rows.append(
                {
                    "factor": factor,
                    "train_class": cell.train_class,
                    "test_class": test_class,
                    "psnr_db": float(np.mean(ours)),
                    "psnr_std_db": float(np.std(ours)),
                    "raw_psnr_db": float(np.mean(raw)),
                    "n_images": len(images),
                    "realisations": cell.realisations,
                    **info,
                    "train_seconds": round(seconds, 1),
                    "gaussian_sigma_px": float(model) if isinstance(model, float) else float("nan"),
                }
            )
    tmp = scores_path.with_name(scores_path.name + ".tmp")
    tmp.write_text(json.dumps({"key": key, "rows": rows}, indent=1))
    tmp.replace(scores_path)
    return rows


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` typed and checked before any work (see :data:`DEFAULTS`)."""
    opts = parse_options(NAME, options, DEFAULTS)
    _check_factors_and_fraction(opts)
    return opts


def _check_factors_and_fraction(opts: dict[str, Any]) -> None:
    for factor in opts["factors"]:
        if factor not in FACTORS:
            raise LowdoseInputError(f"{NAME} --option factors: unknown factor {factor!r}; expected {FACTORS}")
    fraction = float(opts["test_fraction"])
    if not 0 < fraction < 1:
        raise LowdoseInputError(f"{NAME} --option test_fraction: expected 0 < f < 1, got {fraction}")


def plan(
    data: Path, out: Path, ds: xr.Dataset, architecture: dict[str, Any], opts: dict[str, Any]
) -> tuple[list[Cell], list[str]]:
    """The cells to run and the reasons for any cell skipped (too few structures)."""
    from lowdose.store.simulation_set import split_by_structure

    _check_factors_and_fraction(opts)
    fraction = float(opts["test_fraction"])
    train_pool, test_pool = split_by_structure(ds, (1 - fraction, fraction), int(opts["split_seed"]))
    if not train_pool.sizes["image"] or not test_pool.sizes["image"]:
        raise LowdoseInputError(
            f"{data}: {len(np.unique(ds['model_id'].values))} structure(s) cannot be split into a training "
            f"and a test pool with test_fraction {fraction}"
        )
    store_dose = float(ds.attrs["dose_e_per_px"])
    common: dict[str, Any] = {
        "dose_scale": float(opts["dose_e_per_px"]) / store_dose,
        "realisations": int(opts["realisations"]),
        "seed": int(opts["seed"]),
        "data": str(data.resolve()),
    }
    train_ids = sorted(int(i) for i in np.unique(train_pool["model_id"].values))
    side = min(int(ds.sizes["y"]), int(ds.sizes["x"]))
    tests: dict[str, dict[str, list[int]]] = {}
    for factor in opts["factors"]:
        values = _strings(test_pool[factor].values)
        images = np.asarray(test_pool["image"].values)
        tests[factor] = {
            c: _evenly(images[values == c], int(opts["test_images"]))
            for c in sorted(set(_strings(ds[factor].values).tolist()))
            if np.any(values == c)
        }

    def config(selection: dict[str, Any]) -> dict[str, Any]:
        return {
            "data": common["data"],
            "selection": selection,
            "split_fractions": (0.8, 0.2, 0.0),
            "split_seed": int(opts["split_seed"]),
            "model": architecture["name"],
            "model_options": dict(architecture.get("config") or {}),
            "patch_size": min(int(opts["patch_size"]), side),
            "batch_size": int(opts["batch_size"]),
            "steps": int(opts["steps"]),
            "validate_every": min(int(opts["validate_every"]), int(opts["steps"])),
            "validation_patches": int(opts["validation_patches"]),
            "validation_patch_size": min(int(opts["validation_patch_size"]), side),
            "checkpoint_every": min(int(opts["validate_every"]), int(opts["steps"])),
            "dose_e_per_px": float(opts["dose_e_per_px"]),
            "seed": int(opts["seed"]),
            "learning_rate": float(opts["learning_rate"]),
            "torch_threads": 1,
            "loader_threads": 1,
            "prefetch": 2,
            "device": "cpu",
        }

    def run_dir(label: str, cfg: dict[str, Any] | None, extra: Any = None) -> Path:
        digest = hashlib.sha256(json.dumps([cfg, extra], sort_keys=True).encode()).hexdigest()[:10]
        return out / f"{NAME}_runs" / f"{_slug(label)}-{digest}"

    cells: list[Cell] = []
    skipped: list[str] = []
    for factor in opts["factors"]:
        values = _strings(train_pool[factor].values)
        for train_class in sorted(set(values.tolist())):
            subset = train_pool.isel(image=np.flatnonzero(values == train_class))
            fit, val, _ = split_by_structure(subset, (0.8, 0.2, 0.0), int(opts["split_seed"]))
            if not fit.sizes["image"] or not val.sizes["image"]:
                n = len(np.unique(subset["model_id"].values))
                skipped.append(
                    f"{factor}={train_class}: {n} training structure(s), too few for a train/validation split"
                )
                continue
            cfg = config({factor: train_class, "model_id": train_ids})
            cells.append(
                Cell(
                    factor,
                    train_class,
                    run_dir(f"{factor}-{train_class}", cfg),
                    cfg,
                    {factor: tests[factor]},
                    **common,
                )
            )
    if opts["include_all"]:
        cfg = config({"model_id": train_ids})
        cells.append(Cell("*", ALL, run_dir(ALL, cfg), cfg, tests, **common))
    tune = _evenly(np.asarray(train_pool["image"].values), max(2, int(opts["test_images"])))
    cells.append(Cell("*", GAUSSIAN, run_dir(GAUSSIAN, None, tune), None, tests, tune_images=tune, **common))
    return cells, skipped


def run(
    data: Path,
    out: Path,
    *,
    model: str | None,
    client: distributed.Client | None,
    options: dict[str, Any],
    progress: bool,
) -> Path:
    """Train and score every cell, then write ``generalization.md``/``.csv``/``.png`` into ``out``.

    Parameters
    ----------
    data
        A SimulationSet ``.zarr``.
    out
        Report folder (created); training runs go to ``out/generalization_runs/``.
    model
        Whose *architecture* to train: an artefact directory, or ``None``/``"default"``
        for the shipped model's (its weights are not used).
    client
        Dask client: one task per training run; ``None`` runs them one after another.
    options
        See :data:`DEFAULTS`.
    progress
        Show a progress bar over the cells.

    Returns
    -------
    pathlib.Path
        The Markdown report.
    """
    from tqdm.auto import tqdm

    from lowdose.models.artefact import _resolve as resolve_model
    from lowdose.models.artefact import read_card
    from lowdose.store.simulation_set import open_simulation_set

    opts = check_options(options)
    data, out = Path(data), Path(out)
    architecture = dict(read_card(resolve_model(model))["architecture"])
    ds = open_simulation_set(data)
    out.mkdir(parents=True, exist_ok=True)
    cells, skipped = plan(data, out, ds, architecture, opts)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(cells), desc=NAME, unit="run", disable=not progress)
    if client is not None:
        from distributed import as_completed

        futures = [client.submit(train_and_score, cell, pure=False) for cell in cells]
        for future in as_completed(futures):
            rows.extend(future.result())
            bar.update(1)
    else:
        for cell in cells:
            rows.extend(train_and_score(cell))
            bar.update(1)
    bar.close()
    rank = {c.train_class: i for i, c in enumerate(cells)}
    table = pd.DataFrame(rows)
    # Training time from each run's own log (a reused run was trained by an earlier invocation).
    logged = {c.train_class: _training_seconds(c.run_dir) for c in cells if c.config is not None}
    table["train_seconds"] = [
        logged.get(cls, seconds)
        for cls, seconds in zip(table["train_class"], table["train_seconds"], strict=True)
    ]
    table = table.assign(_rank=table["train_class"].map(rank))
    table = table.sort_values(["factor", "_rank", "test_class"], kind="stable").drop(columns="_rank")
    table = table.reset_index(drop=True)[list(CSV_COLUMNS)]
    table.to_csv(out / f"{NAME}.csv", index=False)
    figure = _heatmaps(out / f"{NAME}.png", table, list(opts["factors"]))
    return _markdown(out, data, model, architecture, opts, table, skipped, figure)


def _training_seconds(run_dir: Path) -> float:
    """Wall time of the run's last training session (``elapsed_s`` of its last log line)."""
    try:
        last = (run_dir / "log.jsonl").read_text().strip().splitlines()[-1]
        return float(json.loads(last)["elapsed_s"])
    except (OSError, IndexError, KeyError, ValueError):
        return float("nan")


def _matrix(table: pd.DataFrame, factor: str) -> pd.DataFrame:
    part = table[table["factor"] == factor]
    rows = [c for c in part["train_class"].unique() if c not in (ALL, GAUSSIAN)] + [
        c for c in (ALL, GAUSSIAN) if c in set(part["train_class"])
    ]
    return part.pivot(index="train_class", columns="test_class", values="psnr_db").reindex(rows)


def _heatmaps(path: Path, table: pd.DataFrame, factors: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrices = [(f, _matrix(table, f)) for f in factors if (table["factor"] == f).any()]
    widths = [max(3.0, 0.9 * m.shape[1] + 1.8) for _, m in matrices]
    fig, axes = plt.subplots(1, len(matrices), figsize=(sum(widths), 4.2), squeeze=False)
    finite = table["psnr_db"].to_numpy(dtype=float)
    vmin, vmax = float(np.nanmin(finite)), float(np.nanmax(finite))
    for ax, (factor, matrix) in zip(axes[0], matrices, strict=True):
        values = matrix.to_numpy(dtype=float)
        shown = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(
                    j,
                    i,
                    f"{v:.1f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if v > (vmin + vmax) / 2 else "white",
                )
        ax.set_xticks(range(matrix.shape[1]), list(matrix.columns), rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(matrix.shape[0]), list(matrix.index), fontsize=8)
        ax.set_xlabel(f"test {factor}")
        ax.set_ylabel(f"trained on ({factor})")
        ax.set_title(f"PSNR (dB) by {factor}", fontsize=9)
    fig.subplots_adjust(wspace=0.45)
    fig.colorbar(shown, ax=list(axes[0]), fraction=0.03, pad=0.02, label="PSNR (dB)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _markdown(
    out: Path,
    data: Path,
    model: str | None,
    architecture: dict[str, Any],
    opts: dict[str, Any],
    table: pd.DataFrame,
    skipped: list[str],
    figure: Path,
) -> Path:
    command = ["lowdose", "evaluate", NAME, "--data", str(data), "--out", str(out)]
    if model is not None and str(model) != "default":
        command += ["--model", str(model)]
    for key, value in opts.items():
        if value != DEFAULTS[key]:
            shown = ",".join(value) if isinstance(value, tuple) else value
            command += ["--option", f"{key}={shown}"]
    trained = table[~table["train_class"].isin([GAUSSIAN])]
    seconds = trained.drop_duplicates("train_class")["train_seconds"]
    config = json.dumps(architecture.get("config") or {})
    lines = [
        "# Generalisation across classes: train on one, test on the others",
        "",
        f"Architecture: `{architecture.get('name')}` {config} (from model `{model or 'default'}`; "
        "trained from scratch, its weights are not used).",
        "",
        f"**Budget per training run:** {opts['steps']} Adam steps (lr {opts['learning_rate']:g}, MSE), "
        f"batch {opts['batch_size']} × {opts['patch_size']}² px patches with flips/rotations/rescaling, "
        f"Poisson noise at {opts['dose_e_per_px']:g} e/px, validation on {opts['validation_patches']} fixed "
        f"{opts['validation_patch_size']}² patches every {opts['validate_every']} steps (best kept), "
        f"CPU, one thread; training took {seconds.min():.0f}–{seconds.max():.0f} s of wall time per run "
        "(`train_seconds`: the last training session in the run's `log.jsonl`). "
        "With this budget absolute PSNRs are below fully trained models; compare rows within a table.",
        "",
        f"**Splits:** structures split once ({1 - opts['test_fraction']:.0%} training pool / "
        f"{opts['test_fraction']:.0%} test pool, seed {opts['split_seed']}); each run trains on its class's "
        "training-pool images (80/20 train/validation by structure) and is tested on up to "
        f"{opts['test_images']} held-out images per class × {opts['realisations']} noise realisation(s). "
        "PSNR = 10·log10(1/MSE) in counts, output clipped to [0, 1]. `all` = same budget on the whole "
        "training pool; `gaussian` = Gaussian blur with σ tuned on training-pool images.",
        "",
    ]
    for factor in opts["factors"]:
        part = table[table["factor"] == factor]
        if part.empty:
            continue
        matrix = _matrix(table, factor)
        std = part.pivot(index="train_class", columns="test_class", values="psnr_std_db").reindex(
            matrix.index
        )
        counts = part.drop_duplicates("test_class").set_index("test_class")
        lines += [
            f"## {factor}",
            "",
            "| trained on \\ tested on | " + " | ".join(matrix.columns) + " |",
            "|---|" + "---:|" * matrix.shape[1],
        ]
        for train_class, values in matrix.iterrows():
            cells = [
                f"{values[c]:.2f} ± {std.loc[train_class, c]:.2f}" if np.isfinite(values[c]) else "–"
                for c in matrix.columns
            ]
            label = f"**{train_class}**" if train_class in (ALL, GAUSSIAN) else str(train_class)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append(
            "| raw (noisy) | "
            + " | ".join(f"{counts.loc[c, 'raw_psnr_db']:.2f}" for c in matrix.columns)
            + " |"
        )
        lines.append(
            "| test images | "
            + " | ".join(str(int(counts.loc[c, "n_images"])) for c in matrix.columns)
            + " |"
        )
        lines.append("")
    if skipped:
        lines += ["Skipped: " + "; ".join(skipped) + ".", ""]
    lines += [f"![PSNR matrices]({figure.name})", "", f"Reproduce: `{shlex.join(command)}`", ""]
    path = out / f"{NAME}.md"
    path.write_text("\n".join(lines))
    return path
