"""``flowcause localise`` on the published CSVs, as text and as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest

from causal.cli import register

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "insurance-claims"
DATA = REFERENCE / "data"
BASE = ["localise", "--pipeline", str(REFERENCE / "insurance_claims.yaml"),
        "--layout", str(ROOT / "causal" / "layouts" / "insurance_claims.yaml")]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flowcause")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_localise_prints_a_table_naming_the_faulty_step(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    code = run([*BASE, "--reference", str(DATA / "normal_1.csv"),
                "--incident", str(DATA / "broken_data_1.csv")])
    out = capsys.readouterr().out
    assert code == 0
    verdict, header, first = out.splitlines()[:3]
    assert "fault, most likely in step insurance_claims" in verdict
    assert header.split()[:3] == ["rank", "step", "node"]
    assert first.split()[:3] == ["1", "insurance_claims", "input"]


def test_localise_json_with_globs_and_another_method(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    code = run([*BASE, "--reference", str(DATA / "normal_1[01].csv"),
                "--incident", str(DATA / "broken_app_1[01].csv"), "--format", "json",
                "--method", "zscore", "--option", "alpha=0.05"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["method"] == "zscore" and doc["mode"] == "shift"
    assert len(doc["candidates"]) == 7  # steps: input, 5 steps, the pipeline output


def test_localise_one_request(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    incident = pd.read_csv(DATA / "normal_2.csv")
    incident.loc[7, "calculate_claim_value"] *= 2  # this step misbehaved on request 7
    path = tmp_path / "incident.csv"
    incident.to_csv(path, index=False)
    code = run([*BASE, "--reference", str(DATA / "normal_1.csv"), "--incident", str(path),
                "--request", "7", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["mode"] == "anomaly" and not doc["no_fault"]
    assert doc["candidates"][0]["step"] == "calculate_claim_value"
    with pytest.raises(SystemExit, match="not in the incident"):
        run([*BASE, "--reference", str(DATA / "normal_1.csv"), "--incident", str(path),
             "--request", "nope"])


def test_missing_files_are_reported() -> None:
    with pytest.raises(FileNotFoundError, match="no CSV file"):
        run([*BASE, "--reference", str(DATA / "nothing_*.csv"),
             "--incident", str(DATA / "broken_app_1.csv")])
