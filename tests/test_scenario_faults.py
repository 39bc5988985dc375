"""Each fault type, injected into a toy pipeline and run through the engine with tracing:
its effect is read back from the trace store, healthy phase against incident phase."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scenarios.runner import Execution, execute
from scenarios.spec import Scenario
from tracing.store import TraceStore

HEALTHY = INCIDENT = 24


def scale(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    x = inputs["x"]
    return {"y": 2.0 * x, "label": np.array(["pos" if x.item() > 0 else "neg"], dtype=object),
            "count": np.rint(np.abs(x) * 10).astype(np.int64)}


def finish(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"z": inputs["y"] + 1.0}


def scale_bug(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**scale(inputs), "y": -2.0 * inputs["x"]}


STEPS = {"scale": scale, "finish": finish}

PIPELINE = {
    "metadata": {"name": "toy"},
    "spec": {"steps": [{"name": "scale", "inputs": ["toy.inputs.x"]},
                       {"name": "finish", "inputs": ["scale.outputs.y"]}],
             "output": {"steps": ["finish"]}},
}


def toy(*faults: dict[str, Any], concurrency: int = 8, rate: float | None = None) -> Scenario:
    return Scenario.model_validate({
        "name": "toy", "pipeline": PIPELINE, "steps": __name__,
        "traffic": {"seed": 3, "concurrency": concurrency, "rate": rate,
                    "inputs": {"x": {"distribution": "normal", "params": {"loc": 0.0, "scale": 1.0}}}},
        "phases": {"healthy": HEALTHY, "incident": INCIDENT},
        "faults": list(faults),
    })


def run(scenario: Scenario, out: Path) -> tuple[Execution, pd.DataFrame, pd.DataFrame]:
    execution = asyncio.run(execute(scenario, out, progress=False))
    store = TraceStore(execution.store)
    reference = store.frame("toy", *execution.reference)
    incident = store.frame("toy", *execution.incident)
    assert len(reference) == HEALTHY and len(incident) == INCIDENT
    return execution, reference, incident


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A frame column; a tensor nobody produced in the window has no column: all missing."""
    return frame[name] if name in frame else pd.Series(np.nan, index=frame.index)


def doubled(frame: pd.DataFrame) -> pd.Series:
    return frame["scale.outputs.y"] - 2.0 * frame["toy.inputs.x"]


def test_replace_runs_other_code_from_the_incident_on(tmp_path: Path) -> None:
    _, ref, inc = run(toy({"step": "scale", "type": "replace",
                           "params": {"code": f"{__name__}:scale_bug"}}), tmp_path)
    assert np.allclose(ref["scale.outputs.y"], 2.0 * ref["toy.inputs.x"])
    assert np.allclose(inc["scale.outputs.y"], -2.0 * inc["toy.inputs.x"])
    assert np.allclose(inc["finish.outputs.z"], inc["scale.outputs.y"] + 1.0)


def test_shift_scales_and_offsets_a_step_output(tmp_path: Path) -> None:
    _, ref, inc = run(toy({"step": "scale", "type": "shift",
                           "params": {"tensors": ["y"], "scale": 3.0, "offset": 1.0}}), tmp_path)
    assert np.allclose(doubled(ref), 0.0)
    assert np.allclose(inc["scale.outputs.y"], 6.0 * inc["toy.inputs.x"] + 1.0)
    assert np.allclose(inc["finish.outputs.z"], inc["scale.outputs.y"] + 1.0)


def test_shift_swaps_categories(tmp_path: Path) -> None:
    _, ref, inc = run(toy({"step": "scale", "type": "shift",
                           "params": {"tensors": ["label"], "swap": {"pos": "neg", "neg": "pos"}}}),
                      tmp_path)
    assert (ref["scale.outputs.label"] == np.where(ref["toy.inputs.x"] > 0, "pos", "neg")).all()
    assert (inc["scale.outputs.label"] == np.where(inc["toy.inputs.x"] > 0, "neg", "pos")).all()
    assert np.allclose(doubled(inc), 0.0)  # only the named tensor changes


def test_shift_on_the_traffic_changes_the_pipeline_inputs(tmp_path: Path) -> None:
    base = toy({"type": "none"})
    shifted = toy({"step": "inputs", "type": "shift", "params": {"scale": 10.0}})
    _, _, plain = run(base, tmp_path / "plain")
    _, ref, inc = run(shifted, tmp_path / "shifted")
    assert np.allclose(inc["toy.inputs.x"].to_numpy(), 10.0 * plain["toy.inputs.x"].to_numpy())
    assert np.allclose(doubled(ref), 0.0) and np.allclose(doubled(inc), 0.0)  # the step is fine


def test_noise_perturbs_outputs_reproducibly(tmp_path: Path) -> None:
    scenario = toy({"step": "scale", "type": "noise", "params": {"tensors": ["y"], "std": 0.5}})
    _, ref, inc = run(scenario, tmp_path / "a")
    _, _, again = run(scenario, tmp_path / "b")
    assert np.allclose(doubled(ref), 0.0)
    assert 0.2 < doubled(inc).std() < 1.0
    assert np.allclose(doubled(inc).to_numpy(), doubled(again).to_numpy())  # same seed, same noise


def test_stuck_freezes_the_first_faulty_output(tmp_path: Path) -> None:
    _, ref, inc = run(toy({"step": "scale", "type": "stuck", "params": {"tensors": ["y"]}}), tmp_path)
    assert ref["scale.outputs.y"].nunique() == HEALTHY
    assert inc["scale.outputs.y"].nunique() == 1
    first = inc["toy.inputs.x"].iloc[0]
    assert inc["scale.outputs.y"].iloc[-1] == pytest.approx(2.0 * first)


def test_stuck_at_a_given_value(tmp_path: Path) -> None:
    _, _, inc = run(toy({"step": "scale", "type": "stuck", "params": {"tensors": ["y"], "value": 7.0}}),
                    tmp_path)
    assert (inc["scale.outputs.y"] == 7.0).all()
    _, _, inc = run(toy({"step": "scale", "type": "stuck",
                         "params": {"tensors": ["count"], "value": 1e30}}), tmp_path / "big")
    # an integer tensor holds the value clipped to its range, as shift's results are
    assert (inc["scale.outputs.count"] == np.iinfo(np.int64).max).all()


def test_nan_blanks_floats_and_removes_other_tensors(tmp_path: Path) -> None:
    _, ref, inc = run(toy({"step": "scale", "type": "nan", "params": {"tensors": ["y", "count"]}}),
                      tmp_path)
    assert ref["scale.outputs.y"].notna().all() and ref["scale.outputs.count"].notna().all()
    assert inc["scale.outputs.y"].isna().all()
    assert column(inc, "scale.outputs.count").isna().all()  # INT64 cannot hold NaN: missing
    assert inc["scale.outputs.label"].notna().all()


def test_nan_at_a_rate_hits_some_requests(tmp_path: Path) -> None:
    _, _, inc = run(toy({"step": "scale", "type": "nan", "params": {"tensors": ["y"], "rate": 0.5}}),
                    tmp_path)
    assert 0 < inc["scale.outputs.y"].isna().sum() < INCIDENT


def test_latency_slows_the_step(tmp_path: Path) -> None:
    _, ref, inc = run(toy({"step": "scale", "type": "latency", "params": {"ms": 30, "jitter_ms": 5}}),
                      tmp_path)
    assert ref["scale.latency_ms"].median() < 10
    assert inc["scale.latency_ms"].min() >= 30
    assert inc["finish.latency_ms"].median() < 10  # downstream steps are not slower themselves


def test_exception_fails_the_step_at_its_rate(tmp_path: Path) -> None:
    execution, ref, inc = run(toy({"step": "scale", "type": "exception",
                                   "params": {"rate": 1.0, "message": "boom"}}), tmp_path)
    assert (ref["scale.status"] == "ok").all()
    assert (inc["scale.status"] == "error").all()
    assert execution.errors == INCIDENT
    assert inc["finish.ran"].sum() == 0


def test_exception_at_a_partial_rate(tmp_path: Path) -> None:
    execution, _, inc = run(toy({"step": "scale", "type": "exception", "params": {"rate": 0.5}}),
                            tmp_path)
    failed = int((inc["scale.status"] == "error").sum())
    assert 0 < failed < INCIDENT and execution.errors == failed


def test_drop_removes_outputs_so_downstream_does_not_run(tmp_path: Path) -> None:
    _, ref, inc = run(toy({"step": "scale", "type": "drop", "params": {"tensors": ["y"]}}), tmp_path)
    assert ref["finish.ran"].sum() == HEALTHY
    assert column(inc, "scale.outputs.y").isna().all() and inc["scale.outputs.label"].notna().all()
    assert inc["finish.ran"].sum() == 0


def test_no_fault_control_changes_nothing(tmp_path: Path) -> None:
    execution, ref, inc = run(toy({"type": "none"}), tmp_path)
    assert execution.errors == 0
    for frame in (ref, inc):
        assert np.allclose(doubled(frame), 0.0)
        assert np.allclose(frame["finish.outputs.z"], frame["scale.outputs.y"] + 1.0)


def test_a_fault_starts_at_its_request(tmp_path: Path) -> None:
    _, _, inc = run(toy({"step": "scale", "type": "stuck", "params": {"value": 0.0, "tensors": ["y"]},
                         "start": 10}, concurrency=64), tmp_path)
    assert np.allclose(doubled(inc.iloc[:10]), 0.0)
    assert (inc["scale.outputs.y"].iloc[10:] == 0.0).all()


def test_rate_paces_the_traffic(tmp_path: Path) -> None:
    execution, ref, _ = run(toy({"type": "none"}, rate=200.0), tmp_path)
    assert execution.seconds >= (HEALTHY + INCIDENT - 1) / 200.0
    gaps = ref["time"].diff().dt.total_seconds().dropna()
    assert gaps.median() == pytest.approx(1 / 200.0, rel=0.5)
