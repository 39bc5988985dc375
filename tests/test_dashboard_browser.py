"""The dashboard in a real browser: ``flowcause dashboard`` on a scenario run's store, the
root-cause page opened in headless Chromium, the suspected step read off the page and a
screenshot of it kept in the test's directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import chromium, screenshot_when_shown
from tests.scenario_run import expected_ranking, run_scenario

START_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def browser() -> str:
    binary = chromium()
    if binary is None:
        message = "chromium is not installed (make install adds Debian's chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    store = run_scenario(tmp_path / "run")
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "dashboard", "--store", str(store),
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, (tmp_path / "dashboard.log").read_text()
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.3)
        yield url, store
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_rca_page_in_chromium_names_the_suspected_step(browser: str, dashboard: tuple[str, Path],
                                                       tmp_path: Path) -> None:
    url, store = dashboard
    top = expected_ranking(store).top
    assert top is not None
    shot = tmp_path / "rca.png"
    text = screenshot_when_shown(f"{url}/?page=rca", f" {top.step} (top candidate {top.node}, ", shot,
                                 timeout=90)
    assert "Ranked candidates" in text
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    print(f"screenshot: {shot}")

