"""``lowdose evaluate table1``: the paper's Table 1 and Fig. 4 on a SimulationSet split.

PSNR and SSIM (mean ± std over images × noise realisations) of the raw noisy image,
every classical baseline of :mod:`lowdose.analysis.baselines`, a Gaussian blur whose σ
is tuned on the validation split, the learned baselines (DnCNN, small U-Net,
blind-spot) and the paper's U-Net when their artefacts are given as options, and the
evaluated model (``--model``, default: the shipped one). Learned baselines without an
artefact are listed as "not trained" — never given numbers.

Conventions (the paper's code): images in counts at the evaluation dose, data range
1.0 count at 0.45 e/px (scaled with the dose), estimates clipped to [0, range], the raw
image scored unclipped. With ``crop=N`` every method sees the same N×N crop centred on
the particle (BM3D takes ~50 s on an 869² image here).

Writes ``table1.md``, ``table1.csv`` (one row per method), ``table1_rows.csv`` (one row
per image × realisation × method) and ``table1.png`` (noisy, each method, clean, each
with a zoom on the particle's surface). One Dask task per image × realisation;
finished tasks are kept in ``table1.parts/`` and reused.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from lowdose.errors import LowdoseInputError
from lowdose.evaluation import inputs, report
from lowdose.evaluation.runner import TaskResult, denoise, parts_dir, run_tasks

if TYPE_CHECKING:
    import distributed

NAME = "table1"

CLASSICAL: dict[str, str] = {
    "raw": "raw (noisy, unclipped)",
    "wiener": "adaptive Wiener, r = 13 px",
    "lowpass": "Fourier low-pass, 1.35 Å⁻¹",
    "gaussian_1px": "Gaussian blur, σ = 1 px",
    "gaussian_tuned": "Gaussian blur, σ tuned on validation",
    "median": "median 3×3",
    "vst_nlm": "Anscombe + non-local means",
    "vst_bm3d": "Anscombe + BM3D",
    "pure_let": "PURE-LET (128² patches)",
    "spot_mask": "Fourier spot mask (Bragg filter)",
}
"""Classical methods: name → label (in table order)."""

LEARNED: dict[str, str] = {
    "dncnn": "DnCNN",
    "small_unet": "small U-Net",
    "blindspot": "blind-spot U-Net",
    "unet": "U-Net (paper config)",
}
"""Learned baselines, each evaluated only when ``--option NAME=ARTEFACT`` is given."""

DEFAULTS: dict[str, Any] = {
    "methods": None,
    **dict.fromkeys(LEARNED),
    "sigmas": None,
    "n_validation": None,
    "zoom_px": 128,
}
"""table1's own options (besides :data:`lowdose.evaluation.inputs.COMMON_DEFAULTS`)."""


def apply_method(
    name: str, noisy: npt.NDArray[np.float32], *, pixel_size_A: float, sigma_px: float, source: str
) -> npt.NDArray[np.float64]:
    """The estimate of one method (unclipped) for a noisy count image."""
    from lowdose.analysis import baselines

    x = np.asarray(noisy, dtype=np.float64)
    if name == "raw":
        return x
    if name == "wiener":
        return baselines.adaptive_wiener(x, radius_px=13.0)
    if name == "lowpass":
        return baselines.fourier_lowpass(x, pixel_size_A, cutoff_per_A=1.35)
    if name == "gaussian_1px":
        return baselines.gaussian_blur(x, 1.0)
    if name == "gaussian_tuned":
        return baselines.gaussian_blur(x, sigma_px)
    if name == "median":
        return baselines.median_filter(x, 3)
    if name == "vst_nlm":
        return baselines.vst_nlm(x)
    if name == "vst_bm3d":
        return baselines.vst_bm3d(x)
    if name == "pure_let":
        return baselines.pure_let(x)
    if name == "spot_mask":
        return baselines.fourier_spot_mask_filter(x, pixel_size_A)
    if source:
        return np.asarray(denoise(source, noisy), dtype=np.float64)
    raise LowdoseInputError(f"table1: unknown method {name!r}")


def score_image(
    *,
    store: str,
    image: int,
    realisation: int,
    dose_scale: float,
    seed: int,
    crop: int | None,
    ground_truth: pd.DataFrame | None,
    methods: list[tuple[str, str]],
    pixel_size_A: float,
    sigma_px: float,
    keep_arrays: bool,
) -> TaskResult:
    """PSNR/SSIM of every method on one image × realisation (the Dask task)."""
    from lowdose.analysis.metrics import psnr, ssim

    noisy, clean = inputs.noisy_clean(store, image, realisation, dose_scale, seed)
    box = inputs.crop_box(clean.shape, crop, ground_truth)
    y0, y1, x0, x1 = box
    noisy, clean = noisy[y0:y1, x0:x1], clean[y0:y1, x0:x1]
    data_range = float(dose_scale)
    rows: list[dict[str, Any]] = []
    arrays: dict[str, npt.NDArray[Any]] = {}
    if keep_arrays:
        arrays = {"noisy": noisy, "clean": clean, "box": np.asarray(box)}
    for name, source in methods:
        start = time.perf_counter()
        estimate = apply_method(name, noisy, pixel_size_A=pixel_size_A, sigma_px=sigma_px, source=source)
        seconds = time.perf_counter() - start
        if name != "raw":
            estimate = np.clip(estimate, 0.0, data_range)
        rows.append(
            {
                "image": int(image),
                "realisation": int(realisation),
                "method": name,
                "psnr_db": psnr(estimate, clean, data_range=data_range),
                "ssim": ssim(estimate, clean, data_range=data_range),
                "seconds": seconds,
            }
        )
        if keep_arrays:
            arrays[name] = estimate.astype(np.float32)
    return TaskResult(rows=rows, arrays=arrays)


def gaussian_scores(
    *,
    store: str,
    image: int,
    realisation: int,
    dose_scale: float,
    seed: int,
    crop: int | None,
    ground_truth: pd.DataFrame | None,
    sigmas_px: list[float],
) -> TaskResult:
    """PSNR of a Gaussian blur of every σ on one validation image × realisation (the Dask task)."""
    from lowdose.analysis.baselines import gaussian_blur
    from lowdose.analysis.metrics import psnr

    noisy, clean = inputs.noisy_clean(store, image, realisation, dose_scale, seed)
    y0, y1, x0, x1 = inputs.crop_box(clean.shape, crop, ground_truth)
    noisy, clean = noisy[y0:y1, x0:x1], clean[y0:y1, x0:x1]
    rows = [
        {
            "image": int(image),
            "realisation": int(realisation),
            "sigma_px": float(sigma),
            "psnr_db": psnr(np.clip(gaussian_blur(noisy, sigma), 0.0, dose_scale), clean, dose_scale),
        }
        for sigma in sigmas_px
    ]
    return TaskResult(rows=rows)


def best_sigma(rows: pd.DataFrame) -> float:
    """The σ with the highest mean PSNR in ``rows`` (columns ``sigma_px, psnr_db``).

    Examples
    --------
    >>> best_sigma(pd.DataFrame({"sigma_px": [2.0, 2.0, 4.0, 4.0], "psnr_db": [20, 22, 23, 23]}))
    4.0
    """
    means = rows.groupby("sigma_px")["psnr_db"].mean()
    return float(means.idxmax())


def summarise(rows: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Mean and std of PSNR/SSIM per method (population std over images × realisations)."""
    out = []
    for name in order:
        sel = rows[rows["method"] == name]
        out.append(
            {
                "method": name,
                "psnr_mean_db": float(sel["psnr_db"].mean()) if len(sel) else float("nan"),
                "psnr_std_db": float(sel["psnr_db"].std(ddof=0)) if len(sel) else float("nan"),
                "ssim_mean": float(sel["ssim"].mean()) if len(sel) else float("nan"),
                "ssim_std": float(sel["ssim"].std(ddof=0)) if len(sel) else float("nan"),
                "n": len(sel),
                "seconds_per_image": float(sel["seconds"].mean()) if len(sel) else float("nan"),
            }
        )
    return pd.DataFrame(out)


def _methods(options: dict[str, Any], model: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    # (name, model source or "") to run, and the learned baselines left out with why.
    wanted = options["methods"]
    if isinstance(wanted, str):
        wanted = [w.strip() for w in wanted.split(",") if w.strip()]
    known = [*CLASSICAL, *LEARNED, "model"]
    if wanted is not None:
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            raise LowdoseInputError(f"table1 --option methods: unknown {unknown}; expected some of {known}")
    chosen: list[tuple[str, str]] = []
    missing: dict[str, str] = {}
    for name in CLASSICAL:
        if wanted is None or name in wanted:
            chosen.append((name, ""))
    for name in LEARNED:
        if wanted is not None and name not in wanted:
            continue
        path = options[name]
        if path is None:
            missing[name] = "not trained (no artefact given)"
        else:
            chosen.append((name, inputs.model_source(str(path))))
    if wanted is None or "model" in wanted:
        chosen.append(("model", model))
    if not chosen:
        raise LowdoseInputError("table1 --option methods: nothing to evaluate")
    return chosen, missing


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` typed and checked before any work: keys, types, ranges, ``methods`` and baseline paths."""
    opts = inputs.experiment_options(NAME, options, DEFAULTS)
    _methods(opts, "default")
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
    """Run (or resume) table1 into ``out``; return the path of ``table1.md``."""
    opts = check_options(options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = inputs.model_source(model)
    card = inputs.model_card(source)
    images = inputs.resolve_images(Path(data), opts, card)
    methods, missing = _methods(opts, source)
    store = str(Path(data).resolve())
    truth = inputs.ground_truth_by_image(store, np.concatenate([images.images, images.validation]))
    realisations = range(int(opts["realisations"]))

    sigma_px = float("nan")
    tuning = pd.DataFrame()
    if any(name == "gaussian_tuned" for name, _ in methods):
        from lowdose.training.evaluate import GAUSSIAN_SIGMAS_PX

        sigmas = opts["sigmas"] or list(GAUSSIAN_SIGMAS_PX)
        if isinstance(sigmas, str):
            sigmas = [float(s) for s in sigmas.split(",") if s.strip()]
        validation = images.validation
        if opts["n_validation"] is not None:
            validation = validation[: int(opts["n_validation"])]
        if len(validation) == 0:
            raise LowdoseInputError(f"{data}: the validation split is empty; the tuned Gaussian needs it")
        common = {"store": store, "dose_scale": images.dose_scale, "seed": opts["seed"], "crop": opts["crop"]}
        key = {"stage": "gaussian", **common, "sigmas": [float(s) for s in sigmas]}
        folder = parts_dir(out, NAME, key)
        tasks = [
            (
                f"val_{int(i)}_r{k}",
                {
                    **common,
                    "image": int(i),
                    "realisation": k,
                    "ground_truth": truth.get(int(i)),
                    "sigmas_px": [float(s) for s in sigmas],
                },
            )
            for i in validation
            for k in realisations
        ]
        results = run_tasks(
            gaussian_scores, tasks, folder, client=client, progress=progress, label="σ tuning"
        )
        tuning = pd.DataFrame([row for r in results.values() for row in r.rows])
        sigma_px = best_sigma(tuning)

    common = {
        "store": store,
        "dose_scale": images.dose_scale,
        "seed": opts["seed"],
        "crop": opts["crop"],
        "methods": methods,
        "pixel_size_A": images.pixel_size_A,
        "sigma_px": sigma_px,
    }
    key = {"stage": "score", **common, "model_sha": card.get("weights", {}).get("sha256", "")}
    key["learned_sha"] = {
        name: inputs.model_card(src).get("weights", {}).get("sha256", "") for name, src in methods if src
    }
    folder = parts_dir(out, NAME, key)
    panel_image = int(images.images[0])
    # The panel's task also keeps its arrays, so it has its own id: a part cached without them
    # (another image was the panel then) is never taken for it.
    tasks = [
        (
            f"img_{int(i)}_r{k}" + ("_panel" if int(i) == panel_image and k == 0 else ""),
            {
                **common,
                "image": int(i),
                "realisation": k,
                "ground_truth": truth.get(int(i)),
                "keep_arrays": int(i) == panel_image and k == 0,
            },
        )
        for i in images.images
        for k in realisations
    ]
    results = run_tasks(score_image, tasks, folder, client=client, progress=progress, label="table1")
    rows = pd.DataFrame([row for r in results.values() for row in r.rows])
    order = [name for name, _ in methods]
    summary = summarise(rows, order)
    labels = _labels(methods, card, sigma_px)
    summary.insert(1, "label", [labels[m] for m in summary["method"]])
    summary.insert(2, "status", "measured")
    for name, why in missing.items():
        summary.loc[len(summary)] = {
            "method": name,
            "label": LEARNED[name],
            "status": why,
            "n": 0,
            **dict.fromkeys(
                ("psnr_mean_db", "psnr_std_db", "ssim_mean", "ssim_std", "seconds_per_image"), np.nan
            ),
        }
    report.write_csv(out / f"{NAME}.csv", summary)
    report.write_csv(out / f"{NAME}_rows.csv", rows)
    if len(tuning):
        report.write_csv(out / f"{NAME}_gaussian_tuning.csv", tuning)
    panel = results[f"img_{panel_image}_r0_panel"].arrays
    figure = _panel_figure(
        panel, order, labels, truth.get(panel_image), int(opts["zoom_px"]), out / f"{NAME}.png"
    )
    markdown = _markdown(summary, images, opts, options, model, sigma_px, tuning, figure, panel_image)
    return report.write_text(out / f"{NAME}.md", markdown)


def _labels(methods: list[tuple[str, str]], card: dict[str, Any], sigma_px: float) -> dict[str, str]:
    labels = {**CLASSICAL, **LEARNED}
    if np.isfinite(sigma_px):
        labels["gaussian_tuned"] = f"Gaussian blur, σ = {sigma_px:g} px (tuned on validation)"
    arch = card.get("architecture", {}).get("name", "?")
    sha = str(card.get("weights", {}).get("sha256", ""))[:10]
    source = dict(methods).get("model", "default")
    where = "shipped default" if source == "default" else Path(source).name
    labels["model"] = f"**{where} model** ({arch}, sha256 {sha}…)"
    return labels


def _markdown(
    summary: pd.DataFrame,
    images: inputs.ImageSet,
    opts: dict[str, Any],
    options: dict[str, Any],
    model: str | None,
    sigma_px: float,
    tuning: pd.DataFrame,
    figure: Path,
    panel_image: int,
) -> str:
    table = pd.DataFrame(
        {
            "method": summary["label"],
            "PSNR (dB)": [
                report.pm(m, s, 2)
                for m, s in zip(summary["psnr_mean_db"], summary["psnr_std_db"], strict=True)
            ],
            "SSIM": [
                report.pm(m, s, 3) for m, s in zip(summary["ssim_mean"], summary["ssim_std"], strict=True)
            ],
            "n": summary["n"],
            "s / image": ["–" if not np.isfinite(v) else f"{v:.2f}" for v in summary["seconds_per_image"]],
            "status": summary["status"],
        }
    )
    crop = opts["crop"]
    crop_note = (
        f"Every method sees the same {crop}×{crop} crop centred on the particle (`crop={crop}`)."
        if crop
        else "Whole images (no `crop` option)."
    )
    lines = [
        "# Table 1: denoising quality (PSNR / SSIM)",
        "",
        f"Command: `{report.command_line(NAME, images.store, figure.parent, model, options)}`",
        "",
        f"Data: {images.describe()}; {opts['realisations']} Poisson realisation(s) per image "
        f"(seed {opts['seed']}). {crop_note}",
        "",
        "PSNR = 10·log10(range² / MSE) with range = 1.0 count at 0.45 e/px (scaled with the dose); "
        "estimates clipped to [0, range], the raw image unclipped; SSIM from scikit-image (7×7 window). "
        "Mean ± population std over images × realisations.",
        "",
        report.markdown_table(table),
        "",
    ]
    if np.isfinite(sigma_px):
        n_val = tuning["image"].nunique()
        lines += [
            f"The tuned Gaussian's σ = {sigma_px:g} px was chosen on {n_val} validation image(s) from "
            f"σ ∈ {{{', '.join(f'{s:g}' for s in sorted(tuning['sigma_px'].unique()))}}} px "
            f"(`{NAME}_gaussian_tuning.csv`).",
            "",
        ]
        if sigma_px >= float(tuning["sigma_px"].max()):
            lines += [
                f"σ = {sigma_px:g} px is the largest σ tried: a wider blur may score higher still "
                "(extend the grid with `--option sigmas=...`).",
                "",
            ]
    if (summary["status"] != "measured").any():
        lines += [
            "Learned baselines marked *not trained* have no artefact here; train one with "
            "`lowdose train` (`model: dncnn`, `small_unet`, `blindspot` or `unet`) and pass it as "
            "`--option dncnn=ARTEFACT_DIR` (likewise `small_unet=`, `blindspot=`, `unet=`).",
            "",
        ]
    lines += [
        f"![Fig. 4-style panel]({figure.name})",
        "",
        f"Panel: image {panel_image}, realisation 0; each method's output with a zoom on the "
        "particle's surface (red box). Per-image values: "
        f"`{NAME}_rows.csv`; summary: `{NAME}.csv`.",
        "",
    ]
    return "\n".join(lines)


def zoom_centre(
    shape: tuple[int, int], ground_truth: pd.DataFrame | None, box: tuple[int, int, int, int]
) -> tuple[int, int]:
    """``(y, x)`` in crop pixels of the zoom: the top-most true surface Pt column, else the centre."""
    if ground_truth is not None and len(ground_truth):
        truth = inputs.crop_truth(ground_truth, box)
        if "surface" in truth.columns:
            truth = truth[truth["surface"].astype(bool)]
        if "element" in truth.columns and (truth["element"].astype(str) == "Pt").any():
            truth = truth[truth["element"].astype(str) == "Pt"]
        if len(truth):
            top = truth.sort_values(["y_px", "x_px"]).iloc[0]
            return int(top["y_px"]), int(top["x_px"])
    return shape[0] // 2, shape[1] // 2


def _panel_figure(
    arrays: dict[str, npt.NDArray[Any]],
    order: list[str],
    labels: dict[str, str],
    ground_truth: pd.DataFrame | None,
    zoom_px: int,
    path: Path,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    clean = arrays["clean"]
    box = tuple(int(v) for v in arrays["box"])
    panels = [("noisy", "noisy input")]
    short = {**labels, "model": "evaluated model" if "default" not in labels["model"] else "default model"}
    panels += [
        (name, short[name].replace(" (tuned on validation)", " (tuned)")) for name in order if name != "raw"
    ]
    panels += [("clean", "clean (ground truth)")]
    cy, cx = zoom_centre(clean.shape, ground_truth, box)  # type: ignore[arg-type]
    side = max(8, min(zoom_px, *clean.shape))
    zy0 = int(np.clip(cy - side // 2, 0, clean.shape[0] - side))
    zx0 = int(np.clip(cx - side // 2, 0, clean.shape[1] - side))
    zy1, zx1 = zy0 + side, zx0 + side
    lo, hi = np.percentile(clean, [1, 99])
    if hi <= lo:
        hi = lo + 1e-3
    cols = min(5, len(panels))
    blocks = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(2.6 * cols, 3.6 * blocks), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, (name, title) in enumerate(panels):
        image = arrays[name]
        top, bottom = axes[2 * (k // cols), k % cols], axes[2 * (k // cols) + 1, k % cols]
        vmin, vmax = (0.0, 3.0 * float(clean.mean())) if name == "noisy" else (lo, hi)
        top.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
        top.add_patch(Rectangle((zx0, zy0), zx1 - zx0, zy1 - zy0, fill=False, edgecolor="red", lw=0.8))
        top.set_title(title, fontsize=7)
        bottom.imshow(image[zy0:zy1, zx0:zx1], cmap="gray", vmin=vmin, vmax=vmax)
    fig.tight_layout()
    return report.save_figure(fig, path)
