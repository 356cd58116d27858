"""A headless Chromium driven over the DevTools protocol through a pipe (``--remote-debugging-pipe``):
no webdriver, no websocket library, nothing but the Debian ``chromium`` package.

Chromium reads protocol messages from fd 3 and writes to fd 4, each a JSON object ended by a NUL byte. A
reader thread collects responses (by id) and events (console messages, exceptions, log entries, network
requests), which is what the tests assert on.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars", "--mute-audio")


_FD_SHIM = ("import fcntl, os, sys\n"
            "a, b = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])\n"
            "os.dup2(a, 3); os.dup2(b, 4); os.close(a); os.close(b)\n"
            "os.execv(sys.argv[3], sys.argv[3:])\n")


def find_chromium() -> str | None:
    for name in (os.environ.get("VDE_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser",
                 "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


class CDPError(RuntimeError):
    pass


class Chromium:
    """One headless browser with one page; ``with Chromium(exe, tmp) as b: b.open(url) ...``."""

    def __init__(self, executable: str, user_data_dir: Path, width: int = 1400, height: int = 900):
        self.width, self.height = width, height
        cmd_r, self._cmd_w = os.pipe()  # we write commands, chromium reads them on fd 3
        self._res_r, res_w = os.pipe()  # chromium writes results on fd 4
        user_data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(user_data_dir / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        # A tiny Python shim puts the pipe ends on fds 3 and 4 and execs chromium (no preexec_fn: unsafe with
        # threads running; no sh: dash cannot redirect fds above 9).
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FD_SHIM, str(cmd_r), str(res_w), executable, *FLAGS,
             f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", f"--window-size={width},{height}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, pass_fds=(cmd_r, res_w))
        os.close(cmd_r)
        os.close(res_w)
        self._next = 0
        self._responses: dict[int, dict] = {}
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session: str | None = None
        self.page_start = 0  # index of the first event of the page opened last

    # -- protocol ---------------------------------------------------------------------------------------
    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._res_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._responses[-1] = {"error": {"message": "chromium closed the pipe"}}
                    self._cond.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                with self._cond:
                    if "id" in message:
                        self._responses[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0, session: bool = True) -> dict:
        with self._cond:
            self._next += 1
            ident = self._next
        message = {"id": ident, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._responses:
                if -1 in self._responses:
                    raise CDPError(f"{method}: {self._responses[-1]['error']['message']}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CDPError(f"{method}: no answer in {timeout} s")
                self._cond.wait(left)
            response = self._responses.pop(ident)
        if "error" in response:
            raise CDPError(f"{method}: {response['error']}")
        return response.get("result", {})

    def wait_event(self, method: str, timeout: float = 30.0, since: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[since:]:
                    if event.get("method") == method:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CDPError(f"no {method} event in {timeout} s")
                self._cond.wait(left)

    # -- page -------------------------------------------------------------------------------------------
    def start(self) -> "Chromium":
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        return self

    def open(self, url: str, timeout: float = 30.0) -> None:
        with self._cond:
            mark = len(self.events)
        self.page_start = mark
        self.send("Page.navigate", {"url": url})
        event = self.wait_event("Page.loadEventFired", timeout, since=mark)
        assert event

    def eval(self, expression: str):
        """The value of a JS expression (JSON-serialisable results only); a thrown error raises."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CDPError(f"{expression[:80]}: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> None:
        params: dict = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", params, timeout=60)["data"]))

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (failed loads, CSP violations) of the
        page opened last."""
        found = []
        for event in list(self.events[self.page_start:]):
            method, p = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = p.get("exceptionDetails", {})
                found.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                      for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                found.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return found

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in list(self.events[self.page_start:])
                if e.get("method") == "Network.requestWillBeSent"]

    # -- lifetime ---------------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=5)
        except CDPError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()

    def __enter__(self) -> "Chromium":
        try:
            return self.start()
        except Exception:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()
