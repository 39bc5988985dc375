"""``flowcause run-scenario`` and ``flowcause suite`` through their argument parsers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from scenarios import cli
from scenarios.suite import BUILTIN
from scenarios.transports import KAFKA_ENV

DEMO = BUILTIN / "insurance_claims_bug.yaml"


def flowcause(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="flowcause")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_demo_ranks_the_buggy_step_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What `make demo` runs (at smaller counts)."""
    code = flowcause("run-scenario", str(DEMO), "--out", str(tmp_path), "--healthy", "300",
                     "--incident", "300", "--quiet")
    out = capsys.readouterr()
    assert code == 0
    ranked = [line for line in out.out.splitlines() if line.strip().startswith("1.")]
    assert "classify_claim_complexity" in ranked[0] and "<- ground truth" in ranked[0]
    assert "700 requests (100 warm-up, 300 healthy, 300 incident)" in out.err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["hit@1"] is True and result["ground_truth"] == ["classify_claim_complexity"]
    assert result["suspects"][0]["name"] == "classify_claim_complexity"
    assert (tmp_path / "report.md").read_text().startswith("# Scenario insurance_claims_bug")
    assert (tmp_path / "store" / "nodes").is_dir()


def test_suite_writes_its_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    for name in ("insurance_claims_bug", "insurance_claims_control"):
        text = (BUILTIN / f"{name}.yaml").read_text().replace("../", f"{BUILTIN.parent}/")
        (scenarios / f"{name}.yaml").write_text(text)
    code = flowcause("suite", str(scenarios), "--methods", "flowcause", "random", "--out",
                     str(tmp_path / "out"), "--healthy", "100", "--incident", "100")
    assert code == 0
    table = capsys.readouterr().out
    assert "insurance_claims_bug" in table and "random" in table and "ALL" in table
    doc = json.loads((tmp_path / "out" / "suite.json").read_text())
    assert len(doc["results"]) == 4
    assert {r["method"] for r in doc["summary"]} == {"flowcause", "random"}
    assert (tmp_path / "out" / "suite_summary.csv").exists()


def test_kafka_without_a_broker_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(KAFKA_ENV, raising=False)
    code = flowcause("run-scenario", str(DEMO), "--transport", "kafka", "--out", str(tmp_path))
    assert code == 2
    assert "needs a broker" in capsys.readouterr().err


def test_unknown_method_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown method"):
        flowcause("run-scenario", str(DEMO), "--method", "astrology", "--out", str(tmp_path))


def test_single_request_methods_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot compare"):
        flowcause("suite", "--methods", "flowcause", "dowhy-anomaly", "--out", str(tmp_path))


@pytest.mark.parametrize(("variable", "value"), [("OTEL_TRACES_SAMPLER", "bogus"),
                                                 ("FLOWCAUSE_TRACE_MAX_VALUES", "many")])
def test_a_malformed_tracing_variable_stops_before_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    for command in ("run-scenario", "suite"):
        with pytest.raises(SystemExit) as stopped:
            flowcause(command, str(DEMO if command == "run-scenario" else BUILTIN),
                      "--out", str(tmp_path / command))
        assert stopped.value.code == 2
        assert f"{variable}='{value}'" in capsys.readouterr().err
        assert not (tmp_path / command).exists()  # nothing ran
