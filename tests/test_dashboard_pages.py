"""Every dashboard page rendered by Streamlit's AppTest on a scenario run's store: no page
raises, and the rankings shown are the ones ``causal.localise`` returns on the same data."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import causal
from dashboard.app import PAGES
from dashboard.settings import Settings
from scenarios.spec import load_scenario
from tests.scenario_run import SCENARIO, expected_ranking, injected_step, run_scenario
from tracing.store import TraceStore

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_scenario(tmp_path_factory.mktemp("run"))


def app(store: Path, monkeypatch: pytest.MonkeyPatch, page: str) -> AppTest:
    # no --pipeline: the specs come from the scenario run that wrote the store
    for name, value in Settings(str(store), ()).to_env().items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params["page"] = page
    return at.run()


def shown_ranking(at: AppTest) -> pd.DataFrame:
    (table,) = [d.value for d in at.dataframe if "node" in d.value.columns and "score" in d.value.columns]
    return table


def assert_same_ranking(shown: pd.DataFrame, expected: causal.Ranking) -> None:
    assert list(zip(shown["step"], shown["node"], strict=True)) == \
        [(c.step, c.node) for c in expected.candidates]
    assert shown["score"].tolist() == pytest.approx([c.score for c in expected.candidates])


@pytest.mark.parametrize("page", [p for p in PAGES if p != "rca"])
def test_page_renders(store: Path, monkeypatch: pytest.MonkeyPatch, page: str) -> None:
    at = app(store, monkeypatch, page)
    assert not at.exception, at.exception
    assert at.title[0].value == PAGES[page][0]
    if page in ("overview", "traces"):
        assert len(at.get("imgs")) >= 1 or len(at.image) >= 1  # the DAG


def test_overview_counts_every_request(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(store, monkeypatch, "overview")
    frame = TraceStore(store).frame("insurance_claims")
    assert at.metric[0].value == str(len(frame))
    (stats,) = [d.value for d in at.dataframe]
    assert stats.loc[injected_step(), "runs"] == (frame[f"{injected_step()}.ran"] == 1).sum()


def test_rca_page_shows_the_causal_modules_ranking(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(store, monkeypatch, "rca")
    assert not at.exception, at.exception
    expected = expected_ranking(store)
    assert_same_ranking(shown_ranking(at), expected)
    verdict = (at.success if expected.no_fault else at.error)[0].value
    assert (f" {expected.top.step} (top candidate {expected.top.node}, " in verdict
            and verdict.startswith("No fault found" if expected.no_fault else "Suspected step:"))
    assert len(at.get("imgs")) + len(at.image) >= 1


def test_trace_explorer_finds_a_request(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    request = TraceStore(store).frame("insurance_claims").index[-1]
    monkeypatch.setenv("FLOWCAUSE_STORE", str(store))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({"page": "traces", "request": request})
    at.run()
    assert not at.exception, at.exception
    nodes = at.dataframe[0].value
    assert nodes["node"].tolist() == [("<" + k + ">" if k in ("inputs", "outputs") else n)
                                      for k, n in TraceStore(store).records(request)[["kind", "node"]]
                                      .itertuples(index=False)]


def test_scenario_page_runs_a_scenario_and_localises_it(store: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(store, monkeypatch, "scenario")
    assert not at.exception, at.exception
    at.selectbox(key="scenario_file").set_value(SCENARIO.stem).run()
    at.number_input(key="scenario_healthy").set_value(300)
    at.number_input(key="scenario_incident").set_value(300)
    at.button(key="scenario_start").click().run()
    deadline = time.monotonic() + TIMEOUT_S
    run = at.session_state["scenario_run"]
    while not run.done.is_set() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run.done.is_set() and run.error is None
    at.run()
    assert not at.exception, at.exception
    warmup = run.scenario.phases.warmup
    assert f"finished: {warmup + 600} of {warmup + 600} requests" in at.get("progress")[0].proto.text
    frame = TraceStore(run.store).frame(run.target)
    expected = causal.localise(load_scenario(SCENARIO).pipelines(), frame.iloc[warmup:warmup + 300],
                               frame.iloc[warmup + 300:])
    assert_same_ranking(shown_ranking(at), expected)
