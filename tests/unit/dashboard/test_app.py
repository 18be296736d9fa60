from pathlib import Path

import panel as pn
import pytest

from lowdose.dashboard.app import SeriesPanel, build_app
from lowdose.dashboard.data import SeriesView
from lowdose.store.catalog import open_catalog, register, register_run_outputs
from tests.catalog_products import write_series_products


def _alerts(page: pn.Column) -> list[str]:
    return [str(obj.object) for obj in page.select(pn.pane.Alert)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "catalog file not found"),
        ("version: 2\nentries:\n  x: {reader: 'os:system', kwargs: {args: ['{data(d)}']}}\n", "not allowed"),
        ("!!python/object/apply:os.system ['true']\n", "not safe plain YAML"),
    ],
)
def test_bad_catalogs_become_an_alert_not_a_traceback(
    tmp_path: Path, text: str | None, expected: str
) -> None:
    path = tmp_path / "cat.yaml"
    if text is not None:
        path.write_text(text)
    alerts = _alerts(build_app(str(path)))
    assert len(alerts) == 1 and expected in alerts[0] and "cat.yaml" in alerts[0]


def test_panel_links_slider_tap_and_status(tmp_path: Path) -> None:
    products = write_series_products(tmp_path, n_frames=12, size=24)
    cat = tmp_path / "c.yaml"
    register(cat, "s", products["series"])
    register_run_outputs(cat, tmp_path, prefix="s", series="s")
    page = build_app(str(cat))
    assert _alerts(page) == []
    panel = SeriesPanel(SeriesView(open_catalog(cat), "s"))
    panel.slider.value = 5
    assert "Frame 5" in panel.status.object and panel.jump.value == 5
    panel._on_curve_tap(x=8.6, y=0.0)
    assert panel.slider.value == 9
    panel.jump.value = 2
    assert panel.slider.value == 2
    panel._advance()
    assert panel.slider.value == 3
    assert panel._png().getvalue()[:4] == b"\x89PNG"
    image = panel._frame_element(3, "likelihood map", 4)
    assert image.data.shape == (24, 24) and "likelihood map" in image.opts.get().kwargs["title"]
    marks = panel._marker_element(3, True)
    assert len(marks.Points.I) == len(panel.view.columns_at(3).x_px)
    assert len(panel._marker_element(3, False).Points.I) == 0
    panel._on_image_tap(x=5.0, y=5.0)
    history = panel._history_element(3, panel.pick.value)
    assert len(history.Curve.I) == 12
    assert panel.errors.objects == []


def test_cli_argument_parsers(tmp_path: Path) -> None:
    from lowdose.cli.catalog import parse_criterion
    from lowdose.dashboard.serve import parse_basic_auth
    from lowdose.errors import LowdoseInputError

    assert parse_basic_auth("ann:s3:cret") == {"ann": "s3:cret"}
    users = tmp_path / "users.json"
    users.write_text('{"ann": "x"}')
    assert parse_basic_auth(str(users)) == str(users.resolve())
    assert parse_basic_auth(None) is None
    with pytest.raises(LowdoseInputError, match="USER:PASS"):
        parse_basic_auth("nopass")
    assert parse_criterion("dose_e_per_px=0.45") == ("dose_e_per_px", "0.45")
    assert parse_criterion("frame_rate_hz>=40") == ("frame_rate_hz", ("40", None))
    assert parse_criterion("defocus_nm<=5") == ("defocus_nm", (None, "5"))
    assert parse_criterion("n_frames=10..20") == ("n_frames", ("10", "20"))
    with pytest.raises(LowdoseInputError, match="KEY=VALUE"):
        parse_criterion("nonsense")


def test_a_port_in_use_or_out_of_range_is_one_line_and_prints_no_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from tests.unit.inprocess import lowdose_main

    products = write_series_products(tmp_path, n_frames=4, size=16)
    cat = tmp_path / "c.yaml"
    register(cat, "s", products["series"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = lowdose_main(capsys, "dashboard", "--catalog", str(cat), "--port", str(port))
    assert busy.returncode == 2
    assert busy.stderr.strip() == (
        f"lowdose: error: --address 127.0.0.1 --port {port}: cannot listen (Address already in use)"
    )
    assert "http://" not in busy.stdout  # the URL used to be printed before the bind failed
    for bad in ("-1", "70000"):
        out = lowdose_main(capsys, "dashboard", "--catalog", str(cat), "--port", bad)
        assert out.returncode == 2 and "http://" not in out.stdout
        assert "--port" in out.stderr
