"""``flowcause traces PATH``: a store's summary, and one request's lineage."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pandas as pd
import pytest

from engine.engine import Engine
from engine.spec import load_pipelines
from scenarios.steps.insurance_claims import STEPS, request_tensors
from tracing.cli import register
from tracing.collector import Collector
from tracing.layout import to_layout
from tracing.recorder import StoreRecorder
from tracing.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ROOT / ".." / "shared" / "reference" / "insurance-claims" / "insurance_claims.csv"


def traces(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="flowcause")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["traces", *argv])
    return int(args.func(args))


def test_summary_and_one_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    claims = pd.read_csv(CLAIMS).head(40).to_dict("records")

    async def main() -> None:
        with Collector([StoreRecorder(tmp_path)]) as observer:
            async with Engine(load_pipelines(ROOT / "scenarios" / "pipelines" / "insurance_claims.yaml"),
                              STEPS, observers=[observer]) as engine:
                for c in claims:
                    await engine.infer("insurance_claims", request_tensors(c),
                                       request_id=str(c["policy_number"]))

    asyncio.run(main())
    assert traces(str(tmp_path)) == 0
    out = capsys.readouterr().out
    high = sum(1.05 * c["total_claim_amount"] >= 60000 for c in claims)
    assert "pipeline insurance_claims: 40 requests" in out
    line = next(x for x in out.splitlines() if "classify_claim_complexity" in x)
    assert f"ok {40 - high}, skipped {high}" in line

    claim = claims[1]
    assert traces(str(tmp_path), "--request", str(claim["policy_number"])) == 0
    out = capsys.readouterr().out
    assert "insurance_claims.calculate_simple_claim_payout  skipped" in out
    assert f"output payout FP64[1]: [{0.6 * claim['total_claim_amount']}]" in out

    assert traces(str(tmp_path), "--request", "nobody") == 1
    out, err = capsys.readouterr()
    assert err == "flowcause traces: no records for request 'nobody'\n" and out == ""
    assert traces(str(tmp_path / "missing")) == 2

    # a layout over the store's frame: numbers only, and a text column named when asked for
    frame = TraceStore(tmp_path).frame("insurance_claims")
    amount = "insurance_claims.inputs.total_claim_amount"
    laid = to_layout(frame, {"amount": amount})
    assert laid["amount"].tolist() == [float(c["total_claim_amount"]) for c in claims]
    report = "insurance_claims.inputs.police_report_available"
    with pytest.raises(ValueError, match=f"layout column 'report' \\({report}\\) holds text"):
        to_layout(frame, {"amount": amount, "report": report})
