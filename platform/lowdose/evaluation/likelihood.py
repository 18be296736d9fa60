"""``lowdose evaluate likelihood``: the paper's Fig. 6, LLR of real versus spurious detections.

Every column the pipeline detects in a method's output (N images × K noise
realisations) gets its Poisson log-likelihood ratio against the raw counts
(:func:`lowdose.analysis.likelihood.column_llr`); it is *real* when a ground-truth
column (particle or support) lies within the match tolerance (0.6 Å, one-to-one),
*spurious* otherwise. The figure shows both LLR distributions per method as
letter-value plots with the paper's guidelines at 0.005 (real above) and −0.006
(spurious below); the table gives the fraction of each class on each side.

Writes ``likelihood.md``, ``likelihood.csv`` (per method × class), ``likelihood_columns.csv``
(one row per detected column) and ``likelihood.png``. Options as for ``surface``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from lowdose.analysis.likelihood import REAL_THRESHOLD, SPURIOUS_THRESHOLD
from lowdose.evaluation import report
from lowdose.evaluation.detections import run_detections

if TYPE_CHECKING:
    import distributed

NAME = "likelihood"
CLASSES = ("real", "spurious")


def side_fractions(
    llr: npt.ArrayLike, real: float = REAL_THRESHOLD, spurious: float = SPURIOUS_THRESHOLD
) -> dict[str, float]:
    """Fractions of the finite LLRs at or above ``real``, strictly between, and at or below ``spurious``.

    Examples
    --------
    >>> side_fractions([0.01, 0.0, -0.01, 0.005])
    {'above_real': 0.5, 'between': 0.25, 'below_spurious': 0.25}
    """
    values = np.asarray(llr, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"above_real": np.nan, "between": np.nan, "below_spurious": np.nan}
    above = float(np.mean(values >= real))
    below = float(np.mean(values <= spurious))
    return {"above_real": above, "between": 1.0 - above - below, "below_spurious": below}


def summarise(columns: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per method and class (matched = real, unmatched = spurious): counts, LLR quantiles, sides."""
    out = []
    for method in methods:
        sel = columns[columns["method"] == method]
        for cls in CLASSES:
            llr = sel.loc[sel["matched"].astype(bool) == (cls == "real"), "llr"].to_numpy(dtype=np.float64)
            finite = llr[np.isfinite(llr)]
            q = np.percentile(finite, [25, 50, 75]) if finite.size else (np.nan,) * 3
            out.append(
                {
                    "method": method,
                    "truth": cls,
                    "n": int(finite.size),
                    "llr_q25": float(q[0]),
                    "llr_median": float(q[1]),
                    "llr_q75": float(q[2]),
                    **side_fractions(finite),
                }
            )
    return pd.DataFrame(out)


def letter_values(values: npt.ArrayLike, min_tail: int = 5) -> list[tuple[float, float]]:
    """Nested (lower, upper) quantile pairs of a letter-value plot: fourths, eighths, ...

    Depth k covers the quantiles ``2^-(k+1)`` and ``1 − 2^-(k+1)``; deeper levels are
    added while at least ``min_tail`` values lie beyond each end.

    Examples
    --------
    >>> [tuple(round(v, 2) for v in pair) for pair in letter_values(range(101), min_tail=10)]
    [(25.0, 75.0), (12.5, 87.5)]
    """
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    pairs: list[tuple[float, float]] = []
    k = 1
    while arr.size and (k == 1 or arr.size * 2.0 ** -(k + 1) >= min_tail):
        p = 2.0 ** -(k + 1)
        lo, hi = np.quantile(arr, [p, 1.0 - p])
        pairs.append((float(lo), float(hi)))
        k += 1
    return pairs


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
    """Run (or resume) the likelihood experiment into ``out``; return ``likelihood.md``."""
    out = Path(out)
    found = run_detections(NAME, data, out, model=model, client=client, options=options, progress=progress)
    columns, methods, labels = found.columns, found.methods, found.labels
    summary = summarise(columns, methods)
    report.write_csv(out / f"{NAME}.csv", summary)
    report.write_csv(out / f"{NAME}_columns.csv", columns)
    figure = _figure(columns, methods, labels, out / f"{NAME}.png")
    table = pd.DataFrame(
        {
            "method": [labels[m] for m in summary["method"]],
            "detections": [
                "real (matched)" if t == "real" else "spurious (unmatched)" for t in summary["truth"]
            ],
            "n": summary["n"],
            "median LLR": [f"{v:.4f}" if np.isfinite(v) else "–" for v in summary["llr_median"]],
            f"≥ {REAL_THRESHOLD:g}": [_percent(v) for v in summary["above_real"]],
            "between": [_percent(v) for v in summary["between"]],
            f"≤ {SPURIOUS_THRESHOLD:g}": [_percent(v) for v in summary["below_spurious"]],
        }
    )
    lines = [
        "# Likelihood ratio of real and spurious columns (Fig. 6)",
        "",
        f"Command: `{report.command_line(NAME, found.images.store, out, model, options)}`",
        "",
        found.data_sentence(),
        "",
        "Each column detected in a method's output is *real* when a ground-truth column (particle or "
        "support) is within 0.6 Å (one-to-one), *spurious* otherwise; its LLR is the per-pixel mean "
        "Poisson log-likelihood ratio of the raw counts in a 0.5 Å disc (λ from the output) against "
        f"the vacuum rate. The paper's guidelines: LLR ≥ {REAL_THRESHOLD:g} real, "
        f"≤ {SPURIOUS_THRESHOLD:g} spurious, undecided between. Percentages: share of each class on "
        "each side.",
        "",
        report.markdown_table(table),
        "",
        f"![Fig. 6-style LLR distributions]({figure.name})",
        "",
        f"Per-column values: `{NAME}_columns.csv`; summary: `{NAME}.csv`.",
        "",
    ]
    return report.write_text(out / f"{NAME}.md", "\n".join(lines))


def _percent(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{100.0 * value:.1f} %"


def _figure(columns: pd.DataFrame, methods: list[str], labels: dict[str, str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    colours = {"real": "tab:blue", "spurious": "tab:red"}
    fig, ax = plt.subplots(figsize=(2.2 + 2.8 * len(methods), 4.4))
    ticks, names = [], []
    shown: list[float] = [REAL_THRESHOLD, SPURIOUS_THRESHOLD]
    for m, method in enumerate(methods):
        sel = columns[columns["method"] == method]
        for c, cls in enumerate(CLASSES):
            x = 3 * m + c
            llr = sel.loc[sel["matched"].astype(bool) == (cls == "real"), "llr"].to_numpy(dtype=np.float64)
            llr = llr[np.isfinite(llr)]
            ticks.append(x)
            names.append(f"{textwrap.fill(labels[method], 16)}\n{cls} (n={llr.size})")
            pairs = letter_values(llr)
            for depth, (lo, hi) in enumerate(pairs):
                width = 0.8 * 0.75**depth
                ax.add_patch(
                    Rectangle(
                        (x - width / 2, lo),
                        width,
                        hi - lo,
                        facecolor=colours[cls],
                        alpha=0.35 + 0.5 * 0.7**depth,
                        edgecolor="black",
                        lw=0.4,
                    )
                )
            if llr.size:
                ax.plot([x - 0.4, x + 0.4], [np.median(llr)] * 2, color="black", lw=1.2)
                outside = llr[(llr < pairs[-1][0]) | (llr > pairs[-1][1])]
                ax.plot(np.full(outside.size, x), outside, ".", color=colours[cls], ms=2, alpha=0.5)
                shown += list(np.percentile(llr, [1, 99]))
    ax.axhline(REAL_THRESHOLD, color="tab:green", ls="--", lw=1, label=f"real ≥ {REAL_THRESHOLD:g}")
    ax.axhline(
        SPURIOUS_THRESHOLD, color="tab:purple", ls="--", lw=1, label=f"spurious ≤ {SPURIOUS_THRESHOLD:g}"
    )
    span = max(shown) - min(shown)
    ax.set_ylim(min(shown) - 0.1 * span, max(shown) + 0.1 * span)
    ax.set_xlim(-0.8, 3 * len(methods) - 1.2)
    ax.set_xticks(ticks, names, fontsize=7)
    ax.set_ylabel("column LLR (per pixel)")
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return report.save_figure(fig, path)
