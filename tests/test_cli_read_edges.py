"""Edges of the commands that read a store: a corrupt batch file, an empty request id.
Each is one line and an exit code, never a traceback."""

from __future__ import annotations

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
    """``--request ""`` showed the summary."""
    for argv in (["traces", str(store[0]), "--request", ""],):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        out, err = capsys.readouterr()
        assert out == "" and "argument --request: a request id cannot be empty" in err


