"""Fixes from the dashboard audit: methods that cannot compare windows are not offered; a
pipeline with a loop is refused by the ranking and counted pass by pass on the other pages;
windows with a missing-time bound, spec files that cannot be loaded, following a growing
store, and the scenario page's temporary stores."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import causal
import dashboard.cli
import dashboard.report
from dashboard.data import CyclicPipeline, cyclic_problem, from_store
from dashboard.report import shift_methods
from dashboard.settings import Settings
from dashboard.stats import step_records, step_stats, step_timeline
from dashboard.views.scenario import LiveRun
from dashboard.windows import WindowError, parse_window
from engine.cli import main
from engine.engine import Engine
from engine.spec import load_pipelines
from tests.loop_example import LOOP_STEPS, LOOP_YAML
from tests.test_dashboard_edges import requests, small_store
from tests.test_tracing_store_edges import store_of
from tracing.collector import Collector
from tracing.recorder import StoreRecorder
from tracing.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
TIMEOUT_S = 120
N = 40  # requests in an engine-made store

BRANCHES = """\
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: branches
spec:
  steps:
    - name: route
      inputs: [branches.inputs.x]
    - name: low
      inputs: [route.outputs.lo]
    - name: high
      inputs: [route.outputs.hi]
  output:
    steps: [low, high]
    stepsJoin: any
"""


def route(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    x = inputs["x"]
    return {"lo": x} if x[0] < 0.5 else {"hi": x}


def low(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": inputs["lo"] * 2}


def high(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if inputs["hi"][0] > 0.8:
        raise RuntimeError("too high")
    return {"y": inputs["hi"] * 3}


STEPS = {**LOOP_STEPS, "route": route, "low": low, "high": high}


def engine_store(path: Path, spec_text: str, xs: list[float]) -> tuple[Path, Path]:
    """Requests ``x`` through the pipeline of ``spec_text`` with tracing into ``path/store``;
    returns the store and the spec file."""
    spec = path / "pipeline.yaml"
    spec.write_text(spec_text)
    pipelines = load_pipelines(spec)

    async def run() -> None:
        with Collector([StoreRecorder(path / "store")]) as observer:
            async with Engine(pipelines, STEPS, observers=[observer]) as engine:
                for i, x in enumerate(xs):
                    await engine.infer(pipelines[0].name, {"inputs": [
                        {"name": "x", "datatype": "FP64", "shape": [1], "data": [x]}]},
                        request_id=f"r{i:03d}", timeout=10)

    asyncio.run(run())
    return path / "store", spec


@pytest.fixture(scope="module")
def looping(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store of pipeline ``loop`` whose requests go round it three times."""
    return engine_store(tmp_path_factory.mktemp("looping"), LOOP_YAML,
                        list(np.random.default_rng(1).uniform(0, 0.9, N)))


@pytest.fixture(scope="module")
def exhausted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store of pipeline ``loop`` allowed one revisit: requests that needed more stop in
    the loop, and the frame holds the tensor that goes round it (the data shows the cycle)."""
    return engine_store(tmp_path_factory.mktemp("exhausted"),
                        LOOP_YAML.replace("maxStepRevisits: 5", "maxStepRevisits: 1"),
                        list(np.random.default_rng(4).uniform(0, 2, N)))


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store of pipeline ``loop`` whose requests never go round it (x >= 2 is done at once)."""
    return engine_store(tmp_path_factory.mktemp("straight"), LOOP_YAML,
                        list(np.random.default_rng(2).uniform(2, 3, N)))


@pytest.fixture(scope="module")
def branched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An acyclic store with skipped branches and errors."""
    return engine_store(tmp_path_factory.mktemp("branched"), BRANCHES,
                        list(np.random.default_rng(3).uniform(0, 1, N)))


def app(store: Path, spec: Path | str | None, monkeypatch: pytest.MonkeyPatch, page: str,
        **params: str) -> AppTest:
    for name, value in Settings(str(store), (str(spec),) if spec else ()).to_env().items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({"page": page, **params})
    return at.run()


def runs_of(store: Path, pipeline: str) -> dict[str, int]:
    """Runs (ok or error decisions) per step, as ``flowcause traces`` counts them."""
    (summary,) = [s for s in TraceStore(store).summary() if s.pipeline == pipeline]
    return {step: counts.get("ok", 0) + counts.get("error", 0) for step, counts in summary.status.items()}


def selectbox(at: AppTest, label: str) -> Any:
    (box,) = [b for b in at.selectbox if b.label == label]
    return box


# ------------------------------------------------ 1. only methods that compare two windows

def test_shift_methods_are_those_that_compare_windows() -> None:
    assert shift_methods() == [m for m, cls in causal.METHODS.items() if "shift" in cls.modes]
    assert "flowcause" in shift_methods()
    assert "dowhy-anomaly" in causal.METHODS and "dowhy-anomaly" not in shift_methods()


def test_rca_page_offers_only_methods_that_compare_windows(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(10)])
    at = app(store, spec, monkeypatch, "rca", method="dowhy-anomaly")
    assert not at.exception, at.exception
    method = selectbox(at, "Method")
    assert method.options == shift_methods() and method.value == "flowcause"
    assert any("score" in d.value.columns for d in at.dataframe)  # ranked with the default


def test_scenario_page_offers_only_methods_that_compare_windows(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = small_store(tmp_path, ["r0", "r1"])
    at = app(store, None, monkeypatch, "scenario")
    assert not at.exception, at.exception
    assert selectbox(at, "Method").options == shift_methods()


# ----------------------------------------------------- 2. pipelines with a loop are refused

@pytest.mark.parametrize("which", ["looping", "exhausted", "straight"])
def test_rca_page_refuses_a_pipeline_with_a_loop(which: str, request: pytest.FixtureRequest,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store, spec = request.getfixturevalue(which)
    at = app(store, spec, monkeypatch, "rca")
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [cyclic_problem(load_pipelines(spec))]
    assert "allowCycles" in at.error[0].value
    assert not at.dataframe  # nothing ranked


@pytest.mark.parametrize("which", ["looping", "exhausted", "straight"])
def test_report_cli_refuses_a_pipeline_with_a_loop(which: str, request: pytest.FixtureRequest, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    store, spec = request.getfixturevalue(which)
    out = tmp_path / "report.html"
    assert main(["report", "--store", str(store), "--pipeline", str(spec), "--reference", "first:20",
                 "--incident", "last:20", "--out", str(out)]) == 2  # a spec it cannot rank
    err = capsys.readouterr().err
    assert err == f"flowcause report: {cyclic_problem(load_pipelines(spec))}\n"
    assert not out.exists()


def test_a_comparison_of_a_pipeline_with_a_loop_is_refused_before_reading(
        exhausted: tuple[Path, Path]) -> None:
    store, spec = exhausted
    assert "check.outputs.again" in TraceStore(store).frame("loop")  # the data shows the loop
    with pytest.raises(CyclicPipeline, match="'loop' allows cycles"):
        from_store(TraceStore(store), load_pipelines(spec), parse_window("first:2"), parse_window("last:2"))


def test_report_cli_reports_a_graph_the_ranking_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The fallback when the spec check misses a cycle: the ranking's ValueError, one line."""
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(10)])

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("the causal graph has a cycle: [...]")

    monkeypatch.setattr(dashboard.report, "build_report", refuse)
    out = tmp_path / "report.html"
    assert main(["report", "--store", str(store), "--pipeline", str(spec), "--reference", "first:5",
                 "--incident", "last:5", "--out", str(out)]) == 1
    assert capsys.readouterr().err == "flowcause report: the causal graph has a cycle: [...]\n"


# --------------------------------------------------- 3. a loop's passes are all counted

@pytest.mark.parametrize("with_spec", [True, False])
def test_overview_counts_every_pass_of_a_loop(looping: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                             with_spec: bool) -> None:
    store, spec = looping
    expected = runs_of(store, "loop")
    assert expected["inc"] > N and expected["fin"] == N  # the requests did go round
    at = app(store, spec if with_spec else None, monkeypatch, "overview")
    assert not at.exception, at.exception
    (table,) = [d.value for d in at.dataframe if "runs" in d.value.columns]
    assert table["runs"].to_dict() == expected
    assert (table["error_rate"] == 0).all() and table["latency_p50_ms"].notna().all()


@pytest.mark.parametrize("which", ["looping", "exhausted"])
def test_step_stats_of_a_loop_count_every_pass(which: str, request: pytest.FixtureRequest) -> None:
    store, _ = request.getfixturevalue(which)
    traces = TraceStore(store)
    frame, records = traces.frame("loop"), step_records(traces, "loop")
    assert step_stats(frame, records=records)["runs"].to_dict() == runs_of(store, "loop")
    timeline = step_timeline(frame, bins=5, records=records)
    assert timeline.groupby("step")["runs"].sum().to_dict() == runs_of(store, "loop")
    half = frame.iloc[: N // 2]  # a window counts the passes of its own requests only
    assert step_stats(half, records=records)["runs"].to_dict() == \
        {step: int(n) for step, n in records[records["request_id"].isin(half.index)
                                             & records["status"].isin(("ok", "error"))]
         .groupby("step").size().items()}


def test_frame_and_records_give_the_same_numbers_on_an_acyclic_store(branched: tuple[Path, Path]) -> None:
    store, _ = branched
    traces = TraceStore(store)
    frame, records = traces.frame("branches"), step_records(traces, "branches")
    by_frame = step_stats(frame)
    assert by_frame.loc["high", "errors"] > 0 and by_frame.loc["low", "runs"] > 0  # errors, skips
    assert (frame["low.status"] == "skipped").any()
    pd.testing.assert_frame_equal(step_stats(frame, records=records), by_frame)
    pd.testing.assert_frame_equal(step_stats(frame.iloc[5:25], records=records), step_stats(frame.iloc[5:25]))
    pd.testing.assert_frame_equal(step_timeline(frame, bins=7, records=records), step_timeline(frame, bins=7))


def test_steps_page_of_a_loop_renders(looping: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    store, spec = looping
    at = app(store, spec, monkeypatch, "steps")
    assert not at.exception, at.exception


# ----------------------------------------------------- 4. a window bound that is no time

@pytest.mark.parametrize("text", ["nan..", "NaT..", "..nan", "nat..2026-01-01"])
def test_a_bound_that_parses_to_no_time_is_a_window_error(text: str) -> None:
    with pytest.raises(WindowError, match="is not a time"):
        parse_window(text)


def test_rca_page_says_a_window_bound_is_no_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(10)])
    at = app(store, spec, monkeypatch, "rca", reference="nan..")
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["window 'nan..': 'nan' is not a time (an ISO datetime or epoch "
                                           "seconds)"]


def test_report_cli_says_a_window_bound_is_no_time(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(10)])
    assert main(["report", "--store", str(store), "--pipeline", str(spec), "--reference", "..NaT",
                 "--incident", "last:5", "--out", str(tmp_path / "r.html")]) == 2
    assert "is not a time" in capsys.readouterr().err


# ------------------------------------------------- 5. spec files that cannot be loaded

def dashboard_args(store: Path, *specs: Path) -> argparse.Namespace:
    return argparse.Namespace(store=str(store), pipeline=[str(s) for s in specs], host="127.0.0.1", port=1)


def test_dashboard_command_checks_the_specs_before_starting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    store, spec = small_store(tmp_path, ["r0", "r1"])
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.append(argv))
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: x\nkind: Pipeline\nmetadata: {name: p}\nspec: {steps: []}\n")
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("apiVersion: mlops.seldon.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
                       "spec: {steps: [{name: 1, inputs: 2}, {inputs: [a]}]}\n")
    unvalidated = tmp_path / "unvalidated.yaml"  # loads, but `flowcause validate` refuses it
    unvalidated.write_text("apiVersion: mlops.seldon.io/v1alpha1\nkind: Pipeline\n"
                           "metadata: {name: q}\nspec:\n  steps:\n"
                           "    - {name: a, inputs: [nope.outputs.zz]}\n")
    for wrong, says in ((tmp_path / "missing.yaml", "cannot read pipeline file"),
                        (bad, "expected apiVersion"), (invalid, "invalid.yaml"),
                        (unvalidated, "unvalidated.yaml:6: pipeline 'q'")):
        assert dashboard.cli.cmd_dashboard(dashboard_args(store, spec, wrong)) == 2
        out, err = capsys.readouterr()
        assert err.startswith("flowcause dashboard: ") and says in err
        assert err.count("\n") == 1 and not out
    assert not started
    dashboard.cli.cmd_dashboard(dashboard_args(store, spec))
    assert len(started) == 1
    # a report refuses it as `flowcause localise` does: exit 2, file and line
    assert main(["report", "--store", str(store), "--pipeline", str(unvalidated),
                 "--reference", "first:1", "--incident", "last:1",
                 "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowcause report: ") and "unvalidated.yaml:6:" in err, err


def test_pages_say_a_spec_file_cannot_be_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = small_store(tmp_path, [f"r{i}" for i in range(4)])
    for page in ("overview", "rca", "traces"):
        at = app(store, tmp_path / "gone.yaml", monkeypatch, page)
        assert not at.exception, (page, at.exception)
        assert [e.value for e in at.error] == [f"pipeline spec: cannot read pipeline file "
                                               f"{tmp_path / 'gone.yaml'}: No such file or directory"]


# ------------------------------------------------------------ 6. following a growing store

@pytest.mark.parametrize("page", ["overview", "steps"])
def test_pages_can_follow_a_growing_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str) -> None:
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(4)])
    at = app(store, spec, monkeypatch, page)
    assert not at.exception, at.exception
    (follow,) = [t for t in at.toggle if t.label == "Follow the store"]
    assert follow.value is False
    at = app(store, spec, monkeypatch, page, refresh="1")  # on from the URL
    assert not at.exception, at.exception
    assert [t.value for t in at.toggle if t.label == "Follow the store"] == [True]
    if page == "overview":
        assert [m.value for m in at.metric if m.label == "requests"] == ["4"]
        store_of(store, requests([f"s{i}" for i in range(3)], first=10))  # another batch
        at.run()
        assert not at.exception, at.exception
        assert [m.value for m in at.metric if m.label == "requests"] == ["7"]


# --------------------------------------------- 7. the scenario page's temporary stores

def test_discarding_a_run_removes_its_directory_once_it_has_ended(tmp_path: Path) -> None:
    run = LiveRun(scenario=None, out=tmp_path / "run", method="flowcause")  # type: ignore[arg-type]
    (run.out / "store").mkdir(parents=True)
    run.discard()  # still running: removed when it ends
    time.sleep(0.2)
    assert run.out.is_dir()
    run.done.set()
    deadline = time.monotonic() + 10
    while run.out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not run.out.exists()
    ended = LiveRun(scenario=None, out=tmp_path / "ended", method="flowcause")  # type: ignore[arg-type]
    ended.out.mkdir()
    ended.done.set()
    ended.discard()
    assert not ended.out.exists()


def test_a_new_scenario_run_removes_the_previous_ones_store(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where mkdtemp makes the runs' folders
    store, _ = small_store(tmp_path / "idle", ["r0", "r1"])
    at = app(store, None, monkeypatch, "scenario")
    at.number_input(key="scenario_healthy").set_value(2)
    at.number_input(key="scenario_incident").set_value(30)
    outs = []
    for _ in range(2):
        at.button(key="scenario_start").click().run()
        assert not at.exception, at.exception
        run = at.session_state["scenario_run"]
        assert run.done.wait(TIMEOUT_S) and run.error is None
        outs.append(run.out)
    first, second = outs
    deadline = time.monotonic() + 10
    while first.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not first.exists()  # the run no longer shown
    assert (second / "store").is_dir()  # the run shown
    at.run()
    assert not at.exception, at.exception
    assert any(str(second / "store") in c.value for c in at.caption)


def test_rca_page_shows_a_ranking_that_could_not_judge_as_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of 3 requests: nothing could be compared, which is neither "no fault" (a
    success box) nor a suspect (an error box)."""
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(6)])
    at = app(store, spec, monkeypatch, "rca", reference="first:3", incident="last:3")
    assert not at.exception, at.exception
    assert [w.value for w in at.warning if w.value.startswith("Not enough data to judge")]
    assert not [s for s in at.success if "No fault found" in s.value]


def test_allow_cycles_without_a_cycle_is_ranked_as_localise_ranks_it() -> None:
    """The dashboard and ``flowcause report`` refuse what ``flowcause localise`` refuses: a
    cycle among the steps, not the ``allowCycles`` flag alone."""
    from causal.graph import spec_problems

    (no_loop,) = load_pipelines({"metadata": {"name": "flat"}, "spec": {
        "allowCycles": True, "steps": [{"name": "a"}, {"name": "b", "inputs": ["a"]}]}})
    (loop,) = load_pipelines({"metadata": {"name": "round"}, "spec": {
        "allowCycles": True, "maxStepRevisits": 2,
        "steps": [{"name": "a", "inputs": ["round.inputs", "b"], "inputsJoinType": "any"},
                  {"name": "b", "inputs": ["a"]}],
        "output": {"steps": ["a"]}}})
    assert cyclic_problem([no_loop]) is None and spec_problems([no_loop]) == []
    assert cyclic_problem([loop]) is not None and spec_problems([loop]) != []
