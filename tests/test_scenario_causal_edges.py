"""Edges of scenario files and of the causal ranking: mistakes and tiny or malformed windows are
refused with a message instead of a traceback (or of a ranking of nothing)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest

import causal
from causal.cli import register as register_localise
from engine.spec import load_pipelines
from scenarios import cli
from scenarios.spec import ScenarioError, load_scenario
from scenarios.suite import BUILTIN
from tests.test_scenario_spec import write  # a one-step scenario: pipeline p, step a, tensor x
from tracing.layout import load_layout

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "insurance-claims"
DATA = REFERENCE / "data"
SPEC = REFERENCE / "insurance_claims.yaml"
LAYOUT = ROOT / "causal" / "layouts" / "insurance_claims.yaml"
DEMO = BUILTIN / "insurance_claims_bug.yaml"
CODE = "scenarios.steps.insurance_bugs:classify_claim_complexity"

CSV = "traffic:\n  csv:\n    path: rows.csv\n    tensors: {x: {column: amount}}\n"


def flowcause(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="flowcause")
    commands = parser.add_subparsers(dest="command", required=True)
    cli.register(commands)
    register_localise(commands)
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def demo(tmp_path: Path, old: str = "", new: str = "") -> Path:
    """The built-in demo scenario with ``old`` replaced by ``new``, in ``tmp_path``."""
    text = DEMO.read_text().replace("../", f"{BUILTIN.parent}/")
    assert old in text
    path = tmp_path / "demo.yaml"
    path.write_text(text.replace(old, new))
    return path


# -- phase counts from the command line ------------------------------------------------
@pytest.mark.parametrize(("healthy", "incident", "message"), [
    (0, None, "healthy 0"), (1, None, "healthy 1"), (None, 1, "incident 1"), (None, -5, "incident -5"),
])
def test_counts_from_the_command_line_keep_the_phase_limits(
        tmp_path: Path, healthy: int | None, incident: int | None, message: str) -> None:
    scenario = load_scenario(write(tmp_path, CSV + "faults:\n  - {type: none}\n"))
    with pytest.raises(ScenarioError, match=message):
        scenario.with_counts(healthy, incident)
    assert scenario.with_counts(3, None).phases.healthy == 3
    assert scenario.with_counts(None, None).phases == scenario.phases


def test_counts_from_the_command_line_keep_faults_startable(tmp_path: Path) -> None:
    body = CSV + "faults:\n  - {step: a, type: latency, params: {ms: 5}, start: 10}\n"
    scenario = load_scenario(write(tmp_path, body))
    with pytest.raises(ScenarioError, match="start 10 is not below the 10 incident requests"):
        scenario.with_counts(None, 10)


def test_run_scenario_refuses_zero_healthy_requests(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    assert flowcause("run-scenario", str(DEMO), "--out", str(tmp_path / "o"), "--healthy", "0",
                     "--quiet") == 2
    err = capsys.readouterr().err
    assert err.startswith("flowcause: healthy 0:") and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# -- scenario file mistakes: one line, exit 2 ------------------------------------------
@pytest.mark.parametrize(("old", "new", "message"), [
    (CODE, "scenarios.steps.insurance_bugs:nope", "has no 'nope'"),
    ("{column: witnesses,", "{column: witnessez,", "no column witnessez"),
    ("seed: 0", "seed: -3", "traffic.seed"),
])
def test_scenario_mistakes_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               old: str, new: str, message: str) -> None:
    code = flowcause("run-scenario", str(demo(tmp_path, old, new)), "--out", str(tmp_path / "o"),
                     "--healthy", "2", "--incident", "2", "--quiet")
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("flowcause: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "store").exists()


def test_a_negative_seed_option_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert flowcause("run-scenario", str(DEMO), "--out", str(tmp_path / "o"), "--seed", "-1",
                     "--healthy", "2", "--incident", "2", "--quiet") == 2
    assert capsys.readouterr().err == "flowcause: seed -1: a seed is 0 or more\n"
    assert not (tmp_path / "o" / "store").exists()


# -- names and starts checked at load time ---------------------------------------------
@pytest.mark.parametrize(("fault", "message"), [
    ("{step: a, type: latency, params: {ms: 5}, ground_truth: b}", "ground_truth 'b' is neither"),
    ("{step: a, type: latency, params: {ms: 5}, start: 500}", "start 500 is not below the 500"),
    ("{type: shift, params: {tensors: [y], scale: 2}}", "tensors: y not among the traffic's tensors (x)"),
])
def test_faults_that_could_never_be_scored_are_rejected(tmp_path: Path, fault: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, CSV + f"faults:\n  - {fault}\n"))
    assert message in str(info.value) and "s.yaml" in str(info.value)


def test_what_a_ranking_can_name_is_a_valid_ground_truth(tmp_path: Path) -> None:
    body = ("traffic:\n  inputs: {x: {distribution: normal}}\nfaults:\n"
            "  - {step: a, type: latency, params: {ms: 5}, ground_truth: p, start: 499}\n"
            "  - {type: noise, params: {tensors: [x], std: 1}, ground_truth: p.outputs}\n")
    assert load_scenario(write(tmp_path, body)).ground_truth == ["p", "p.outputs"]
    generated = ("traffic:\n  generator: {function: 'some.module:frames'}\n"
                 "faults:\n  - {type: shift, params: {tensors: [anything], scale: 2}}\n")
    assert load_scenario(write(tmp_path, generated)).faults[0].step == "inputs"  # known when run


# -- columns that are no nodes ---------------------------------------------------------
def test_localise_without_the_layout_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match=r"none of the columns \(input, .*missing layout"):
        flowcause("localise", "--pipeline", str(SPEC), "--reference", str(DATA / "normal_1.csv"),
                  "--incident", str(DATA / "broken_app_1.csv"))
    assert capsys.readouterr().out == ""  # no "no fault" verdict on nothing
    frame = pd.read_csv(DATA / "normal_1.csv")
    with pytest.raises(causal.WindowError, match="none of the columns"):
        causal.localise(load_pipelines(SPEC), frame, frame)


# -- tiny and malformed windows --------------------------------------------------------
@pytest.fixture(scope="module")
def windows() -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(DATA / "normal_1.csv"), pd.read_csv(DATA / "broken_app_1.csv")


@pytest.mark.parametrize(("ref_rows", "inc_rows", "message"), [
    (None, 1, "the incident window holds 1 request; a ranking needs at least 2"),
    (None, 0, "the incident window holds 0 requests"),
    (1, None, "the reference window holds 1 request"),
    (0, None, "the reference window holds 0 requests"),  # an empty store window
])
def test_windows_below_the_minimum_are_refused(windows: tuple[pd.DataFrame, pd.DataFrame],
                                               ref_rows: int | None, inc_rows: int | None,
                                               message: str) -> None:
    reference, incident = windows
    reference = reference if ref_rows is None else reference.head(ref_rows)
    incident = incident if inc_rows is None else incident.head(inc_rows)
    with pytest.raises(causal.WindowError, match=message):
        causal.localise(load_pipelines(SPEC), reference, incident, layout=load_layout(LAYOUT))


def test_a_request_needs_a_reference_of_two(windows: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, incident = windows
    with pytest.raises(causal.WindowError, match="reference window holds 1 request"):
        causal.explain_request(load_pipelines(SPEC), reference.head(1), incident.iloc[[3]],
                               layout=load_layout(LAYOUT))
    with pytest.raises(causal.WindowError, match="request window holds 0 requests"):
        causal.explain_request(load_pipelines(SPEC), reference, incident.head(0),
                               layout=load_layout(LAYOUT))


def test_text_in_a_numeric_column_is_named(windows: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, incident = windows
    typo = incident.astype({"input": str})  # as pandas reads a CSV column with a typo
    typo.loc[4, "input"] = "100.0x"
    with pytest.raises(causal.WindowError, match=r"column 'input' of the incident window .*'100.0x'"):
        causal.localise(load_pipelines(SPEC), reference, typo, layout=load_layout(LAYOUT))
    numbers_as_text = incident.astype({"input": str})  # text that reads as numbers is fine
    ranking = causal.localise(load_pipelines(SPEC), reference, numbers_as_text, layout=load_layout(LAYOUT),
                              method="zscore")
    assert ranking.candidates


def test_localise_cli_reports_a_one_row_window(tmp_path: Path, windows: tuple[pd.DataFrame, pd.DataFrame]
                                               ) -> None:
    path = tmp_path / "one.csv"
    windows[1].head(1).to_csv(path, index=False)
    with pytest.raises(SystemExit, match="flowcause: the incident window holds 1 request") as stopped:
        flowcause("localise", "--pipeline", str(SPEC), "--layout", str(LAYOUT),
                  "--reference", str(DATA / "normal_1.csv"), "--incident", str(path))
    assert isinstance(stopped.value.code, str)  # printed to stderr, exit status 1


# -- suite repeats ---------------------------------------------------------------------
@pytest.mark.parametrize("repeats", ["0", "-1"])
def test_suite_needs_one_repeat(tmp_path: Path, capsys: pytest.CaptureFixture[str], repeats: str) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    demo(scenarios)
    assert flowcause("suite", str(scenarios), "--repeats", repeats, "--out", str(tmp_path / "o")) == 2
    assert f"--repeats {repeats}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
