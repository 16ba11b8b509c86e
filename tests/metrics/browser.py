"""A minimal WebDriver client (W3C protocol over HTTP, standard library only) for headless Chromium.

Tests use it to open a page the way a person would and ask the browser what it shows. Needs the Debian
packages ``chromium`` and ``chromium-driver``; :func:`find_browser` skips the test when they are missing,
except under CI (environment variable CI set), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def find_browser() -> tuple[str, str]:
    """Paths of chromium and chromedriver, or skip (fail under CI) with the install command."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    message = "headless browser test needs chromium and chromedriver: apt-get install -y chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so the browser must be installed)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One headless Chromium session driven through chromedriver; use as a context manager."""

    def __init__(self, chromium: str, driver: str) -> None:
        self.chromium, self.driver = chromium, driver

    def __enter__(self) -> "Browser":
        self.port = _free_port()
        self.profile = tempfile.mkdtemp(prefix="llmsim-chromium-")
        self.proc = subprocess.Popen([self.driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": self.chromium, "args": CHROME_ARGS + [f"--user-data-dir={self.profile}"]},
        }}}
        self.session = self._call("POST", "/session", caps)["value"]["sessionId"]
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        except Exception:  # noqa: BLE001 - best effort; the driver process is stopped below either way
            pass
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def open(self, path: Path) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": Path(path).resolve().as_uri()})

    def run(self, script: str) -> Any:
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})["value"]

    def console_errors(self) -> list[str]:
        entries = self._call("POST", f"/session/{self.session}/se/log", {"type": "browser"})["value"]
        return [e["message"] for e in entries if e.get("level") == "SEVERE"]
