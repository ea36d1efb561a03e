"""Headless Chromium for browser tests, driven over chromedriver's W3C WebDriver HTTP API.

No client library: WebDriver is a W3C standard HTTP+JSON protocol, and the few commands a test
needs (new session, navigate, find an element, click, read text) are one request each, sent
with ``urllib``. Chromium and chromedriver come from Debian's packages (``make browser``).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Headless on a machine without a screen, a sandbox or outside network (no background
# connections to Google's hosts), with a fresh profile every time.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element identifier


def browser_available() -> bool:
    return bool(shutil.which(CHROMIUM) or shutil.which("chromium")) and bool(
        shutil.which(CHROMEDRIVER) or shutil.which("chromedriver")
    )


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One chromedriver process and one browser session; ``close`` ends both."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self._timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        port = _free_port()
        self._base = f"http://127.0.0.1:{port}"
        driver = shutil.which(CHROMEDRIVER) or shutil.which("chromedriver") or CHROMEDRIVER
        self._driver = subprocess.Popen(
            [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            self._wait_ready()
            options = {
                "binary": shutil.which(CHROMIUM) or shutil.which("chromium") or CHROMIUM,
                "args": [*CHROMIUM_FLAGS, f"--user-data-dir={self._profile}"],
            }
            caps = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
            session = self._call("POST", "/session", {"capabilities": caps})
            self._session = f"/session/{session['sessionId']}"
        except BaseException:
            self._stop_driver()
            raise

    def open(self, url: str) -> None:
        self._call("POST", f"{self._session}/url", {"url": url})

    def text(self, css: str) -> str:
        """The visible text of the first element matching ``css``."""
        value: str = self._call("GET", f"{self._session}/element/{self._find(css)}/text")
        return value

    def count(self, css: str) -> int:
        found = self._call("POST", f"{self._session}/elements", _css(css))
        return len(found)

    def click(self, css: str) -> None:
        self._call("POST", f"{self._session}/element/{self._find(css)}/click", {})

    def wait_for(self, css: str, timeout_s: float = 20.0) -> str:
        """The text of ``css`` once it exists (after a form was submitted, say)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.count(css):
                return self.text(css)
            if time.monotonic() > deadline:
                raise WebDriverError(f"no element {css!r} within {timeout_s} s")
            time.sleep(0.1)

    def screenshot(self) -> bytes:
        """The visible page as PNG (for a failing test's report)."""
        return base64.b64decode(self._call("GET", f"{self._session}/screenshot"))

    def source(self) -> str:
        value: str = self._call("GET", f"{self._session}/source")
        return value

    def close(self) -> None:
        try:
            self._call("DELETE", self._session)
        except (WebDriverError, OSError):
            pass
        finally:
            self._stop_driver()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _find(self, css: str) -> str:
        found = self._call("POST", f"{self._session}/element", _css(css))
        element: str = found[_ELEMENT]
        return element

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self._base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = json.loads(error.read() or b"{}").get("value", {})
            raise WebDriverError(f"{method} {path}: {detail.get('message', error)}") from None
        return answer.get("value")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._timeout_s
        while time.monotonic() < deadline:
            if self._driver.poll() is not None:
                raise WebDriverError("chromedriver exited at start")
            try:
                if self._call("GET", "/status").get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            time.sleep(0.1)
        raise WebDriverError("chromedriver did not become ready")

    def _stop_driver(self) -> None:
        self._driver.terminate()
        try:
            self._driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._driver.kill()
            self._driver.wait()
        shutil.rmtree(self._profile, ignore_errors=True)


def _css(selector: str) -> dict[str, str]:
    return {"using": "css selector", "value": selector}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
