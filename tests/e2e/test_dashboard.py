"""Browser tests of ``lowdose dashboard``: Playwright driving Debian's Chromium against a real server."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lowdose.store.catalog import register, register_run_outputs
from tests.catalog_products import write_long_series, write_series_products
from tests.e2e.dashboard_server import (
    CHROMIUM,
    CHROMIUM_ARGS,
    IGNORED_CONSOLE,
    dashboard_server,
    differs,
    is_blank,
    require_chromium,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

N_FRAMES = 40
LONG_FRAMES = 100_000
LONG_TARGET = 50_000


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dash")
    products = write_series_products(folder / "run", n_frames=N_FRAMES, size=48)
    cat = folder / "catalog.yaml"
    register(cat, "small", products["series"])
    register_run_outputs(cat, folder / "run", prefix="small", series="small")
    long = write_long_series(folder / "long", n_frames=LONG_FRAMES, written=(0, LONG_TARGET))
    register(cat, "long", long["series"])
    register(cat, "long.frames", long["frames"], series="long")
    register(cat, "long.columns", long["columns"], series="long")
    register(cat, "broken", products["series"], kind="FrameSeries")
    doomed = folder / "run" / "doomed_frames.parquet"
    shutil.copy(products["frames"], doomed)
    register(cat, "broken.frames", doomed, series="broken")
    doomed.unlink()  # a catalog entry whose product has gone
    return cat


@pytest.fixture(scope="module")
def server(catalog: Path) -> Iterator[str]:
    require_chromium()
    with dashboard_server(catalog, catalog.parent / "server.log") as url:
        yield url
    log = (catalog.parent / "server.log").read_text()
    # tornado logs closed websockets when pages close; failures in lowdose code must not appear
    ours = [line for line in log.splitlines() if "/lowdose/" in line or "dashboard callback failed" in line]
    assert ours == [], log


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A dashboard page with console capture and the few locators the tests need."""

    def __init__(self, browser: Any, url: str, shots: Path):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"error: {e}"))
        self.shots = shots
        started = time.monotonic()
        self.page.goto(url)
        self.viewer = self.page.locator(".ld-frame-view canvas").first
        self.viewer.wait_for(state="visible", timeout=60_000)
        self.wait_until(lambda: not is_blank(self.viewer.screenshot()), "the frame viewer stays blank")
        self.open_s = time.monotonic() - started

    def errors(self) -> list[str]:
        return [m for m in self.console if m.startswith("error") and not any(s in m for s in IGNORED_CONSOLE)]

    def status_text(self) -> str:
        status = self.page.locator(".ld-status p")
        return str(status.first.inner_text()) if status.count() else ""

    def frame(self) -> int:
        text = self.status_text()
        match = re.search(r"Frame (\d+)", text)
        assert match, text
        return int(match.group(1))

    def wait_until(self, check: Any, message: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                self.page.screenshot(path=str(self.shots / "failure.png"), full_page=True)
                raise AssertionError(f"{message} (screenshot: {self.shots / 'failure.png'})")
            time.sleep(0.1)

    def shot(self, name: str) -> bytes:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)
        return self.viewer.screenshot(path=str(self.shots / f"{name}-viewer.png"))

    def timeseries(self) -> Any:
        return self.page.locator(".ld-timeseries canvas").first

    def press_slider(self, key: str, times: int = 1) -> None:
        handle = self.page.locator(".ld-slider .noUi-handle").first
        handle.focus()
        for _ in range(times):
            handle.press(key)


def test_page_viewer_slider_timeseries_export(
    server: str, browser: Any, tmp_path: Path, catalog: Path
) -> None:
    page = Page(browser, server, tmp_path)
    first = page.shot("01-loaded")
    assert not is_blank(first), "frame viewer is blank"
    assert page.frame() == 0
    curve_before = page.timeseries().screenshot(path=str(tmp_path / "01-timeseries.png"))

    # moving the slider (keyboard on its handle) changes the frame, the image and the cursor
    page.press_slider("ArrowRight", 12)
    page.wait_until(lambda: page.frame() == 12, "slider did not move to frame 12")
    page.wait_until(lambda: differs(page.viewer.screenshot(), first), "image did not change with the slider")
    moved = page.shot("02-slider")
    assert not is_blank(moved)
    page.wait_until(lambda: differs(page.timeseries().screenshot(), curve_before), "cursor did not move")
    page.timeseries().screenshot(path=str(tmp_path / "02-timeseries.png"))

    # clicking the time series jumps to that frame
    box = page.timeseries().bounding_box()
    page.page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.5)
    page.wait_until(lambda: page.frame() > 20, "clicking the time series did not jump")
    jumped = page.frame()
    assert 20 < jumped < N_FRAMES
    page.wait_until(lambda: differs(page.viewer.screenshot(), moved), "image did not follow the click")
    page.shot("03-clicked")

    # the CSV export downloads the FrameTable
    with page.page.expect_download(timeout=30_000) as info:
        page.page.locator(".ld-csv button").first.click()
    csv = tmp_path / "frames.csv"
    info.value.save_as(csv)
    table = pd.read_csv(csv)
    expected = pd.read_parquet(catalog.parent / "run" / "frames.parquet")
    assert list(table.columns) == list(expected.columns)
    assert len(table) == N_FRAMES
    pd.testing.assert_series_equal(table["n_surface"], expected["n_surface"], check_dtype=False)

    # clicking a column shows its LLR history
    history = page.page.locator(".ld-history canvas").first
    history_before = history.screenshot()
    vbox = page.viewer.bounding_box()
    page.page.mouse.click(vbox["x"] + vbox["width"] * 0.45, vbox["y"] + vbox["height"] * 0.5)
    page.wait_until(lambda: differs(history.screenshot(), history_before), "column history did not appear")
    history.screenshot(path=str(tmp_path / "03-history.png"))

    # other views render too
    for label in ("denoised", "likelihood map", "time average"):
        before = page.viewer.screenshot()
        page.page.get_by_role("button", name=label, exact=True).click()
        page.wait_until(
            lambda before=before: differs(page.viewer.screenshot(), before), f"{label} view unchanged"
        )
        assert not is_blank(page.shot(f"04-{label.replace(' ', '-')}"))
    assert page.errors() == [], page.errors()
    page.page.close()


def test_missing_product_is_reported_in_the_page(server: str, browser: Any, tmp_path: Path) -> None:
    page = Page(browser, server, tmp_path)
    page.page.locator(".ld-series select").first.select_option("broken")
    alert = page.page.get_by_text(re.compile(r"broken\.frames.*cannot open")).first
    alert.wait_for(timeout=30_000)
    assert "FileNotFoundError" in alert.inner_text()
    page.wait_until(lambda: not is_blank(page.viewer.screenshot()), "viewer blank for the broken series")
    page.shot("broken")
    assert page.errors() == [], page.errors()
    page.page.close()


def test_hundred_thousand_frames_open_and_scrub(
    server: str, browser: Any, tmp_path: Path, record_property: Any
) -> None:
    page = Page(browser, server, tmp_path)
    started = time.monotonic()
    page.page.locator(".ld-series select").first.select_option("long")
    page.wait_until(lambda: f"/ {LONG_FRAMES - 1}" in page.status_text(), "long series did not open")
    page.wait_until(lambda: not is_blank(page.viewer.screenshot()), "long series frame 0 is blank")
    open_s = time.monotonic() - started
    before = page.shot("long-0")

    jump = page.page.locator(".ld-jump input").first
    started = time.monotonic()
    jump.fill(str(LONG_TARGET))
    jump.press("Enter")
    page.wait_until(lambda: page.frame() == LONG_TARGET, "jump did not reach the target frame")
    page.wait_until(lambda: differs(page.viewer.screenshot(), before), "jumped frame did not render")
    jump_s = time.monotonic() - started
    after_jump = page.shot("long-jump")

    started = time.monotonic()
    page.press_slider("ArrowRight", 1)
    page.wait_until(lambda: page.frame() == LONG_TARGET + 1, "slider did not move on the long series")
    page.wait_until(lambda: differs(page.viewer.screenshot(), after_jump), "slider move did not render")
    slider_s = time.monotonic() - started
    page.shot("long-slider")
    assert page.errors() == [], page.errors()
    record_property("open_s", round(open_s, 2))
    record_property("jump_s", round(jump_s, 2))
    record_property("slider_s", round(slider_s, 2))
    print(f"100k-frame series: open {open_s:.2f} s, jump {jump_s:.2f} s, slider move {slider_s:.2f} s")
    page.page.close()
