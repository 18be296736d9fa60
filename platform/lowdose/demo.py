"""The end-to-end demo job behind ``lowdose demo`` and ``make demo``.

simulate a synthetic in-situ series → store it as a FrameSeries → start a
LocalCluster → denoise with the shipped default model and analyse every frame →
register the products in a catalog → draw one picture (raw frame, denoised,
likelihood map; ``demo.png``) → print a summary → (optionally) serve the
dashboard. Every step reuses what an earlier run left in the work folder, so a
second run is quick. Only orchestration lives here; the science is in the
modules it calls.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

DEMO_FRAMES = 240
DEMO_SIZE_PX = 512
DEMO_TTA = 8
"""The demo denoises with the 8-fold self-ensemble (``tta``): 8× the denoising for a
higher column F1 (see :mod:`lowdose.parallel.denoise`); ``--tta 1`` is the fast path."""
FIGURE_NAME = "demo.png"
"""The picture the demo draws into its work folder (raw frame | denoised | likelihood map)."""


@dataclass(frozen=True)
class DemoSummary:
    """What the demo measured."""

    workdir: Path
    catalog: Path
    n_frames: int
    size_px: int
    simulate_s: float
    pipeline_frames_per_s: float
    median_surface_f1: float
    median_bulk_f1: float
    verdict_counts: dict[str, int]
    figure: Path
    series_reused: bool = False
    """The series was already complete in the work folder (``simulate_s`` only checked it)."""
    tta: int = 1
    """Self-ensemble size the frames were denoised with."""

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(self.verdict_counts.items()))
        simulation = (
            "reused the series in the work folder" if self.series_reused else f"{self.simulate_s:.1f} s"
        )
        throughput = (
            "reused the run in the work folder (no chunk left to do)"
            if math.isnan(self.pipeline_frames_per_s)
            else f"{self.pipeline_frames_per_s:.2f} frames/s (denoise with tta {self.tta} + analyse)"
        )
        return [
            f"work folder          {self.workdir}",
            f"frames               {self.n_frames} ({self.size_px}² at 40 frames/s, 0.45 e/px/frame)",
            f"simulation           {simulation}",
            f"pipeline throughput  {throughput}",
            f"surface-column F1    median {self.median_surface_f1:.3f} over frames (vs ground truth)",
            f"bulk-column F1       median {self.median_bulk_f1:.3f}",
            f"column verdicts      {verdicts}",
            f"picture              {self.figure}  (raw frame | denoised | likelihood map)",
            f"catalog              {self.catalog}  (lowdose catalog list --catalog {self.catalog})",
        ]


def run_demo(
    workdir: str | Path = "lowdose-demo",
    *,
    n_frames: int = DEMO_FRAMES,
    size_px: int = DEMO_SIZE_PX,
    n_workers: int | None = None,
    tta: int = DEMO_TTA,
    progress: bool = True,
) -> DemoSummary:
    """Run (or resume) the demo in ``workdir`` and return its summary."""
    import pandas as pd

    from lowdose.models.artefact import DEFAULT_DIR
    from lowdose.parallel.denoise import check_tta
    from lowdose.parallel.pipeline import ClusterConfig, PipelineConfig, run_pipeline
    from lowdose.parallel.simulate_series import SeriesSpec, simulate_series
    from lowdose.store.catalog import product_entry, register_products

    check_tta(tta)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    series = workdir / "series.zarr"
    out = workdir / "run"
    catalog = workdir / "catalog.yaml"
    _check_earlier_tta(workdir, out, tta)

    print(f"[1/5] synthetic in-situ series → {series}")
    start = time.perf_counter()
    simulated = simulate_series(series, SeriesSpec(n_frames=n_frames, size_px=size_px), progress=progress)
    simulate_s = time.perf_counter() - start

    print("[2/5] denoise + column/likelihood analysis on a Dask LocalCluster")
    config = PipelineConfig(
        series=series,
        out=out,
        model="default",
        tta=cast(Literal[1, 2, 4, 8], tta),  # checked above
        catalog=catalog,
        progress=progress,
        cluster=ClusterConfig(n_workers=n_workers),
    )
    result = run_pipeline(config)

    print(f"[3/5] catalog → {catalog}")
    model_copy = workdir / "model"
    if not model_copy.exists():
        shutil.copytree(DEFAULT_DIR, model_copy)
    register_products(catalog, [product_entry("default_model", model_copy, source="shipped default")])

    figure = workdir / FIGURE_NAME
    print(f"[4/5] picture → {figure}")
    write_figure(catalog, figure)

    frames = pd.read_parquet(out / "frames.parquet")
    columns = pd.read_parquet(out / "columns.parquet", columns=["verdict"])
    counts = columns["verdict"].value_counts()
    summary = DemoSummary(
        workdir=workdir,
        catalog=catalog,
        n_frames=len(frames),
        size_px=size_px,
        simulate_s=simulate_s,
        pipeline_frames_per_s=_throughput(result),
        median_surface_f1=float(frames["surface_f1"].median()),
        median_bulk_f1=float(frames["bulk_f1"].median()),
        verdict_counts={str(k): int(v) for k, v in counts.items()},
        figure=figure,
        series_reused=simulated.n_written == 0,
        tta=tta,
    )
    print("[5/5] summary")
    for line in summary.lines():
        print("  " + line)
    return summary


def _check_earlier_tta(workdir: Path, out: Path, tta: int) -> None:
    """Refuse, before the cluster starts, to resume a run denoised with another ``tta``."""
    from lowdose.errors import LowdoseInputError
    from lowdose.parallel.pipeline import earlier_tta

    earlier = earlier_tta(out)
    if earlier is not None and earlier != tta:
        raise LowdoseInputError(
            f"{workdir}: its run was denoised with tta {earlier}; run the demo with --tta {earlier} "
            "or give another --workdir"
        )


def _throughput(result: Any) -> float:
    # A resumed run that skipped every chunk measured nothing: report NaN, not a fake figure.
    return float(result.frames_per_s) if result.chunks_run else float("nan")


def write_figure(
    catalog: str | Path, path: str | Path, *, series: str = "series", frame: int | None = None
) -> Path:
    """Draw one frame of ``series`` three ways (raw counts | denoised | likelihood map) to a PNG.

    The likelihood map is the dashboard's (:meth:`lowdose.dashboard.data.SeriesView.image`,
    each column's disc filled with its LLR on a diverging scale centred on 0) over the
    denoised frame, with every detected column ringed in its verdict's colour.

    Parameters
    ----------
    catalog
        A catalog holding ``series`` and its linked DenoisedSeries and ColumnTable.
    path
        Where to write the PNG.
    series
        The FrameSeries entry.
    frame
        The frame to draw; default the middle one.

    Returns
    -------
    Path
        ``path``.
    """
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from lowdose.dashboard.data import VERDICT_COLOURS, SeriesView
    from lowdose.errors import StoreError
    from lowdose.store.catalog import open_catalog

    view = SeriesView(open_catalog(catalog), series)
    if view.denoised is None or not view.has_columns:
        missing = "; ".join(view.problems) or "no DenoisedSeries or ColumnTable linked to it"
        raise StoreError(f"{catalog}: cannot draw {series!r}: {missing}")
    index = view.n_frames // 2 if frame is None else frame
    if not 0 <= index < view.n_frames:
        raise StoreError(f"{catalog}: {series!r} has {view.n_frames} frames; frame {index} does not exist")
    raw = view.image("raw counts", index)
    denoised = view.image("denoised", index)
    llr_map = view.image("likelihood map", index)
    cols = view.columns_at(index)

    fig = Figure(figsize=(12.0, 4.6), dpi=80, layout="constrained")
    axes = fig.subplots(1, 3)
    # nearest: the raw frame keeps its few integer grey levels (honest, and small as a PNG)
    white = max(1, int(np.quantile(raw, 0.999)))
    axes[0].imshow(raw, cmap="gray", vmin=0, vmax=white, interpolation="nearest")
    axes[0].set_title(f"raw counts ({raw.mean():.2f} e/px; black 0, white ≥ {white})")
    low, high = np.quantile(denoised, [0.005, 0.995])
    for ax in axes[1:]:
        ax.imshow(denoised, cmap="gray", vmin=low, vmax=high)
    model_id = _model_id(view)
    axes[1].set_title(f"denoised ({model_id})")
    finite = llr_map[np.isfinite(llr_map)]
    span = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    shown = axes[2].imshow(llr_map, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -span, span))
    fig.colorbar(shown, ax=axes[2], shrink=0.8, label="column log-likelihood ratio")
    handles = []
    for verdict, colour in VERDICT_COLOURS.items():
        chosen = cols.verdict == verdict
        axes[2].scatter(cols.x_px[chosen], cols.y_px[chosen], s=40, facecolors="none", edgecolors=colour)
        handles.append(
            Line2D([], [], ls="", marker="o", mfc="none", mec=colour, label=f"{verdict} {int(chosen.sum())}")
        )
    axes[2].legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.8)
    axes[2].set_title("likelihood map and column verdicts")
    for ax in axes:
        ax.set_axis_off()
    time_s = float(view.time_s[index])
    fig.suptitle(f"lowdose demo: frame {index} of {view.n_frames} (t = {time_s:.3f} s)")
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _model_id(view: Any) -> str:
    """The ``model_id`` the catalog records for the view's DenoisedSeries (``"model"`` if none)."""
    name = view.products.get("DenoisedSeries")
    if name is None:
        return "model"
    return str(view.catalog.describe(name)["metadata"].get("model_id", "model"))
