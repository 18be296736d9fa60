"""``lowdose evaluate surface``: the paper's Fig. 5, column-detection scores on the surface and in the bulk.

For N images × K noise realisations of a SimulationSet split, each method's output
(the evaluated model, the clean image as a perfect denoiser, optionally a Gaussian
blur) goes through the pipeline's analysis (LoG columns, particle hull) and is scored
against the ground-truth column table: precision, recall, F1 and Jaccard of the
surface columns and of the bulk columns (:func:`lowdose.analysis.columns.structure_scores`).

Writes ``surface.md``, ``surface.csv`` (per method × part × metric: mean, median,
quartiles), ``surface_rows.csv`` (one row per image × realisation × method) and
``surface.png`` (box plots). Options: ``n_images``, ``realisations`` (2), ``seed``,
``split``, ``crop``, ``methods`` (``model,clean``), ``gaussian_sigma_px``,
``analysis`` (an analysis YAML; default: the pipeline's defaults with λ_vac = the dose).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lowdose.evaluation import report
from lowdose.evaluation.detections import run_detections

if TYPE_CHECKING:
    import distributed

NAME = "surface"
PARTS = ("surface", "bulk")
METRICS = ("precision", "recall", "f1", "jaccard")


def summarise(frames: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Mean, median and quartiles of every score per method (NaN scores left out)."""
    out = []
    for method in methods:
        sel = frames[frames["method"] == method]
        for part in PARTS:
            for metric in METRICS:
                values = sel[f"{part}_{metric}"].to_numpy(dtype=np.float64)
                values = values[np.isfinite(values)]
                q25, median, q75 = np.percentile(values, [25, 50, 75]) if len(values) else (np.nan,) * 3
                out.append(
                    {
                        "method": method,
                        "part": part,
                        "metric": metric,
                        "mean": float(values.mean()) if len(values) else np.nan,
                        "median": float(median),
                        "q25": float(q25),
                        "q75": float(q75),
                        "n": len(values),
                    }
                )
    return pd.DataFrame(out)


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` typed and checked before any work (see :data:`lowdose.evaluation.detections.DEFAULTS`)."""
    from lowdose.evaluation.detections import check_options as check

    return check(NAME, options)


def run(
    data: Path,
    out: Path,
    *,
    model: str | None,
    client: distributed.Client | None,
    options: dict[str, Any],
    progress: bool,
) -> Path:
    """Run (or resume) the surface experiment into ``out``; return ``surface.md``."""
    out = Path(out)
    found = run_detections(NAME, data, out, model=model, client=client, options=options, progress=progress)
    frames, methods, labels = found.frames, found.methods, found.labels
    summary = summarise(frames, methods)
    report.write_csv(out / f"{NAME}.csv", summary)
    report.write_csv(out / f"{NAME}_rows.csv", frames)
    figure = _figure(frames, methods, labels, out / f"{NAME}.png")
    table = _table(summary, methods, labels)
    lines = [
        "# Surface and bulk column detection (Fig. 5)",
        "",
        f"Command: `{report.command_line(NAME, found.images.store, out, model, options)}`",
        "",
        found.data_sentence(),
        "",
        "Columns are found by the pipeline's LoG detector on each method's output, the particle's "
        "surface by its hull, and scored against the ground-truth Pt columns (match within "
        "0.6 Å). Cells: median [25th–75th percentile] over images × realisations.",
        "",
        report.markdown_table(table),
        "",
        f"![Fig. 5-style box plots]({figure.name})",
        "",
        f"Per-image scores: `{NAME}_rows.csv`; summary: `{NAME}.csv`.",
        "",
    ]
    return report.write_text(out / f"{NAME}.md", "\n".join(lines))


def _table(summary: pd.DataFrame, methods: list[str], labels: dict[str, str]) -> pd.DataFrame:
    rows = []
    for method in methods:
        for part in PARTS:
            row: dict[str, Any] = {"method": labels[method], "columns": part}
            for metric in METRICS:
                hit = summary[
                    (summary["method"] == method) & (summary["part"] == part) & (summary["metric"] == metric)
                ].iloc[0]
                row[metric] = (
                    "–"
                    if not np.isfinite(hit["median"])
                    else f"{hit['median']:.2f} [{hit['q25']:.2f}–{hit['q75']:.2f}]"
                )
            row["n"] = int(summary[(summary["method"] == method) & (summary["part"] == part)]["n"].max())
            rows.append(row)
    return pd.DataFrame(rows)


def _figure(frames: pd.DataFrame, methods: list[str], labels: dict[str, str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PARTS), len(METRICS), figsize=(3.0 * len(METRICS), 3.2 * len(PARTS)))
    for r, part in enumerate(PARTS):
        for c, metric in enumerate(METRICS):
            ax = axes[r, c]
            data = []
            for method in methods:
                values = frames.loc[frames["method"] == method, f"{part}_{metric}"].to_numpy(dtype=float)
                data.append(values[np.isfinite(values)])
            ax.boxplot(data, showfliers=True, widths=0.6)
            ax.set_xticks(range(1, len(methods) + 1), [labels[m] for m in methods], rotation=20, fontsize=7)
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(f"{part} {metric}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return report.save_figure(fig, path)
