"""The command line's answers to a new user's mistakes: one line naming the file, a non-zero
exit code, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCORING = ROOT / "examples" / "scoring"


def test_an_empty_pipeline_file_is_refused_by_validate_and_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    assert main(["validate", str(empty)]) == 1
    assert capsys.readouterr().out.strip() == f"{empty}: holds no Pipeline document (it is empty)"
    assert main(["run", str(empty), "--models", str(SCORING / "steps.py"),
                 "--input", str(SCORING / "request.json")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"flowcause: {empty}: holds no Pipeline document (it is empty)")


def test_malformed_yaml_is_one_line_with_file_line_and_column(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("metadata: {name: x}\nspec:\n  steps: [a, b\n")
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "<unicode string>" not in out
    assert out.startswith(f"{bad}:4:1: invalid YAML: expected ',' or ']'")


@pytest.mark.parametrize("content, message", [
    ("{bad", "is not JSON: Expecting property name"),
    (None, "cannot read the request file"),
])
def test_a_bad_request_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     content: str | None, message: str) -> None:
    request = tmp_path / "request.json"
    if content is not None:
        request.write_text(content)
    assert main(["run", str(SCORING / "pipeline.yaml"), "--models", str(SCORING / "steps.py"),
                 "--input", str(request)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowcause: ") and message in err and str(request) in err


def test_ctrl_c_during_run_is_one_line_and_exit_130(tmp_path: Path) -> None:
    started = tmp_path / "started"
    steps = tmp_path / "slow_steps.py"
    steps.write_text(
        "import asyncio, pathlib\n"
        "async def standardise(inputs):\n"
        f"    pathlib.Path({str(started)!r}).touch()\n"
        "    await asyncio.sleep(60)\n"
        "    return inputs\n"
        "def score(inputs): return inputs\n"
        "def review(inputs): return inputs\n"
        "def approve(inputs): return inputs\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", str(SCORING / "pipeline.yaml"),
         "--models", str(steps), "--input", str(SCORING / "request.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the request never reached its first step"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip() == "flowcause: interrupted"


def test_traces_refuses_a_directory_that_is_no_trace_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("not a store")
    assert main(["traces", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "is not a trace store" in err and out == ""  # errors on stderr, as other commands'
    assert main(["traces", str(tmp_path / "missing")]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("flowcause traces: ") and out == ""
    empty = tmp_path / "empty"
    empty.mkdir()  # a store nothing was flushed to yet
    assert main(["traces", str(empty)]) == 0
    assert "no committed batches" in capsys.readouterr().out


def test_a_model_for_a_step_that_does_not_exist_is_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--model`` for a misspelt step was ignored: the step ran its own code."""
    assert main(["run", str(SCORING / "pipeline.yaml"), "--models", str(SCORING / "steps.py"),
                 "--input", str(SCORING / "request.json"), "--model", "scoer=score"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == ("flowcause: models given for 'scoer', which is no step of the "
                                    "pipelines (steps: approve, review, score, standardise)")
