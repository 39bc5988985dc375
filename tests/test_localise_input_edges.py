"""``flowcause localise`` on inputs a user may get wrong: CSV files that hold no table,
layout files that are no layout, windows without the pipeline's columns, CSV windows whose
columns differ, and method options given as strings (``--option shapley=False``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import causal
from causal.frames import read_window
from engine.lineage import Lineage
from engine.record import Record
from engine.spec import load_pipelines
from engine.tensors import Tensor
from tests.test_causal_cli import BASE, DATA, REFERENCE, ROOT, run
from tests.test_tracing_store_edges import store_of
from tracing.events import PortEvent
from tracing.layout import LayoutError, load_layout

NORMAL = str(DATA / "normal_0.csv")
SPEC = REFERENCE / "insurance_claims.yaml"
LAYOUT = ROOT / "causal" / "layouts" / "insurance_claims.yaml"
T0 = pd.Timestamp("2026-11-28 06:00", tz="UTC").value


def one_line(capsys: pytest.CaptureFixture[str], says: str, code: int,
             argv: list[str]) -> None:
    """``argv`` ends with exit ``code`` and one line ``flowcause: ...`` holding ``says``."""
    try:
        got = run(argv)
        err = capsys.readouterr().err
    except SystemExit as exc:  # how cmd_localise ends with exit 1
        got, err = 1, f"{exc.code}\n"
    assert got == code, err
    assert err.startswith("flowcause: ") and says in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("content, says", [
    (b"", "an empty file, no CSV header"),
    (b"a,b\n1,2\n1,2,3,4\n", "not a CSV table"),
    ("input,output\n1,2\n\xe9,3\n".encode("latin-1"), "not UTF-8 text"),
])
def test_a_csv_file_that_holds_no_table_is_one_line_exit_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, says: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    one_line(capsys, f"{bad}: {says}", 1, [*BASE, "--reference", NORMAL, "--incident", str(bad)])


@pytest.mark.parametrize("content, says", [
    ("columns: [a, b\n", "not valid YAML at line 2"),
    ("- a\n- b\n", "under 'columns:'"),
    ("foo: bar\n", "under 'columns:'"),  # was read as a layout of one column, 'foo'
])
def test_a_layout_file_that_is_no_layout_is_one_line_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, says: str) -> None:
    layout = tmp_path / "layout.yaml"
    layout.write_text(content)
    with pytest.raises(LayoutError, match=says):
        load_layout(layout)
    argv = ["localise", "--pipeline", str(SPEC), "--layout", str(layout),
            "--reference", NORMAL, "--incident", NORMAL]
    one_line(capsys, f"{layout}: ", 2, argv)


def test_text_in_a_layout_column_of_a_store_window_is_a_window_error(tmp_path: Path) -> None:
    """A store whose pipeline ``p`` got BYTES input ``x`` ("YES"/"NO") for two requests."""
    events = []
    for i, text in enumerate(["YES", "NO"]):
        x = (Tensor("x", "BYTES", np.array([text], dtype=object)),)
        lineage = Lineage(f"r{i}", f"{i + 1:032x}", "b" * 16, "p", "inputs")
        events.append(PortEvent(T0 + i * 10**9, "p", "inputs", Record(lineage, x)))
    store_of(tmp_path, events)
    with pytest.raises(causal.WindowError, match=r"^store:.*: layout column 'x' .* holds text"):
        read_window(f"store:{tmp_path}", ["p"], {"x": "p.inputs.x"})


def test_a_window_without_a_node_column_is_refused_on_its_own(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Upper-cased headers: checked with the reference's columns, the incident read as every
    node absent, a confident fault."""
    reference = pd.read_csv(DATA / "normal_0.csv")
    upper = pd.read_csv(DATA / "normal_1.csv").rename(columns=str.upper)
    pipelines, layout = load_pipelines(SPEC), load_layout(LAYOUT)
    with pytest.raises(causal.WindowError, match="none of the incident window's columns"):
        causal.localise(pipelines, reference, upper, layout=layout, bootstrap=0)
    with pytest.raises(causal.WindowError, match="none of the request window's columns"):
        causal.explain_request(pipelines, reference, upper.iloc[[0]], layout=layout)
    path = tmp_path / "upper.csv"
    upper.to_csv(path, index=False)
    one_line(capsys, "none of the incident window's columns (INPUT, ", 1,
             [*BASE, "--reference", NORMAL, "--incident", str(path)])


def test_csv_windows_with_different_columns_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.csv"
    pd.read_csv(DATA / "normal_1.csv").drop(columns=["complex_claims"]).to_csv(missing, index=False)
    says = (f"the incident window ({missing}) lacks the column complex_claims that the "
            f"reference window ({NORMAL}) has")
    one_line(capsys, says, 1, [*BASE, "--reference", NORMAL, "--incident", str(missing)])
    one_line(capsys, f"the reference window ({missing}) lacks the column complex_claims", 1,
             [*BASE, "--reference", str(missing), "--incident", NORMAL])
    # the files of one window, too
    (tmp_path / "a.csv").write_bytes((DATA / "normal_1.csv").read_bytes())
    one_line(capsys, f"{missing} lacks the column complex_claims that {tmp_path / 'a.csv'} has",
             1, [*BASE, "--reference", NORMAL, "--incident", str(tmp_path / "*.csv")])
    # a column that is no node of the pipeline does not matter
    extra = tmp_path / "extra.csv"
    pd.read_csv(DATA / "normal_1.csv").assign(note=1).to_csv(extra, index=False)
    assert run([*BASE, "--reference", NORMAL, "--incident", str(extra), "--option",
                "bootstrap=0"]) == 0


@pytest.mark.parametrize("method, option", [
    ("flowcause", "shapley=False"), ("flowcause", "shapley=maybe"), ("flowcause", "shapley=1"),
    ("flowcause", "seed=abc"), ("flowcause", "top_k=true"), ("zscore", "alpha=\"0.1\""),
    ("random", "seed=-1"), ("dowhy-shift", "num_samples=\"500\""),
    ("dowhy-shift", "test_samples=0"), ("dowhy-shift", "target=3"),
])
def test_options_of_the_wrong_type_are_refused_when_the_method_is_made(
        capsys: pytest.CaptureFixture[str], method: str, option: str) -> None:
    key, _, value = option.partition("=")
    one_line(capsys, f"option of {method}: {key} must be", 2,
             [*BASE, "--reference", "no.csv", "--incident", "no.csv", "--method", method,
              "--option", option])


def test_shapley_false_turns_shapley_off() -> None:
    pipelines, layout = load_pipelines(SPEC), load_layout(LAYOUT)
    reference, incident = pd.read_csv(DATA / "normal_0.csv"), pd.read_csv(DATA / "broken_app_0.csv")
    ranking = causal.localise(pipelines, reference, incident, layout=layout, bootstrap=0,
                              shapley=False)
    assert "shapley" not in ranking.top.evidence
