"""Which pipeline's output ends a scenario request when the scenario has no ``result_of``:
the target's, or for chained pipelines the last one's (docs/scenarios.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.engine import Engine
from scenarios.runner import execute
from scenarios.spec import ScenarioError, load_scenario
from tracing.store import TraceStore

STEPS = '''\
import asyncio

import numpy as np


def a(inputs):
    return {"y": inputs["x"] + 1.0}


def b(inputs):
    return {"z": inputs["y"] * 2.0}


async def c(inputs):  # slow, as a remote model: the chain ends well after the first pipeline
    await asyncio.sleep(0.05)
    return {"w": inputs["z"] - 1.0}
'''


def pipeline(name: str, step: str, inputs: list[str] | None) -> str:
    source = f"  input: {{externalInputs: {inputs}}}\n" if inputs else ""
    return (f"apiVersion: mlops.seldon.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\n"
            f"spec:\n{source}  steps:\n    - name: {step}\n  output: {{steps: [{step}]}}\n")


# first -> second -> third: third's spec.input takes second's outputs, which take first's
CHAIN = [pipeline("first", "a", None), pipeline("second", "b", ["first.outputs"]),
         pipeline("third", "c", ["second"])]
# first -> second and first -> third: the chain has two ends
FORK = [pipeline("first", "a", None), pipeline("second", "b", ["first.outputs"]),
        pipeline("third", "c", ["first.outputs.y"])]
HEALTHY = INCIDENT = 20


def scenario_file(tmp_path: Path, pipelines: list[str], extra: str = "") -> Path:
    (tmp_path / "steps.py").write_text(STEPS)
    (tmp_path / "chain.yaml").write_text("---\n".join(pipelines))
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: chain\npipeline: chain.yaml\ntarget: first\nsteps: steps.py\n" + extra
        + "traffic:\n  inputs: {x: {distribution: normal, shape: [1]}}\n"
        f"phases: {{warmup: 0, healthy: {HEALTHY}, incident: {INCIDENT}}}\n"
        "faults:\n  - {step: b, type: shift, params: {scale: 3}}\n")
    return path


@pytest.fixture
def awaited(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The pipelines the runner waits for, one entry per request."""
    seen: list[str] = []
    expect = Engine.expect

    def spy(self: Engine, request_id: str, pipeline: str):  # type: ignore[no-untyped-def]
        seen.append(pipeline)
        return expect(self, request_id, pipeline)

    monkeypatch.setattr(Engine, "expect", spy)
    return seen


def test_a_chain_without_result_of_waits_for_its_last_pipeline(tmp_path: Path,
                                                                awaited: list[str]) -> None:
    scenario = load_scenario(scenario_file(tmp_path, CHAIN))
    assert scenario.result_of is None
    run = asyncio.run(execute(scenario, tmp_path / "out", progress=False))
    assert run.errors == run.lost == 0
    # every request went through the whole chain, slow last step included, in its own window
    store = TraceStore(run.store)
    for window, count in ((run.reference, HEALTHY), (run.incident, INCIDENT)):
        assert len(store.frame("first", *window)) == count
        third = store.frame("third", *window)
        assert len(third) == count
        assert "third.outputs.w" in third and third["third.outputs.w"].notna().sum() == count
    assert awaited == ["third"] * (HEALTHY + INCIDENT)


def test_an_explicit_result_of_wins(tmp_path: Path, awaited: list[str]) -> None:
    scenario = load_scenario(scenario_file(tmp_path, CHAIN, "result_of: second\n"))
    asyncio.run(execute(scenario, tmp_path / "out", progress=False))
    assert set(awaited) == {"second"}


def test_a_chain_with_two_ends_needs_result_of(tmp_path: Path, awaited: list[str]) -> None:
    scenario = load_scenario(scenario_file(tmp_path, FORK))
    with pytest.raises(ScenarioError, match="ends in second, third: set result_of"):
        asyncio.run(execute(scenario, tmp_path / "out", progress=False))
    assert awaited == [] and not (tmp_path / "out").exists()
    fixed = load_scenario(scenario_file(tmp_path, FORK, "result_of: third\n"))
    asyncio.run(execute(fixed, tmp_path / "out", progress=False))
    assert set(awaited) == {"third"}
