"""Where the engine follows Seldon Core v2 beyond the shared conformance cases: output
references with tensors, external inputs named bare, join windows of 0, the revisit limit's
default, projections in record order, names with dots, an output that cannot be made, and
`flowcause validate` across files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.cli import main as cli_main
from engine.compile import PipelineInvalid, compile_pipelines
from engine.engine import Engine, InferenceResult
from engine.spec import load_pipelines
from engine.validate import validate

Arrays = dict[str, np.ndarray]


def fp(name: str, data: list[float]) -> dict[str, Any]:
    return {"name": name, "datatype": "FP64", "shape": [len(data)], "data": data}


def infer(spec: Any, steps: dict[str, Any], pipeline: str, inputs: list[dict[str, Any]],
          result_of: str | None = None) -> InferenceResult:
    async def main() -> InferenceResult:
        async with Engine(load_pipelines(spec), steps) as engine:
            return await engine.infer(pipeline, {"inputs": inputs}, result_of=result_of,
                                      timeout=10)

    return asyncio.run(main())


def outputs(result: InferenceResult) -> list[tuple[str, list[float]]]:
    assert result.ok, result.error
    return [(t.name, t.data.tolist()) for t in result.outputs]


def two_outputs(x: Arrays) -> Arrays:
    return {"y": x["x"] + 1, "z": x["x"] * 10}


@pytest.mark.parametrize("refs, expected", [
    (["a.outputs.z"], [("z", [20.0])]),
    (["a.outputs.y", "b"], [("y", [3.0]), ("w", [30.0])]),
    (["a.inputs"], [("x", [2.0])]),
    (["a.inputs.x", "a.outputs"], [("x", [2.0]), ("y", [3.0]), ("z", [20.0])]),
], ids=["tensor", "tensor-and-step", "step-inputs", "inputs-tensor-and-outputs"])
def test_output_steps_take_the_references_seldon_allows(refs: list[str],
                                                        expected: list[Any]) -> None:
    """Seldon's samples name output tensors (``income-outlier.outputs.is_outlier``)."""
    spec = {"metadata": {"name": "p"}, "spec": {
        "steps": [{"name": "a"}, {"name": "b", "inputs": ["a.outputs.z"]}],
        "output": {"steps": refs}}}
    assert validate(load_pipelines(spec)) == []
    result = infer(spec, {"a": two_outputs, "b": lambda x: {"w": x["z"] * 1.5}}, "p",
                   [fp("x", [2.0])])
    assert outputs(result) == expected


def test_output_steps_still_reject_what_names_nothing() -> None:
    spec = {"metadata": {"name": "p"}, "spec": {
        "steps": [{"name": "a"}], "output": {"steps": ["zz", "a.sideways", "a.outputs.y"]}}}
    problems = validate(load_pipelines(spec))
    assert len(problems) == 2
    assert "output step 'zz'" in problems[0] and "does not exist" in problems[0]
    assert "output step 'a.sideways'" in problems[1] and "bad reference form" in problems[1]


@pytest.mark.parametrize("external", ["pa", "pa.step.double", "pa.outputs"])
def test_a_bare_external_input_means_the_other_pipelines_outputs(external: str) -> None:
    """Seldon expands ``other`` and ``other.step.s`` in ``externalInputs`` to their outputs."""
    spec = f"""
metadata: {{name: pa}}
spec:
  steps: [{{name: double}}]
  output: {{steps: [double]}}
---
metadata: {{name: pb}}
spec:
  input:
    externalInputs: [{external}]
  steps: [{{name: ident}}]
  output: {{steps: [ident]}}
"""
    result = infer(spec, {"double": lambda x: {"x": x["x"] * 2},
                          "ident": lambda x: {"y": x["x"]}}, "pa", [fp("x", [1.0, 2.0])],
                   result_of="pb")
    assert outputs(result) == [("y", [2.0, 4.0])]


def test_inside_its_own_pipeline_a_bare_pipeline_name_is_still_its_inputs() -> None:
    spec = {"metadata": {"name": "p"}, "spec": {
        "steps": [{"name": "a", "inputs": ["p"]}], "output": {"steps": ["a"]}}}
    assert outputs(infer(spec, {"a": lambda x: {"y": x["x"] + 1}}, "p",
                         [fp("x", [1.0])])) == [("y", [2.0])]


def test_a_join_window_of_zero_means_the_default() -> None:
    """``joinWindowMs: 0`` is an unset uint32 to Seldon, so the default 60 s window: a
    partner 50 ms late still joins (it closed the window at once before)."""
    async def late(x: Arrays) -> Arrays:
        await asyncio.sleep(0.05)
        return {"b": x["x"] + 2}

    spec = {"metadata": {"name": "p"}, "spec": {
        "steps": [{"name": "a"}, {"name": "late"},
                  {"name": "j", "inputs": ["a", "late"], "joinWindowMs": 0}],
        "output": {"steps": ["j"], "joinWindowMs": 0}}}
    result = infer(spec, {"a": lambda x: {"a": x["x"] + 1}, "late": late,
                          "j": lambda x: {"s": x["a"] + x["b"]}}, "p", [fp("x", [1.0])])
    assert outputs(result) == [("s", [5.0])]


def loop(**limit: int) -> Any:
    return load_pipelines({"metadata": {"name": "p"}, "spec": {
        "allowCycles": True, **limit,
        "steps": [{"name": "inc", "inputs": ["p.inputs.x", "check.outputs.again"],
                   "tensorMap": {"check.outputs.again": "x"}, "inputsJoinType": "any"},
                  {"name": "check", "inputs": ["inc"]}],
        "output": {"steps": ["check.outputs.done"]}}})


def test_max_step_revisits_defaults_to_zero_as_in_seldon() -> None:
    """Seldon: "By default, the maxStepRevisits is set to 0 (i.e., no cycles)"."""
    def check(x: Arrays) -> Arrays:
        return {"again": x["v"]} if x["v"][0] < 3 else {"done": x["v"]}

    steps = {"inc": lambda x: {"v": x["x"] + 1}, "check": check}

    async def main(pipelines: Any) -> InferenceResult:
        async with Engine(pipelines, steps) as engine:
            return await engine.infer("p", {"inputs": [fp("x", [0.0])]}, timeout=10)

    unset = asyncio.run(main(loop()))
    assert not unset.ok and "exceeded maxStepRevisits=0" in (unset.error or "")
    assert outputs(asyncio.run(main(loop(maxStepRevisits=2)))) == [("done", [3.0])]


def test_a_topic_is_projected_in_record_order_onto_the_names_its_references_give() -> None:
    """Seldon selects a set of tensor names per topic and keeps the record's order; a
    whole-topic reference beside named ones adds nothing; a name given twice comes once."""
    seen: list[list[str]] = []

    def record(x: Arrays) -> Arrays:
        seen.append(list(x))
        return {"n": np.array([float(len(x))])}

    def abc(x: Arrays) -> Arrays:
        return {"A": x["x"], "B": x["x"] + 1, "C": x["x"] + 2}

    for inputs in (["s1.outputs.C", "s1.outputs.A"], ["s1", "s1.outputs.B"],
                   ["s1.outputs.B", "s1.outputs.B"], ["s1"]):
        spec = {"metadata": {"name": "p"}, "spec": {
            "steps": [{"name": "s1"}, {"name": "s2", "inputs": inputs}],
            "output": {"steps": ["s2"]}}}
        infer(spec, {"s1": abc, "s2": record}, "p", [fp("x", [1.0])])
    assert seen == [["A", "C"], ["B"], ["B"], ["A", "B", "C"]]


def test_a_rename_applies_within_a_projection() -> None:
    seen: list[list[str]] = []

    def record(x: Arrays) -> Arrays:
        seen.append(list(x))
        return {"k": x["zed"] - x["y"]}

    spec = {"metadata": {"name": "p"}, "spec": {
        "steps": [{"name": "s1"}, {"name": "s2", "inputs": ["s1.outputs.z", "s1.outputs.y"],
                                   "tensorMap": {"s1.outputs.z": "zed"}}],
        "output": {"steps": ["s2"]}}}
    assert outputs(infer(spec, {"s1": two_outputs, "s2": record}, "p",
                         [fp("x", [1.0])])) == [("k", [8.0])]
    assert seen == [["y", "zed"]]


@pytest.mark.parametrize("name, where", [("p.v2", "pipeline"), ("a.b", "step"), ("  ", "pipeline")])
def test_names_that_references_cannot_reach_are_rejected(name: str, where: str) -> None:
    pipeline = name if where == "pipeline" else "p"
    step = name if where == "step" else "a"
    spec = {"metadata": {"name": pipeline}, "spec": {"steps": [{"name": step}]}}
    with pytest.raises(PipelineInvalid) as raised:  # before: p.v2 crashed compiling (RefError)
        compile_pipelines(load_pipelines(spec))
    message = str(raised.value)
    assert ("cannot contain '.'" in message) if "." in name else ("empty name" in message)


def test_underscores_in_names_still_load() -> None:
    spec = {"metadata": {"name": "insurance_claims"}, "spec": {"steps": [{"name": "a_b"}]}}
    assert validate(load_pipelines(spec)) == []


def test_an_output_that_cannot_be_made_is_an_error_not_an_empty_answer() -> None:
    """Seldon's routing example with the default ``stepsJoin`` (inner): the branch not taken
    means the output join never completes. Seldon's caller times out; ours is told why."""
    spec = """
metadata: {name: cond}
spec:
  steps:
  - name: route
  - name: mul10
    inputs: [route.outputs.OUTPUT0]
    tensorMap: {route.outputs.OUTPUT0: INPUT}
  - name: add10
    inputs: [route.outputs.OUTPUT1]
    tensorMap: {route.outputs.OUTPUT1: INPUT}
  output:
    steps: [mul10, add10]
"""
    steps = {"route": lambda x: ({"OUTPUT0": x["INPUT"]} if x["CHOICE"][0] == 0
                                 else {"OUTPUT1": x["INPUT"]}),
             "mul10": lambda x: {"OUTPUT": x["INPUT"] * 10},
             "add10": lambda x: {"OUTPUT": x["INPUT"] + 10}}
    result = infer(spec, steps, "cond", [fp("CHOICE", [0.0]), fp("INPUT", [1.0])])
    assert not result.ok and not result.outputs
    assert result.error == ("pipeline 'cond' produced no output: its output steps did not run "
                            "as its stepsJoin requires (branch not taken)")
    any_join = spec.replace("steps: [mul10, add10]", "steps: [mul10, add10]\n    stepsJoin: any")
    assert outputs(infer(any_join, steps, "cond", [fp("CHOICE", [0.0]), fp("INPUT", [1.0])])) \
        == [("OUTPUT", [10.0])]


def test_a_tensor_map_key_must_name_a_tensor_the_step_takes() -> None:
    spec = {"metadata": {"name": "p"}, "spec": {"steps": [
        {"name": "a", "inputs": ["p.inputs.x"], "tensorMap": {"p.inputs.zz": "y"}},
        {"name": "b", "inputs": ["p.inputs"], "tensorMap": {"p.inputs.zz": "y"}}]}}
    problems = validate(load_pipelines(spec))
    assert len(problems) == 1  # b takes every tensor of p.inputs: zz may come
    assert "step 'a'" in problems[0] and "'p.inputs.zz' names a tensor it does not take" in problems[0]


def test_validate_checks_the_files_together(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`run` and `serve` load their files together; a pipeline defined in two is refused
    there, so `validate` says so too (each file was OK on its own before)."""
    one = "metadata: {name: p}\nspec:\n  steps:\n  - name: a\n"
    (tmp_path / "p1.yaml").write_text(one)
    (tmp_path / "p2.yaml").write_text(one)
    (tmp_path / "q.yaml").write_text(one.replace("name: p}", "name: q}"))
    files = [str(tmp_path / f) for f in ("p1.yaml", "p2.yaml", "q.yaml")]
    assert cli_main(["validate", *files]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{files[0]}: OK", f"{files[1]}:1: pipeline 'p' is defined twice",
                     f"{files[2]}: OK"]
    assert cli_main(["validate", files[0], files[2]]) == 0
