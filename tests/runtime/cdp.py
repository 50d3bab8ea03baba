"""A small Chrome DevTools protocol client: headless Chromium from the OS, one page.

Starts ``chromium`` with a fresh profile and ``--remote-debugging-port=0``, reads the
port it chose from ``DevToolsActivePort``, and talks to the first page target over a
websocket (``websocket-client``): navigate, evaluate JavaScript, take a screenshot.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--window-size=1100,1150", "--remote-debugging-port=0", "--remote-allow-origins=*"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self, executable: str, timeout: float = 60.0):
        import websocket  # websocket-client (test dependency)

        self.profile = Path(tempfile.mkdtemp(prefix="stepwise-chromium-"))
        self.proc = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port = self._devtools_port(timeout)
        target = self._page_target(port, timeout)
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=timeout)
        self._id = 0

    def _devtools_port(self, timeout: float) -> int:
        active = self.profile / "DevToolsActivePort"
        end = time.monotonic() + timeout
        while not (active.exists() and active.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError("chromium exited: " + self.proc.stderr.read().decode(errors="replace")[-2000:])
            if time.monotonic() > end:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        return int(active.read_text().split()[0])

    @staticmethod
    def _page_target(port: int, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if pages or time.monotonic() > end:
                return pages[0]
            time.sleep(0.1)

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def navigate(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The JSON value of ``expression`` in the page (exceptions raised here)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        end = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value or time.monotonic() > end:
                return value
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)
