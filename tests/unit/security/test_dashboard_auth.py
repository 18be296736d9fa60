"""A real ``lowdose dashboard`` with basic auth: loopback only by default, nothing without a login."""

from __future__ import annotations

import http.cookiejar
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.e2e.dashboard_server import dashboard_server

pytestmark = pytest.mark.slow  # starts a Panel server (~10 s)


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                found.add(address)
    return found


def _non_loopback_ipv4() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for UDP connect
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_basic_auth_server_on_loopback(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"version": 2, "entries": {}, "data": {}}))
    with dashboard_server(catalog, tmp_path / "server.log", "--basic-auth", "ann:s3cret") as url:
        port = urllib.parse.urlsplit(url).port
        assert port is not None
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
        other = _non_loopback_ipv4()
        if other is not None:
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=2).close()

        anonymous = urllib.request.urlopen(url, timeout=120)
        assert urllib.parse.urlsplit(anonymous.url).path == "/login"
        assert "password" in anonymous.read().decode().lower()

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        wrong = opener.open(url + "login", data=b"username=ann&password=nope", timeout=120)
        assert urllib.parse.urlsplit(wrong.url).path == "/login" and "user" not in {c.name for c in jar}

        page = opener.open(url + "login", data=b"username=ann&password=s3cret", timeout=120)
        assert "user" in {c.name for c in jar}
        assert urllib.parse.urlsplit(page.url).path == "/"
        assert "bokeh" in page.read().decode().lower()
