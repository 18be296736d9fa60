"""Column detection on denoised simulations, scored against the ground truth (``surface``, ``likelihood``).

One task per image × noise realisation: draw the noisy image, denoise it with each
method — the evaluated model, a perfect denoiser (the clean image itself: the ceiling
of the analysis) and optionally a Gaussian blur — and run the pipeline's per-frame
kernel :func:`lowdose.analysis.frame.analyze_frame` against the image's ground-truth
columns. Returns the frame rows (surface/bulk precision, recall, F1, Jaccard) and the
detected columns with their LLR and whether a true column matches them. No dask here;
torch only through the model of :mod:`lowdose.evaluation.runner`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from lowdose.errors import LowdoseInputError
from lowdose.evaluation import inputs
from lowdose.evaluation.runner import TaskResult, denoise

METHOD_LABELS = {
    "model": "evaluated model",
    "clean": "clean image (perfect denoiser)",
    "gaussian": "Gaussian blur",
}
"""Methods the column experiments can compare."""

DEFAULTS: dict[str, Any] = {
    "realisations": 2,
    "methods": "model,clean",
    "gaussian_sigma_px": None,
    "analysis": None,
}
"""Options shared by ``surface`` and ``likelihood`` (besides ``inputs.COMMON_DEFAULTS``)."""


COLUMN_FIELDS = ("image", "realisation", "method", "x_px", "y_px", "llr", "verdict", "surface", "matched")
"""Fields of the column rows of :func:`analyse_image` (coordinates in whole-image pixels)."""


def analysis_config(path: str | None, dose_e_per_px: float) -> Any:
    """The analysis config: a YAML file (kind ``analysis``), else the defaults with λ_vac = dose."""
    from lowdose.analysis.frame import AnalysisConfig
    from lowdose.config.base import load_config

    if path is not None:
        return load_config(AnalysisConfig, Path(path), block="analysis")
    return AnalysisConfig.model_validate({"lambda_vac": float(dose_e_per_px)})


def methods_from(options: Mapping[str, Any]) -> list[str]:
    """The ``methods`` option as a list, checked (``gaussian`` needs ``gaussian_sigma_px``)."""
    wanted = options["methods"]
    names = [w.strip() for w in wanted.split(",")] if isinstance(wanted, str) else list(wanted)
    names = [n for n in names if n]
    unknown = sorted(set(names) - set(METHOD_LABELS))
    if unknown or not names:
        raise LowdoseInputError(f"--option methods: expected some of {sorted(METHOD_LABELS)}, got {wanted!r}")
    if "gaussian" in names and options.get("gaussian_sigma_px") is None:
        raise LowdoseInputError("--option methods=...gaussian needs --option gaussian_sigma_px=SIGMA")
    return names


def analyse_image(
    *,
    store: str,
    image: int,
    realisation: int,
    dose_scale: float,
    seed: int,
    crop: int | None,
    ground_truth: pd.DataFrame,
    methods: list[str],
    model: str,
    gaussian_sigma_px: float | None,
    pixel_size_A: float,
    config: Any,
) -> TaskResult:
    """Frame rows and column rows of every method on one image × realisation (the Dask task).

    ``TaskResult.rows`` holds dicts with ``kind`` ``"frame"`` (one per method: the eight
    surface/bulk scores and counts) or ``"column"`` (one per detected column: ``x_px,
    y_px, llr, verdict, surface, matched``).
    """
    from lowdose.analysis.frame import analyze_frame, match_ground_truth

    noisy, clean = inputs.noisy_clean(store, image, realisation, dose_scale, seed)
    box = inputs.crop_box(clean.shape, crop, ground_truth)
    y0, y1, x0, x1 = box
    noisy, clean = noisy[y0:y1, x0:x1], clean[y0:y1, x0:x1]
    truth = inputs.crop_truth(ground_truth, box) if crop else ground_truth
    rows: list[dict[str, Any]] = []
    for method in methods:
        estimate = _estimate(method, noisy, clean, model, gaussian_sigma_px)
        columns, frame = analyze_frame(
            noisy, estimate, pixel_size_A=pixel_size_A, frame=int(image), config=config, ground_truth=truth
        )
        ident = {"image": int(image), "realisation": int(realisation), "method": method}
        rows.append({"kind": "frame", **ident, **frame})
        matched = match_ground_truth(
            columns, truth, pixel_size_A=pixel_size_A, tolerance_A=config.match_tolerance_A
        )
        for col, hit in zip(columns.itertuples(index=False), matched, strict=True):
            rows.append(
                {
                    "kind": "column",
                    **ident,
                    "x_px": float(col.x_px) + x0,
                    "y_px": float(col.y_px) + y0,
                    "llr": float(col.llr),
                    "verdict": str(col.verdict),
                    "surface": bool(col.surface),
                    "matched": bool(hit),
                }
            )
    return TaskResult(rows=rows)


def _estimate(
    method: str,
    noisy: npt.NDArray[np.float32],
    clean: npt.NDArray[np.float32],
    model: str,
    gaussian_sigma_px: float | None,
) -> npt.NDArray[np.float64]:
    if method == "model":
        return np.asarray(denoise(model, noisy), dtype=np.float64)
    if method == "clean":
        return np.asarray(clean, dtype=np.float64)
    if method == "gaussian" and gaussian_sigma_px is not None:
        from lowdose.analysis.baselines import gaussian_blur

        return gaussian_blur(noisy, float(gaussian_sigma_px))
    raise LowdoseInputError(f"unknown method {method!r}; expected one of {sorted(METHOD_LABELS)}")


@dataclass(frozen=True)
class Detections:
    """What :func:`run_detections` gives a report: rows, inputs and the methods' labels."""

    frames: pd.DataFrame
    columns: pd.DataFrame
    images: inputs.ImageSet
    opts: dict[str, Any]
    card: dict[str, Any]
    methods: list[str]
    labels: dict[str, str]

    def data_sentence(self) -> str:
        """The report's "Data:" line: images, realisations, seed and crops."""
        where = f"{self.opts['crop']}² crops on the particle" if self.opts["crop"] else "whole images"
        return (
            f"Data: {self.images.describe()}; {self.opts['realisations']} Poisson realisation(s) "
            f"per image (seed {self.opts['seed']}); {where}."
        )


def check_options(
    experiment: str, options: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The options of ``surface``/``likelihood`` typed and checked (no data read)."""
    opts = inputs.experiment_options(experiment, options, {**DEFAULTS, **(defaults or {})})
    methods_from(opts)
    return opts


def run_detections(
    experiment: str,
    data: Path,
    out: Path,
    *,
    model: str | None,
    client: Any,
    options: dict[str, Any],
    progress: bool,
    defaults: Mapping[str, Any] | None = None,
) -> Detections:
    """Run (or resume) :func:`analyse_image` over the chosen images × realisations into ``out``."""
    from lowdose.evaluation.runner import parts_dir, run_tasks

    Path(out).mkdir(parents=True, exist_ok=True)

    opts = check_options(experiment, options, defaults)
    methods = methods_from(opts)
    source = inputs.model_source(model)
    card = inputs.model_card(source)  # also names the model's own split
    images = inputs.resolve_images(Path(data), opts, card)
    store = str(Path(data).resolve())
    truth = inputs.ground_truth_by_image(store, images.images)
    empty = [i for i, t in truth.items() if len(t) == 0]
    if empty:
        raise LowdoseInputError(
            f"{data}: no ground-truth columns for image(s) {empty[:5]}; {experiment} needs the store's "
            "ground-truth table (PATH.columns.parquet)"
        )
    config = analysis_config(opts["analysis"], images.dose_e_per_px)
    sigma = opts["gaussian_sigma_px"]
    common = {
        "store": store,
        "dose_scale": images.dose_scale,
        "seed": opts["seed"],
        "crop": opts["crop"],
        "methods": methods,
        "model": source,
        "gaussian_sigma_px": None if sigma is None else float(sigma),
        "pixel_size_A": images.pixel_size_A,
        "config": config,
    }
    key = {
        **{k: v for k, v in common.items() if k != "config"},
        "config": config.model_dump(mode="json"),
        "model_sha": card.get("weights", {}).get("sha256", ""),
    }
    folder = parts_dir(Path(out), experiment, key)
    tasks = [
        (f"img_{int(i)}_r{k}", {**common, "image": int(i), "realisation": k, "ground_truth": truth[int(i)]})
        for i in images.images
        for k in range(int(opts["realisations"]))
    ]
    results = run_tasks(analyse_image, tasks, folder, client=client, progress=progress, label=experiment)
    rows = pd.DataFrame([row for r in results.values() for row in r.rows])
    frames = rows[rows["kind"] == "frame"].dropna(axis=1, how="all").drop(columns="kind")
    columns = rows[rows["kind"] == "column"].reindex(columns=COLUMN_FIELDS)
    found = list(dict.fromkeys(frames["method"]))
    return Detections(
        frames=frames.reset_index(drop=True),
        columns=columns.reset_index(drop=True),
        images=images,
        opts=opts,
        card=card,
        methods=found,
        labels={m: method_label(m, card, opts) for m in found},
    )


def method_label(method: str, card: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """A method's label for tables and figures."""
    if method == "model":
        arch = card.get("architecture", {}).get("name", "?")
        return f"model ({arch})"
    if method == "gaussian":
        return f"Gaussian blur σ = {float(options['gaussian_sigma_px']):g} px"
    return METHOD_LABELS[method]
