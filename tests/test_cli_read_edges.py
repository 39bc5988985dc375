"""Edges of the commands that read a store or serve it (``traces``, ``report``, ``dashboard``):
a corrupt batch file, an empty request id, a request the store lacks, a directory that is
no store, a port or address that cannot be served on, and a reader of stdout that has gone.
Each is one line and an exit code, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from tests.test_dashboard_edges import small_store

ROOT = Path(__file__).resolve().parents[1]
IDS = [f"r{i}" for i in range(6)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store of pipeline ``p`` holding :data:`IDS`, and its spec file."""
    return small_store(tmp_path_factory.mktemp("store"), IDS)


def report(store: Path, spec: Path, out: Path, *options: str) -> int:
    return main(["report", "--store", str(store), "--pipeline", str(spec), "--reference", "first:3",
                 "--incident", "last:3", "--out", str(out), *options])


# ------------------------------------------------------------------------------------ traces

@pytest.mark.parametrize(("table", "argv"), [
    ("nodes", []),
    ("nodes", ["--request", "r1"]),
    ("tensors", ["--request", "r1"]),
])
def test_traces_names_a_corrupt_batch_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       table: str, argv: list[str]) -> None:
    store, _ = small_store(tmp_path, IDS)
    (batch,) = (store / table).glob("*/*/*.parquet")
    batch.write_bytes(batch.read_bytes()[:100])  # cut short, as a full disk or a bad copy leaves it
    assert main(["traces", str(store), *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("flowcause traces: ") and batch.name in err


def test_traces_counts_one_request_in_the_singular(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = small_store(tmp_path, ["r0"])
    assert main(["traces", str(store)]) == 0
    assert capsys.readouterr().out.startswith("pipeline p: 1 request, ")


def test_an_empty_request_id_is_refused(store: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``--request ""`` showed the summary (traces) or the default lineage (report)."""
    for argv in (["traces", str(store[0]), "--request", ""],
                 ["report", "--store", str(store[0]), "--pipeline", str(store[1]), "--request", "",
                  "--out", str(tmp_path / "r.md")]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        out, err = capsys.readouterr()
        assert out == "" and "argument --request: a request id cannot be empty" in err


# ------------------------------------------------------------------------------ closed stdout

def test_a_reader_of_stdout_that_has_gone_ends_it_quietly(store: tuple[Path, Path]) -> None:
    """``flowcause traces S | head``: once ``head`` exits, no error line (it said "[Errno 32]
    Broken pipe", or Python's "Exception ignored" at exit) and the shell's code for SIGPIPE."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "traces", str(store[0])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    proc.stdout.close()  # before the command writes: nothing will read what it prints
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (141, b"")


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(
        store: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*_: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("tracing.cli.print_summary", broken)
    assert main(["traces", str(store[0])]) == 2
    assert capsys.readouterr().err == "flowcause: [Errno 32] Broken pipe\n"


# ------------------------------------------------------------------------------------ report

def test_report_says_a_directory_holds_no_pipelines_or_is_no_store(
        store: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It said "holds none of the pipelines p (it holds )"."""
    empty, other = tmp_path / "empty", tmp_path / "other"
    empty.mkdir()
    other.mkdir()
    (other / "notes.txt").write_text("not a store")
    assert report(empty, store[1], tmp_path / "r.md") == 2
    assert capsys.readouterr().err == (
        f"flowcause report: the store at {empty} holds no pipelines (no committed batches)\n")
    assert report(other, store[1], tmp_path / "r.md") == 2
    assert capsys.readouterr().err == (
        f"flowcause report: {other} is not a trace store (it has no nodes/ or tensors/ directory)\n")


def test_report_refuses_a_request_the_store_does_not_hold(
        store: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It wrote the report with "Not available." for the lineage, exit 0. A request outside
    both windows is still one the store holds."""
    out = tmp_path / "r.json"
    assert report(*store, out, "--request", "nope") == 1
    assert capsys.readouterr().err == "flowcause report: no records for request 'nope' in the store\n"
    assert not out.exists()
    assert report(store[0], store[1], out, "--request", "r0",
                  "--reference", "requests:1..3", "--incident", "requests:3..6") == 0
    lineage = json.loads(out.read_text())["lineage"]
    assert lineage["request_id"] == "r0" and lineage["nodes"]


# --------------------------------------------------------------------------------- dashboard

@pytest.fixture
def no_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard must stop before it becomes Streamlit (which would replace pytest)."""
    def execve(*_: object) -> None:
        raise AssertionError("flowcause dashboard handed over to Streamlit")

    monkeypatch.setattr("dashboard.cli.os.execve", execve)


@pytest.mark.usefixtures("no_exec")
@pytest.mark.parametrize(("port", "message"), [
    ("99999", "a port is 1 to 65535, got 99999"),  # was Streamlit's OverflowError traceback
    ("0", "a port is 1 to 65535, got 0"),  # was served on a free port, announced as :0
    ("-1", "a port is 1 to 65535, got -1"),
    ("http", "expected a whole number, got 'http'"),
])
def test_dashboard_refuses_a_port_that_is_none(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               port: str, message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["dashboard", "--store", str(tmp_path), f"--port={port}"])
    assert exit_.value.code == 2
    assert f"argument --port: {message}" in capsys.readouterr().err


@pytest.mark.usefixtures("no_exec")
def test_dashboard_refuses_an_address_it_cannot_bind(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Streamlit said so in a traceback (an address this machine lacks) or in a log line with
    exit 1 (a port in use). 192.0.2.1 is a documentation address (RFC 5737): no machine has it;
    binding sends nothing."""
    assert main(["dashboard", "--store", str(tmp_path), "--host", "192.0.2.1"]) == 2
    assert capsys.readouterr().err == (
        "flowcause dashboard: cannot serve on 192.0.2.1:8501: Cannot assign requested address\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", "--store", str(tmp_path), "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        f"flowcause dashboard: cannot serve on 127.0.0.1:{port}: Address already in use\n")
