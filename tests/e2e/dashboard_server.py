"""Run ``lowdose dashboard --port 0`` in a subprocess; helpers to drive it with Chromium."""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
IGNORED_CONSOLE = ("GL Driver Message", "WebGL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def dashboard_server(catalog: Path, log: Path, *extra: str) -> Iterator[str]:
    """Run the dashboard for ``catalog`` until the block ends; yield the URL it printed.

    ``--port 0``: the dashboard picks a free port and prints its URL (the pages' websocket
    must be allowed from that port, which the browser tests check).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOWDOSE_")}
    cmd = [sys.executable, "-m", "lowdose", "dashboard", "--catalog", str(catalog), "--port", "0", *extra]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=catalog.parent)
    try:
        # wait for the printed URL (the port is listening by then), not a page: every GET /
        # builds a session, and timed-out retries would pile sessions onto a loaded server
        deadline = time.monotonic() + 120
        while not (found := re.search(r"lowdose dashboard: (http://127\.0\.0\.1:(\d+)/)", log.read_text())):
            if proc.poll() is not None:
                raise RuntimeError(f"dashboard exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dashboard printed no URL:\n{log.read_text()}")
            time.sleep(0.3)
        url, port = found.group(1), int(found.group(2))
        assert port != 0, log.read_text()
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
        with urllib.request.urlopen(url, timeout=120) as response:
            assert response.status == 200, response.status
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright Python package")


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)


def is_blank(png: bytes) -> bool:
    """A canvas with (almost) no structure: nearly all pixels the same grey level."""
    values = pixels(png)
    return float(values.std()) < 3.0


def differs(a: bytes, b: bytes, fraction: float = 5e-4) -> bool:
    """Whether two screenshots differ in more than ``fraction`` of their pixels (by > 30 grey levels)."""
    pa, pb = pixels(a), pixels(b)
    if pa.shape != pb.shape:
        return True
    return float((np.abs(pa - pb) > 30).mean()) > fraction
