"""A scenario run for the report and dashboard tests: the built-in insurance-claims bug,
small enough to run in seconds, and what ``causal.localise`` says about it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

import causal
from engine.cli import main
from scenarios.spec import load_scenario
from tracing.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "builtin" / "insurance_claims_bug.yaml"
HEALTHY = INCIDENT = 400


def run_scenario(out: Path) -> Path:
    """``flowcause run-scenario`` into ``out``; returns the trace store's path."""
    assert main(["run-scenario", str(SCENARIO), "--out", str(out), "--healthy", str(HEALTHY),
                 "--incident", str(INCIDENT), "--quiet"]) == 0
    return out / "store"


def result(store: Path) -> dict[str, Any]:
    return json.loads((store.parent / "result.json").read_text())


def injected_step() -> str:
    (fault,) = load_scenario(SCENARIO).faults
    return fault.step


def window_frames(store: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's reference and incident frames, read straight from the store."""
    run = result(store)
    traces = TraceStore(store)
    return tuple(traces.frame(run["target"], *run["windows"][w])  # type: ignore[return-value]
                 for w in ("reference", "incident"))


def expected_ranking(store: Path, method: str = "flowcause") -> Any:
    """What the causal module ranks on the run's two windows."""
    reference, incident = window_frames(store)
    return causal.localise(load_scenario(SCENARIO).pipelines(), reference, incident, method=method)
