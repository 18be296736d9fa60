"""The Panel dashboard: browse a catalog, scrub a frame series, and see its structure beside the pixels.

Layout: a catalog browser (metadata search, the series and its products), a frame
viewer (raw counts / denoised / n-frame time average / likelihood map, column
markers coloured by verdict, surface columns outlined), frame slider, play/pause
and jump-to-frame, the structural time series from the FrameTable linked both
ways with the viewer (click → jump; slider → cursor), a column's LLR history
(click a column), and PNG/CSV export. Only catalog entries can be shown: nothing
typed in the browser becomes a filesystem path. Every error ends up in the page.

Imports Panel/HoloViews/Bokeh (the ``dashboard`` extra); never torch or dask directly.
"""

from __future__ import annotations

import io
import logging
import traceback
from collections.abc import Callable
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param
from holoviews import streams

from lowdose.dashboard.data import VERDICT_COLOURS, VIEW_MODES, SeriesView, block_reduce
from lowdose.errors import LowdoseInputError
from lowdose.store.catalog import LowdoseCatalog, ProductKind, open_catalog

LOG = logging.getLogger("lowdose.dashboard")
VIEWER_PX = 440
"""Width of the frame viewer's plot area in screen pixels."""
PLAY_INTERVAL_MS = 200
"""Playback period (one frame per tick)."""
_BROWSER_FIELDS = ("kind", "material", "dose_e_per_px", "frame_rate_hz", "pixel_size_A", "n_frames", "series")

hv.extension("bokeh", logo=False)


def _legend_html() -> str:
    """A static legend (Bokeh legends rebuilt on every frame upset BokehJS)."""
    dots = " ".join(
        f'<span style="color:{colour}">&#9679;</span> {verdict}'
        for verdict, colour in VERDICT_COLOURS.items()
    )
    return f'{dots} <span style="color:#00bcd4">&#9711;</span> surface column'


def _alert(message: str, kind: str = "danger") -> pn.pane.Alert:
    return pn.pane.Alert(message, alert_type=kind, sizing_mode="stretch_width")


def _guarded(report: Callable[[str], None], fallback: Callable[[], Any]) -> Callable[..., Any]:
    """Wrap a render callback: on error, report the message in the page and return ``fallback()``."""

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except LowdoseInputError as err:
                report(str(err))
            except Exception as err:  # the page must show it, never a blank plot
                LOG.error("dashboard callback failed:\n%s", traceback.format_exc())
                report(f"{type(err).__name__}: {err}")
            return fallback()

        return inner

    return wrap


class _Pick(param.Parameterized):
    """The column position last clicked in the viewer: ``(x_px, y_px, frame)``."""

    value = param.Parameter(default=None)


class SeriesPanel:
    """Viewer, time series and history for one :class:`SeriesView`."""

    def __init__(self, view: SeriesView):
        self.view = view
        n = view.n_frames
        self.errors = pn.Column(sizing_mode="stretch_width")
        for problem in view.problems:
            self.errors.append(_alert(problem, "warning"))
        modes = [m for m in VIEW_MODES if self._mode_available(m)]
        self.mode = pn.widgets.RadioButtonGroup(label="View", options=modes, value=modes[0])
        self.n_average = pn.widgets.IntInput(
            label="Frames averaged", value=8, start=1, end=min(n, 512), width=120
        )
        self.slider = pn.widgets.IntSlider(
            label="Frame",
            start=0,
            end=max(n - 1, 1),
            value=0,
            sizing_mode="stretch_width",
            css_classes=["ld-slider"],
        )
        self.slider.disabled = n <= 1
        self.jump = pn.widgets.IntInput(
            label="Jump to frame", value=0, start=0, end=n - 1, width=140, css_classes=["ld-jump"]
        )
        self.play = pn.widgets.Toggle(
            label="▶ Play / ❚❚ Pause", value=False, width=150, css_classes=["ld-play"]
        )
        self.markers = pn.widgets.Checkbox(label="Column markers", value=view.has_columns)
        self.status = pn.pane.Markdown("", css_classes=["ld-status"], sizing_mode="stretch_width")
        fields = view.time_series_fields()
        self.field = pn.widgets.Select(
            label="Time series", options=fields, value=fields[0] if fields else None
        )
        self._callback: Any = None
        self.pick = _Pick()

        self.jump.param.watch(lambda e: setattr(self.slider, "value", int(e.new)), "value")
        self.slider.param.watch(self._on_frame, "value")
        self.play.param.watch(self._on_play, "value")

        image = hv.DynamicMap(
            pn.bind(self._frame_element, frame=self.slider, mode=self.mode, n_avg=self.n_average)
        )
        marks = hv.DynamicMap(pn.bind(self._marker_element, frame=self.slider, markers=self.markers))
        self.image_tap = streams.Tap(source=image, x=None, y=None)
        self.image_tap.add_subscriber(self._on_image_tap)
        curve = hv.DynamicMap(pn.bind(self._curve_element, field=self.field))
        cursor = hv.DynamicMap(
            pn.bind(lambda frame: hv.VLine(frame).opts(color="red", line_width=2), self.slider)
        )
        self.curve_tap = streams.Tap(source=curve, x=None, y=None)
        self.curve_tap.add_subscriber(self._on_curve_tap)
        history = hv.DynamicMap(pn.bind(self._history_element, frame=self.slider, pick=self.pick.param.value))

        self.png = pn.widgets.FileDownload(
            callback=self._png,
            filename="frame.png",
            label="Export frame PNG",
            color="primary",
            width=170,
        )
        self.csv = pn.widgets.FileDownload(
            callback=lambda: io.BytesIO(self.view.frame_table_csv()),
            filename=f"{view.series}_frames.csv",
            label="Export table CSV",
            color="primary",
            width=170,
            css_classes=["ld-csv"],
        )
        self.columns_csv = pn.widgets.FileDownload(
            callback=lambda: io.BytesIO(self.view.columns_csv(self.frame)),
            filename="columns.csv",
            label="Export frame columns CSV",
            width=200,
        )
        self._on_frame(None)
        viewer = pn.pane.HoloViews(image * marks, css_classes=["ld-frame-view"])
        self.layout = pn.Column(
            self.errors,
            pn.Row(self.mode, self.n_average, self.markers, pn.pane.HTML(_legend_html())),
            pn.Row(
                viewer,
                pn.Column(
                    pn.pane.HoloViews(
                        curve * cursor, css_classes=["ld-timeseries"], sizing_mode="stretch_width"
                    ),
                    self.field,
                    pn.pane.HoloViews(history, css_classes=["ld-history"], sizing_mode="stretch_width"),
                    sizing_mode="stretch_width",
                ),
            ),
            self.slider,
            pn.Row(self.play, self.jump, self.status),
            pn.Row(self.png, self.csv, self.columns_csv),
            sizing_mode="stretch_width",
        )

    @property
    def frame(self) -> int:
        """The frame on show."""
        return int(self.slider.value or 0)

    def _mode_available(self, mode: str) -> bool:
        if mode == "denoised":
            return self.view.denoised is not None
        if mode == "likelihood map":
            return self.view.has_columns
        return True

    def _report(self, message: str) -> None:
        self.errors.objects = [_alert(message)]

    # --- frame viewer ---------------------------------------------------------------------------
    def _frame_element(self, frame: int, mode: str, n_avg: int) -> hv.Image:
        @_guarded(self._report, lambda: hv.Image(np.zeros((2, 2))))
        def render() -> hv.Image:
            ny, nx = self.view.shape
            image, _ = block_reduce(self.view.image(mode, frame, n_avg))
            opts: dict[str, Any] = {"cmap": "gray", "colorbar": False}
            if mode == "likelihood map":
                finite = image[np.isfinite(image)]
                limit = float(np.max(np.abs(finite))) if finite.size else 1.0
                opts = {
                    "cmap": "RdBu_r",
                    "clim": (-limit, limit),
                    "colorbar": True,
                    "clipping_colors": {"NaN": "black"},
                }
            return hv.Image(np.flipud(image), bounds=(0, 0, nx, ny), kdims=["x_px", "y_px"]).opts(
                framewise=True,
                invert_yaxis=True,
                frame_width=VIEWER_PX,
                frame_height=max(64, int(VIEWER_PX * ny / nx)),
                tools=["tap"],
                title=f"{self.view.series} — frame {frame} ({mode})",
                **opts,
            )

        return render()

    def _marker_element(self, frame: int, markers: bool) -> hv.Overlay:
        @_guarded(self._report, lambda: hv.Overlay([hv.Points([]), hv.Points([])]))
        def render() -> hv.Overlay:
            cols = self.view.columns_at(frame)
            show = markers and self.view.has_columns
            keep = np.ones(cols.x_px.shape, bool) if show else np.zeros(cols.x_px.shape, bool)
            data = {
                "x": cols.x_px[keep] + 0.5,
                "y": cols.y_px[keep] + 0.5,
                "llr": cols.llr[keep],
                "verdict": cols.verdict[keep],
            }
            points = hv.Points(data, kdims=["x", "y"], vdims=["llr", "verdict"]).opts(
                color="verdict",
                cmap=VERDICT_COLOURS,
                size=7,
                line_color=None,
                tools=["hover"],
                show_legend=False,
            )
            rim = keep & cols.surface
            outline = {"x": cols.x_px[rim] + 0.5, "y": cols.y_px[rim] + 0.5}
            ring = hv.Points(outline, kdims=["x", "y"]).opts(
                marker="circle", size=14, fill_alpha=0, line_color="cyan", line_width=1.5
            )
            return points * ring

        return render()

    def _on_frame(self, _event: Any) -> None:
        frame = self.frame
        time_s = self.view.time_s[frame] if frame < len(self.view.time_s) else float("nan")
        self.status.object = f"**Frame {frame}** / {self.view.n_frames - 1} — t = {float(time_s):.3f} s"
        self.png.filename = f"{self.view.series}_frame{frame}.png"
        self.columns_csv.filename = f"{self.view.series}_frame{frame}_columns.csv"
        if self.jump.value != frame:
            self.jump.value = frame

    def _on_play(self, event: Any) -> None:
        if event.new and self._callback is None:
            self._callback = pn.state.add_periodic_callback(self._advance, period=PLAY_INTERVAL_MS)
        elif not event.new and self._callback is not None:
            self._callback.stop()
            self._callback = None

    def _advance(self) -> None:
        self.slider.value = (self.frame + 1) % self.view.n_frames

    def _png(self) -> io.BytesIO:
        try:
            data = self.view.frame_png(str(self.mode.value), self.frame, int(self.n_average.value or 1))
        except Exception as err:
            self._report(f"PNG export failed: {err}")
            data = b""
        return io.BytesIO(data)

    # --- time series ----------------------------------------------------------------------------
    def _curve_element(self, field: str | None) -> hv.Curve:
        @_guarded(self._report, lambda: hv.Curve([]))
        def render() -> hv.Curve:
            if field is None:
                return hv.Curve([], "frame", "value").opts(
                    title="no FrameTable linked", responsive=True, height=260
                )
            frames, values = self.view.curve(field)
            return hv.Curve((frames, values), "frame", field).opts(
                responsive=True,
                height=260,
                tools=["tap", "hover"],
                title=f"{field} (click to jump)",
                framewise=True,
            )

        return render()

    def _on_curve_tap(self, x: float | None = None, y: float | None = None) -> None:
        if x is None:
            return
        self.slider.value = int(np.clip(round(x), 0, self.view.n_frames - 1))

    # --- column history -------------------------------------------------------------------------
    def _on_image_tap(self, x: float | None = None, y: float | None = None) -> None:
        if x is None or y is None or not self.view.has_columns:
            return
        self.pick.value = (float(x) - 0.5, float(y) - 0.5, self.frame)

    def _history_element(self, frame: int, pick: tuple[float, float, int] | None = None) -> hv.Overlay:
        @_guarded(self._report, lambda: hv.Overlay([hv.Curve([])]))
        def render() -> hv.Overlay:
            cursor = hv.VLine(frame).opts(color="red")
            if pick is None:
                empty = hv.Curve([], "frame", "llr").opts(
                    title="click a column in the image for its LLR history", responsive=True, height=220
                )
                return empty * cursor
            table = self.view.column_history(*pick)
            if table.empty:
                return (
                    hv.Curve([], "frame", "llr").opts(title="no column near the click", responsive=True)
                    * cursor
                )
            x0, y0 = float(table["x_px"].iloc[0]), float(table["y_px"].iloc[0])
            lo, hi = float(table["llr"].min()), float(table["llr"].max())
            pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1e-3)
            line = hv.Curve((table["frame"], table["llr"]), "frame", "llr").opts(
                responsive=True,
                height=220,
                title=f"LLR of the column near ({x0:.1f}, {y0:.1f}) px",
                framewise=True,
                color="gray",
                ylim=(lo - pad, hi + pad),
                xlim=(0, max(self.view.n_frames - 1, 1)),
            )
            dots = hv.Points(table, kdims=["frame", "llr"], vdims=["verdict"]).opts(
                color="verdict", cmap=VERDICT_COLOURS, size=5, show_legend=False
            )
            return (line * dots * cursor).opts(framewise=True)

        return render()


class Dashboard:
    """The whole page for one catalog."""

    def __init__(self, catalog: LowdoseCatalog):
        self.catalog = catalog
        self._updating = False
        self.search = pn.widgets.TextInput(
            label="Search (KEY=VALUE, KEY>=V, KEY=LO..HI)", placeholder="dose_e_per_px=0.45", width=320
        )
        self.series = pn.widgets.Select(
            label="Frame series",
            options=catalog.list(ProductKind.FRAME_SERIES),
            width=260,
            css_classes=["ld-series"],
        )
        self.choices = {
            kind: pn.widgets.Select(label=kind, options=["", *catalog.list(kind)], width=220)
            for kind in (ProductKind.DENOISED_SERIES, ProductKind.COLUMN_TABLE, ProductKind.FRAME_TABLE)
        }
        self.table = pn.pane.DataFrame(
            self._entries_frame(catalog.list()), sizing_mode="stretch_width", max_height=220
        )
        self.messages = pn.Column(sizing_mode="stretch_width")
        self.main = pn.Column(sizing_mode="stretch_width")
        self.search.param.watch(self._on_search, "value")
        self.series.param.watch(self._on_series, "value")
        for widget in self.choices.values():
            widget.param.watch(self._on_products, "value")
        browser = pn.Column(
            pn.pane.Markdown(f"### Catalog `{catalog.source}`"),
            pn.Row(self.search, self.series, *self.choices.values()),
            pn.Accordion(("Entries", self.table), active=[]),
            sizing_mode="stretch_width",
        )
        self.layout = pn.Column(browser, self.messages, self.main, sizing_mode="stretch_width")
        if not self.series.options:
            self.messages.objects = [
                _alert(f"{catalog.source}: no FrameSeries entries in this catalog", "warning")
            ]
        else:
            self._on_series(None)

    def _entries_frame(self, names: list[str]) -> Any:
        import pandas as pd

        rows = []
        for name in names:
            meta = self.catalog.entries[name].metadata
            rows.append({"name": name, **{k: meta.get(k, "") for k in _BROWSER_FIELDS}})
        return pd.DataFrame(rows, columns=["name", *_BROWSER_FIELDS])

    def _on_search(self, event: Any) -> None:
        from lowdose.cli.catalog import parse_criterion

        try:
            criteria = dict(parse_criterion(t) for t in str(event.new).split()) if event.new.strip() else {}
            names = self.catalog.search(**criteria)
        except LowdoseInputError as err:
            self.messages.objects = [_alert(str(err), "warning")]
            return
        self.messages.objects = []
        self.table.object = self._entries_frame(names)
        series = [n for n in self.catalog.list(ProductKind.FRAME_SERIES) if n in names or not criteria]
        derived = {self.catalog.entries[n].metadata.get("series") for n in names}
        series += [n for n in self.catalog.list(ProductKind.FRAME_SERIES) if n in derived and n not in series]
        self.series.options = series
        if not series:
            self.messages.objects = [_alert("no frame series match the search", "info")]

    def _on_series(self, _event: Any) -> None:
        name = self.series.value
        if not name:
            return
        linked = self.catalog.products_of(name)
        self._updating = True
        try:
            for kind, widget in self.choices.items():
                widget.value = (linked.get(str(kind)) or [""])[0]
        finally:
            self._updating = False
        self._load()

    def _on_products(self, _event: Any) -> None:
        if not self._updating:
            self._load()

    def _load(self) -> None:
        name = self.series.value
        if not name:
            return
        products = {str(kind): widget.value for kind, widget in self.choices.items()}
        try:
            view = SeriesView(self.catalog, name, {k: v for k, v in products.items() if v})
            panel = SeriesPanel(view)
        except LowdoseInputError as err:
            self.main.objects = [_alert(str(err))]
            return
        except Exception as err:
            LOG.error("cannot show %s:\n%s", name, traceback.format_exc())
            self.main.objects = [_alert(f"cannot show {name}: {type(err).__name__}: {err}")]
            return
        self.messages.objects = []
        self.main.objects = [panel.layout]


def build_app(catalog_path: str, *, root: str | None = None, allow_absolute: bool = False) -> pn.Column:
    """Build one session's page for the catalog at ``catalog_path`` (errors become an alert in the page).

    A plain layout rather than a Panel template: templates fetch fonts from CDNs,
    and the dashboard must work (and log no console errors) without the internet.
    """
    header = pn.pane.Markdown("## lowdose — frame series dashboard", sizing_mode="stretch_width")
    page = pn.Column(header, sizing_mode="stretch_width", css_classes=["ld-page"])
    try:
        catalog = open_catalog(catalog_path, root=root, allow_absolute=allow_absolute)
        page.append(Dashboard(catalog).layout)
    except LowdoseInputError as err:
        page.append(_alert(str(err)))
    except Exception as err:
        LOG.error("dashboard failed:\n%s", traceback.format_exc())
        page.append(_alert(f"{type(err).__name__}: {err}"))
    return page
