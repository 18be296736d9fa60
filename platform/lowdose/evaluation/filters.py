"""``lowdose evaluate filters``: the paper's Fig. 8, Jacobian effective filters of a denoiser.

For one held-out noisy test image, three output pixels are picked from the
ground-truth column table — a *vacuum* pixel (the interior pixel farthest from
every column), a *bulk* column (the non-surface particle column deepest inside
the particle) and a *surface* column (the surface column nearest that vacuum
pixel) — and the gradient of the model's output at each with respect to the
whole input image is computed by autograd
(:func:`lowdose.analysis.explain.effective_filter`). For a bias-free network
(the shipped ``compact`` default) that gradient is an exact linear filter:
``output[y, x] = Σ filter · input``; the report lists how closely that holds.

Writes ``filters.md``, ``filters.csv`` and ``filters.png`` (3 rows × 2 columns:
input window | effective filter) into the report folder; the per-pixel
filters are cached in ``filters_cache/`` so a re-run only redraws. With a Dask
client each Jacobian is one task. Imports torch and dask lazily.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from lowdose.errors import LowdoseInputError
from lowdose.evaluation._options import parse_options

if TYPE_CHECKING:
    import distributed
    import xarray as xr

NAME = "filters"
KINDS = ("vacuum", "surface", "bulk")
DEFAULTS: dict[str, Any] = {
    "image": None,
    "window_px": 128,
    "dose_e_per_px": 0.45,
    "seed": 0,
    "split_seed": 0,
}
"""Options: ``image`` (global index; default: the first white-contrast image the model
never saw, see :func:`held_out_images`; ``split_seed`` applies when the card has no split),
``window_px`` (side of the plotted window), ``dose_e_per_px`` and ``seed`` of the
Poisson noise drawn for the input."""

CSV_COLUMNS = (
    "kind",
    "image",
    "y_px",
    "x_px",
    "output",
    "filter_dot_input",
    "relative_difference",
    "filter_sum",
    "abs_mass_in_window",
    "effective_radius_px",
    "model_sha256",
)


def choose_pixels(
    columns: pd.DataFrame, shape: tuple[int, int], margin_px: int
) -> dict[str, tuple[int, int]]:
    """Vacuum, surface and bulk pixels ``(y, x)`` of one image from its ground-truth columns.

    Parameters
    ----------
    columns
        Ground-truth rows of the image (``x_px``, ``y_px``, ``element``, ``surface``).
    shape
        Image shape ``(ny, nx)``.
    margin_px
        Minimum distance of every chosen pixel from the image border.

    Raises
    ------
    LowdoseInputError
        The image has no surface or no bulk particle column inside the margin.
    """
    from scipy import ndimage

    ny, nx = shape
    margin = int(min(margin_px, (min(ny, nx) - 1) // 2))
    xs = columns["x_px"].to_numpy(dtype=np.float64)
    ys = columns["y_px"].to_numpy(dtype=np.float64)
    surface = columns["surface"].to_numpy(dtype=bool)
    elements = columns["element"].astype(str).to_numpy()
    particle = np.isin(elements, np.unique(elements[surface]))
    inside = (xs >= margin) & (xs <= nx - 1 - margin) & (ys >= margin) & (ys <= ny - 1 - margin)
    if not np.any(surface & inside) or not np.any(particle & ~surface & inside):
        raise LowdoseInputError(
            "filters: the image needs a surface and a bulk particle column at least "
            f"{margin} px from the border (ground truth has {int(surface.sum())} surface and "
            f"{int((particle & ~surface).sum())} bulk columns); pick another --option image"
        )
    free = np.ones(shape, dtype=bool)
    free[np.clip(np.round(ys).astype(int), 0, ny - 1), np.clip(np.round(xs).astype(int), 0, nx - 1)] = False
    distance = ndimage.distance_transform_edt(free)
    interior = np.full(shape, -1.0)
    interior[margin : ny - margin, margin : nx - margin] = distance[
        margin : ny - margin, margin : nx - margin
    ]
    vy, vx = np.unravel_index(int(np.argmax(interior)), shape)
    surf = np.flatnonzero(surface & inside)
    pick_s = surf[np.argmin(np.hypot(ys[surf] - vy, xs[surf] - vx))]
    bulk = np.flatnonzero(particle & ~surface & inside)
    all_surf = np.flatnonzero(surface)
    depth = np.min(np.hypot(ys[bulk, None] - ys[all_surf], xs[bulk, None] - xs[all_surf]), axis=1)
    pick_b = bulk[np.argmax(depth)]
    return {
        "vacuum": (int(vy), int(vx)),
        "surface": (round(ys[pick_s]), round(xs[pick_s])),
        "bulk": (round(ys[pick_b]), round(xs[pick_b])),
    }


def held_out_images(
    data: Path, ds: xr.Dataset, card: dict[str, Any], split_seed: int = 0
) -> tuple[npt.NDArray[np.int64], str]:
    """Test images the model never saw, and a phrase saying where they come from.

    The model's own test split when its card records a training run on a store of
    the same name (selection, split fractions and seed are replayed); otherwise the
    held-out structures of a (0.8, 0.1, 0.1) structure split of ``ds`` with ``split_seed``.
    """
    from lowdose.store.simulation_set import split_by_structure
    from lowdose.training.data import resolve_splits

    record = (card.get("training") or {}).get("config") or {}
    if record and Path(str(record.get("data", ""))).name == Path(data).name:
        fractions = tuple(float(f) for f in record.get("split_fractions", (0.8, 0.1, 0.1)))
        splits = resolve_splits(
            data,
            record.get("selection") or {},
            (fractions[0], fractions[1], fractions[2]),
            int(record.get("split_seed", 0)),
        )
        if len(splits.test):
            return splits.test, "the model's own test split (replayed from its card)"
    test = split_by_structure(ds, (0.8, 0.1, 0.1), split_seed)[2]
    if test.sizes["image"]:
        return (
            np.asarray(test["image"].values, dtype=np.int64),
            f"held-out structures of a (0.8, 0.1, 0.1) structure split, seed {split_seed}",
        )
    return np.asarray(ds["image"].values, dtype=np.int64), "all images (too few structures to hold any out)"


def default_image(ds: xr.Dataset, columns: pd.DataFrame, images: npt.ArrayLike) -> int:
    """The first of ``images`` (by contrast white, mixed, black) with surface and bulk columns."""
    pool = ds.sel(image=np.asarray(images, dtype=np.int64))
    has_both = columns.groupby("image")["surface"].agg(lambda s: bool(s.any() and not s.all()))
    candidates = np.asarray(pool["image"].values, dtype=np.int64)
    contrast = np.array([str(c) for c in np.asarray(pool["contrast"].values).tolist()])
    for wanted in ("white", "mixed", "black", None):
        for image, c in zip(candidates.tolist(), contrast.tolist(), strict=True):
            if (wanted is None or c == wanted) and bool(has_both.get(image, False)):
                return int(image)
    raise LowdoseInputError(
        "filters: no held-out image has both surface and bulk columns; pass --option image"
    )


def _window(array: npt.NDArray[Any], y: int, x: int, side: int) -> npt.NDArray[np.float32]:
    half = side // 2
    padded = np.pad(np.asarray(array, dtype=np.float32), half, mode="constant", constant_values=np.nan)
    return padded[y : y + 2 * half + 1, x : x + 2 * half + 1].copy()


def jacobian_at(model: str, noisy: npt.NDArray[np.float32], y: int, x: int, window_px: int) -> dict[str, Any]:
    """Effective filter of ``model`` at ``(y, x)`` for input ``noisy``, with its summary numbers.

    Runs in a Dask worker or in-process; ``model`` is ``"default"`` or an artefact path.
    """
    import torch

    from lowdose.analysis.explain import effective_filter
    from lowdose.models.artefact import load_model

    torch.set_num_threads(1)
    net, _ = load_model(model)
    filt = effective_filter(net, noisy, y, x)
    with torch.no_grad():
        output = float(
            net(torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32))[None, None])[0, 0, y, x]
        )
    dot = float(np.sum(filt * noisy.astype(np.float64)))
    magnitude = np.abs(filt)
    total = float(magnitude.sum())
    yy, xx = np.indices(filt.shape)
    r2 = (yy - y) ** 2 + (xx - x) ** 2
    win = _window(filt, y, x, window_px)
    return {
        "filter_window": win,
        "output": output,
        "filter_dot_input": dot,
        "relative_difference": abs(output - dot) / max(abs(output), 1e-12),
        "filter_sum": float(filt.sum()),
        "abs_mass_in_window": float(np.nansum(np.abs(win)) / total) if total > 0 else math.nan,
        "effective_radius_px": float(math.sqrt(float((magnitude * r2).sum()) / total))
        if total > 0
        else math.nan,
    }


def _cache_key(**fields: Any) -> str:
    return json.dumps(fields, sort_keys=True, default=str)


def _load_cached(path: Path, key: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as cached:
        if str(cached["key"]) != key:
            return None
        summary = json.loads(str(cached["summary"]))
        return {**summary, "filter_window": np.asarray(cached["filter_window"])}


def _save_cached(path: Path, key: str, result: dict[str, Any]) -> None:
    summary = {k: v for k, v in result.items() if k != "filter_window"}
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp, key=np.array(key), summary=np.array(json.dumps(summary)), filter_window=result["filter_window"]
    )
    tmp.replace(path)


def _figure(
    path: Path,
    inputs: dict[str, npt.NDArray[np.float32]],
    filters: dict[str, npt.NDArray[np.float32]],
    marks: dict[str, npt.NDArray[np.float64]],
    title: str,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(KINDS), 2, figsize=(6.6, 3.1 * len(KINDS)), squeeze=False)
    for row, kind in enumerate(KINDS):
        window = inputs[kind]
        half = window.shape[0] // 2
        axes[row, 0].imshow(window, cmap="gray", interpolation="nearest")
        if len(marks[kind]):
            axes[row, 0].scatter(
                marks[kind][:, 0],
                marks[kind][:, 1],
                s=14,
                facecolors="none",
                edgecolors="tab:orange",
                linewidths=0.7,
            )
        axes[row, 0].plot([half], [half], "+", color="tab:red", markersize=10)
        axes[row, 0].set_title(f"{kind}: noisy input (○ true columns)", fontsize=9)
        filt = filters[kind]
        limit = float(np.nanmax(np.abs(filt))) or 1.0
        shown = axes[row, 1].imshow(filt, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        axes[row, 1].plot([half], [half], "+", color="black", markersize=10)
        axes[row, 1].set_title(f"{kind}: effective filter", fontsize=9)
        fig.colorbar(shown, ax=axes[row, 1], fraction=0.046, pad=0.04)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` typed and checked before any work (see :data:`DEFAULTS`)."""
    opts = parse_options(NAME, options, DEFAULTS)
    window_px = int(opts["window_px"])
    if window_px < 8:
        raise LowdoseInputError(f"{NAME} --option window_px: expected at least 8, got {window_px}")
    return opts


def run(
    data: Path,
    out: Path,
    *,
    model: str | None,
    client: distributed.Client | None,
    options: dict[str, Any],
    progress: bool,
) -> Path:
    """Compute the three effective filters and write ``filters.md``/``.csv``/``.png`` into ``out``.

    Parameters
    ----------
    data
        A SimulationSet ``.zarr`` (with its ground-truth column table).
    out
        Report folder (created).
    model
        Artefact directory, or ``None``/``"default"`` for the shipped model.
    client
        Dask client: one task per Jacobian; ``None`` computes in-process.
    options
        See :data:`DEFAULTS`.
    progress
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The Markdown report.
    """
    from tqdm.auto import tqdm

    from lowdose.models.artefact import _resolve as resolve_model
    from lowdose.models.artefact import read_card
    from lowdose.physics.noise import poisson_noise
    from lowdose.store.simulation_set import open_simulation_set, read_ground_truth

    opts = check_options(options)
    window_px = int(opts["window_px"])
    data, out = Path(data), Path(out)
    model_dir = resolve_model(model)
    card = read_card(model_dir)
    model_arg = "default" if model is None or str(model) == "default" else str(model_dir.resolve())
    sha = str(card.get("weights", {}).get("sha256", ""))

    ds = open_simulation_set(data)
    truth = read_ground_truth(data)
    if opts["image"] is None:
        held_out, source = held_out_images(data, ds, card, int(opts["split_seed"]))
        image = default_image(ds, truth, held_out)
    else:
        image, source = int(opts["image"]), "chosen with --option image"
    if image not in set(np.asarray(ds["image"].values).tolist()):
        raise LowdoseInputError(f"{NAME} --option image: {image} is not a finished image of {data}")
    meta = ds.sel(image=image)
    store_dose = float(ds.attrs["dose_e_per_px"])
    clean = np.maximum(np.asarray(meta["clean"].values, dtype=np.float32), 0.0) * np.float32(
        float(opts["dose_e_per_px"]) / store_dose
    )
    noisy = poisson_noise(clean, np.random.default_rng([int(opts["seed"]), int(image)])).astype(np.float32)
    columns = truth[truth["image"] == image]
    pixels = choose_pixels(columns, clean.shape, window_px // 2)

    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "filters_cache"
    cache_dir.mkdir(exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, str]] = []
    for kind in KINDS:
        y, x = pixels[kind]
        key = _cache_key(
            model_sha256=sha,
            data=str(data.resolve()),
            image=image,
            y=y,
            x=x,
            window_px=window_px,
            dose=float(opts["dose_e_per_px"]),
            seed=int(opts["seed"]),
        )
        cached = _load_cached(cache_dir / f"{kind}.npz", key)
        if cached is None:
            todo.append((kind, key))
        else:
            results[kind] = cached
    bar = tqdm(
        total=len(KINDS), initial=len(KINDS) - len(todo), desc=NAME, unit="filter", disable=not progress
    )
    if client is not None and todo:
        from distributed import as_completed

        noisy_future = client.scatter(noisy, broadcast=False)
        futures = {
            client.submit(jacobian_at, model_arg, noisy_future, *pixels[kind], window_px, pure=False): (
                kind,
                key,
            )
            for kind, key in todo
        }
        for future in as_completed(futures):
            kind, key = futures[future]
            results[kind] = future.result()
            _save_cached(cache_dir / f"{kind}.npz", key, results[kind])
            bar.update(1)
    else:
        for kind, key in todo:
            results[kind] = jacobian_at(model_arg, noisy, *pixels[kind], window_px)
            _save_cached(cache_dir / f"{kind}.npz", key, results[kind])
            bar.update(1)
    bar.close()

    rows = []
    inputs, marks = {}, {}
    half = window_px // 2
    for kind in KINDS:
        y, x = pixels[kind]
        rows.append(
            {
                "kind": kind,
                "image": int(image),
                "y_px": y,
                "x_px": x,
                **{k: results[kind][k] for k in CSV_COLUMNS[4:-1]},
                "model_sha256": sha,
            }
        )
        inputs[kind] = _window(noisy, y, x, window_px)
        near = columns[(np.abs(columns["x_px"] - x) <= half) & (np.abs(columns["y_px"] - y) <= half)]
        marks[kind] = np.stack(
            [near["x_px"].to_numpy() - x + half, near["y_px"].to_numpy() - y + half], axis=1
        )
    table = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    table.to_csv(out / f"{NAME}.csv", index=False)
    describe = (
        f"image {image}: {meta['particle'].item()} {meta['defect'].item()}, "
        f"C1 = {float(meta['defocus_nm']):g} nm, "
        f"{meta['contrast'].item()} contrast, {float(opts['dose_e_per_px']):g} e/px"
    )
    figure = _figure(
        out / f"{NAME}.png", inputs, {k: results[k]["filter_window"] for k in KINDS}, marks, describe
    )
    return _markdown(out, data, model, card, opts, f"{describe} ({source})", table, figure)


def _markdown(
    out: Path,
    data: Path,
    model: str | None,
    card: dict[str, Any],
    opts: dict[str, Any],
    describe: str,
    table: pd.DataFrame,
    figure: Path,
) -> Path:
    architecture = card.get("architecture", {})
    command = ["lowdose", "evaluate", NAME, "--data", str(data), "--out", str(out)]
    if model is not None and str(model) != "default":
        command += ["--model", str(model)]
    for key, value in opts.items():
        if value is not None and value != DEFAULTS[key]:
            command += ["--option", f"{key}={value}"]
    lines = [
        "# Effective filters (Jacobians) at a vacuum, surface and bulk pixel",
        "",
        f"Model: `{model or 'default'}` ({architecture.get('name', '?')}, "
        f"sha256 `{str(card.get('weights', {}).get('sha256', ''))[:12]}`). Input: {describe}; Poisson "
        f"noise seed {opts['seed']}. The filter is the gradient of the output pixel with respect to "
        "the whole input image (autograd); for a bias-free network output = Σ filter · input exactly, and "
        "`relative_difference` measures how far from that the model is.",
        "",
        "| pixel | (y, x) | output | Σ filter·input | rel. diff. | Σ filter | "
        "share of Σ abs(filter) in window | eff. radius (px) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {row.kind} | ({row.y_px}, {row.x_px}) | {row.output:.4f} | {row.filter_dot_input:.4f} | "
            f"{row.relative_difference:.1e} | {row.filter_sum:.3f} | {row.abs_mass_in_window:.2f} | "
            f"{row.effective_radius_px:.1f} |"
        )
    lines += [
        "",
        f"Window: {int(opts['window_px'])} px; effective radius = √(Σ|a|·r² / Σ|a|) over the whole image.",
        "",
        f"![effective filters]({figure.name})",
        "",
        f"Reproduce: `{shlex.join(command)}`",
        "",
    ]
    path = out / f"{NAME}.md"
    path.write_text("\n".join(lines))
    return path
