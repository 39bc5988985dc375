"""Headless Chromium for tests: load a page, wait until it shows a text, take a screenshot.

A Streamlit page renders after its script has run on the server, which takes real time,
so ``chromium --screenshot`` (which shoots at load) would race it. Instead Chromium runs
with a DevTools port and is driven over the DevTools protocol (with the ``websockets``
client): navigate, poll the page's text until the expected string is there, then capture
the screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

STATE = """({text: document.body ? document.body.innerText : '',
            html: document.body ? document.body.innerHTML.length : 0,
            running: !!document.querySelector('[data-testid="stStatusWidget"]')})"""
SETTLED = 4  # polls (0.5 s apart) with an unchanged page
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class PageNotReady(AssertionError):
    """The page did not show the expected text in time; carries the text it did show."""


def _devtools_url(log: Path, process: subprocess.Popen[bytes], deadline: float) -> str:
    while time.monotonic() < deadline:
        found = re.search(r"DevTools listening on (ws://\S+)", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"chromium did not open its DevTools port:\n{log.read_text(errors='replace')[-2000:]}")


async def _drive(browser_ws: str, url: str, text: str, out: Path, size: tuple[int, int],
                 timeout: float) -> str:
    port = re.search(r"ws://[^/]+", browser_ws).group(0)  # type: ignore[union-attr]
    http = port.replace("ws://", "http://")
    with urllib.request.urlopen(urllib.request.Request(f"{http}/json/new?about:blank", method="PUT"),
                                timeout=10) as response:
        page_ws = json.load(response)["webSocketDebuggerUrl"]
    async with connect(page_ws, max_size=256 * 2**20) as conn:
        return await _shoot(conn, url, text, out, size, timeout)


async def _shoot(conn: Any, url: str, text: str, out: Path, size: tuple[int, int], timeout: float) -> str:
    ids = iter(range(1, 1_000_000))

    async def call(method: str, **params: Any) -> dict[str, Any]:
        my_id = next(ids)
        await conn.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            message = json.loads(await conn.recv())
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    width, height = size
    await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
               mobile=False)
    await call("Page.navigate", url=url)
    deadline, shown, sizes = time.monotonic() + timeout, "", [-1]
    while time.monotonic() < deadline:
        state = (await call("Runtime.evaluate", returnByValue=True, expression=STATE))["result"]["value"]
        shown = state["text"]
        sizes.append(state["html"])
        # settled: the text is there, no script run is in progress, and the page has stopped
        # changing (Streamlit loads the code of some elements lazily, after the text)
        if text in shown and not state["running"] and len(set(sizes[-SETTLED:])) == 1:
            break
        await asyncio.sleep(0.5)
    else:
        raise PageNotReady(f"{url} did not show {text!r} within {timeout:.0f} s; it showed:\n{shown[:3000]}")
    shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
    out.write_bytes(base64.b64decode(shot["data"]))
    return shown


def screenshot_when_shown(url: str, text: str, out: Path, size: tuple[int, int] = (1400, 1800),
                          timeout: float = 60.0) -> str:
    """Load ``url`` in headless Chromium, wait (at most ``timeout`` s) until its text contains
    ``text`` and no script run is in progress, save a PNG screenshot to ``out`` and return
    the page's text. Raises :class:`PageNotReady` otherwise."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed")
    profile = Path(tempfile.mkdtemp(prefix="flowcause-chromium-"))
    log = profile / "stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile / 'profile'}", "--remote-debugging-port=0",
             f"--window-size={size[0]},{size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "HOME": str(profile)})
    try:
        browser_ws = _devtools_url(log, process, time.monotonic() + 30)
        return asyncio.run(asyncio.wait_for(_drive(browser_ws, url, text, out, size, timeout),
                                            timeout + 30))
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)
