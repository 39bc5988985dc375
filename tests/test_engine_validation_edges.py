"""Validation edge cases, and malformed input that must end in a clear message, not a traceback."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.cli import main as cli_main
from engine.compile import PipelineInvalid
from engine.engine import Engine, RequestError
from engine.spec import load_pipelines
from engine.tensors import Tensor
from engine.validate import validate


def fp(name: str, data: list[float]) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": [len(data)], "data": data}


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def double(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": inputs["x"] * 2}


# -- spec.input naming the pipeline itself -----------------------------------------------------
@pytest.mark.parametrize(
    "section",
    [
        {"externalInputs": ["p.inputs"]},
        {"externalInputs": ["p.outputs"]},
        {"externalInputs": ["p.step.s.outputs.y"]},
        {"externalInputs": ["other.outputs"], "externalTriggers": ["p.outputs"]},
    ],
    ids=["inputs", "outputs", "own-step", "trigger"],
)
def test_pipeline_cannot_take_its_own_records_as_external_inputs(section: dict[str, Any]) -> None:
    pipelines = load_pipelines({"metadata": {"name": "p"},
                                "spec": {"input": section, "steps": [{"name": "s"}]}})
    problems = validate(pipelines)
    assert len(problems) == 1
    assert "names the pipeline itself" in problems[0]
    assert "cannot take its own records as external inputs" in problems[0]
    with pytest.raises(PipelineInvalid):  # never reaches infer, which would loop forever
        Engine(pipelines, {"s": double})


# -- output.tensorMap --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tensor_map, message",
    [
        ({"nosuch.outputs.y": "z"}, "names a step that does not exist"),
        ({"a.b.c.d.e": "z"}, "bad reference form"),
        ({"a.outputs": "z"}, "must name a tensor"),
        ({"p.inputs.x": "z"}, "is not among its inputs"),
        ({"a.outputs.y": ""}, "maps to an empty name"),
    ],
    ids=["unknown-step", "bad-form", "no-tensor", "not-an-output-step", "empty-name"],
)
def test_output_tensor_map_is_validated(
    tmp_path: Path, capsys: pytest.CaptureFixture, tensor_map: dict[str, str], message: str
) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("metadata: {name: p}\nspec:\n  steps:\n  - name: a\n"
                 f"  output: {{steps: [a], tensorMap: {json.dumps(tensor_map)}}}\n")
    assert cli_main(["validate", str(f)]) == 1
    out = capsys.readouterr().out
    assert f"{f}:5: pipeline 'p': spec.output: tensorMap" in out and message in out


@pytest.mark.parametrize("steps", [["a"], []], ids=["output-steps", "sink-steps"])
def test_valid_output_tensor_map_renames(steps: list[str]) -> None:
    pipelines = load_pipelines({"metadata": {"name": "p"}, "spec": {
        "steps": [{"name": "a"}], "output": {"steps": steps, "tensorMap": {"a.outputs.y": "z"}}}})
    assert validate(pipelines) == []

    async def main() -> None:
        async with Engine(pipelines, {"a": double}) as eng:
            result = await eng.infer("p", {"inputs": [fp("x", [1.0])]})
        assert result.ok, result.error
        assert [(t.name, t.data.tolist()) for t in result.outputs] == [("z", [2.0])]

    run(main())


# -- a step without inputs reads its pipeline's inputs, and may rename them ------------------
def test_step_without_inputs_may_rename_pipeline_inputs() -> None:
    pipelines = load_pipelines({"metadata": {"name": "p"}, "spec": {
        "steps": [{"name": "s", "tensorMap": {"p.inputs.x": "INPUT"}}]}})
    assert validate(pipelines) == []

    async def main() -> None:
        async with Engine(pipelines, {"s": lambda i: {"y": i["INPUT"] * 2}}) as eng:
            result = await eng.infer("p", {"inputs": [fp("x", [1.0])]})
        assert result.ok, result.error
        assert result.outputs[0].data.tolist() == [2.0]

    run(main())


# -- clear messages instead of tracebacks ---------------------------------------------------
@pytest.mark.parametrize("metadata", ["foo", "[1, 2]"], ids=["string", "list"])
def test_cli_validate_metadata_not_a_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture, metadata: str
) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(f"metadata: {metadata}\nspec: {{steps: [{{name: a}}]}}\n")
    assert cli_main(["validate", str(f)]) == 1
    out = capsys.readouterr().out
    assert f"{f}:1: pipeline '<unnamed>': metadata:" in out and "dictionary" in out


@pytest.mark.parametrize(
    "request_, message",
    [
        ("abc", "expected OIP v2 JSON (a mapping) or tensors, got str"),
        (5, "expected OIP v2 JSON (a mapping) or tensors, got int"),
        ([1], "expected Tensor objects, got int"),
        ({"inputs": [fp("x", [1.0])], "parameters": "zz"}, "'parameters' must be a mapping, got str"),
        ({"inputs": [fp("x", [1.0])], "parameters": {"traceparent": 5}}, "traceparent must be a string"),
    ],
    ids=["string", "int", "not-tensors", "parameters-string", "traceparent-int"],
)
def test_malformed_request_raises_request_error(request_: Any, message: str) -> None:
    pipelines = load_pipelines({"metadata": {"name": "p"}, "spec": {"steps": [{"name": "s"}]}})

    async def main() -> None:
        async with Engine(pipelines, {"s": double}) as eng:
            with pytest.raises(RequestError, match=re.escape(f"request to 'p': {message}")):
                await eng.infer("p", request_)
            good = await eng.infer("p", [Tensor.from_json(fp("x", [1.0]))])
        assert good.ok and good.outputs[0].data.tolist() == [2.0]

    run(main())


def test_cli_run_malformed_request_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "p.yaml").write_text("metadata: {name: p}\nspec: {steps: [{name: s}]}\n")
    (tmp_path / "steps.py").write_text("def s(i):\n    return {'y': i['x']}\n")
    (tmp_path / "req.json").write_text(json.dumps({"inputs": [fp("x", [1.0])], "parameters": "zz"}))
    assert cli_main(["run", str(tmp_path / "p.yaml"), "--models", str(tmp_path / "steps.py"),
                     "--input", str(tmp_path / "req.json")]) == 2
    assert "flowcause: request to 'p': 'parameters' must be a mapping" in capsys.readouterr().err


def test_cli_run_timeout_names_the_wait(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "p.yaml").write_text("metadata: {name: p}\nspec: {steps: [{name: s}]}\n")
    (tmp_path / "steps.py").write_text(
        "import asyncio\n\n\nasync def s(i):\n    await asyncio.sleep(2)\n    return {'y': i['x']}\n")
    (tmp_path / "req.json").write_text(json.dumps({"inputs": [fp("x", [1.0])]}))
    assert cli_main(["run", str(tmp_path / "p.yaml"), "--models", str(tmp_path / "steps.py"),
                     "--input", str(tmp_path / "req.json"), "--timeout", "0.2"]) == 2
    assert capsys.readouterr().err == "flowcause: timed out after 0.2 s waiting for pipeline 'p'\n"


# -- two inputs giving a step tensors of one name ----------------------------------------------
def _clash_pipeline(join: str, tensor_map: dict[str, str], inputs: list[str]) -> list[Any]:
    return load_pipelines({"metadata": {"name": "p"}, "spec": {
        "steps": [{"name": "a"}, {"name": "b"},
                  {"name": "c", "inputs": inputs, "inputsJoinType": join, "tensorMap": tensor_map}],
        "output": {"steps": ["c"]}}})


@pytest.mark.parametrize("inputs, tensor_map", [
    (["a.outputs.y", "b.outputs.y"], {}),
    (["a.outputs.ya", "b.outputs.yb"], {"a.outputs.ya": "X", "p.step.b.outputs.yb": "X"}),
    (["a.outputs.ya", "b.outputs.X"], {"a.outputs.ya": "X"}),
])
def test_an_inner_join_whose_named_inputs_give_one_name_twice_is_refused(
        inputs: list[str], tensor_map: dict[str, str]) -> None:
    problems = validate(_clash_pipeline("inner", tensor_map, inputs))
    assert len(problems) == 1 and "step 'c'" in problems[0], problems
    assert f"inputs {inputs[0]!r} and {inputs[1]!r} both give the step a tensor named" in problems[0]


@pytest.mark.parametrize("join, inputs, tensor_map", [
    ("any", ["a.outputs.ya", "b.outputs.yb"], {"a.outputs.ya": "X", "b.outputs.yb": "X"}),
    ("outer", ["a.outputs.y", "b.outputs.y"], {}),
    ("inner", ["a.outputs.y", "b.outputs.y"], {"b.outputs.y": "z"}),
    ("inner", ["a", "b"], {}),  # names known only at run time
])
def test_inputs_that_may_not_clash_are_accepted(
        join: str, inputs: list[str], tensor_map: dict[str, str]) -> None:
    assert validate(_clash_pipeline(join, tensor_map, inputs)) == []


@pytest.mark.parametrize("batch", [None, {"size": 2, "windowMs": 20}])
def test_a_step_given_two_tensors_of_one_name_fails_instead_of_losing_one(
        batch: dict[str, int] | None) -> None:
    """Whole-output inputs whose tensors share a name (known only when they arrive): the step
    fails naming the tensor; before, it was given one of them (batched: one of them twice)."""
    pipes = load_pipelines({"metadata": {"name": "p"}, "spec": {
        "steps": [{"name": "a"}, {"name": "b"},
                  {"name": "c", "inputs": ["a", "b"], **({"batch": batch} if batch else {})}],
        "output": {"steps": ["c"]}}})
    seen: list[Any] = []
    code = {"a": lambda x: {"OUTPUT": x["x"] + 1}, "b": lambda x: {"OUTPUT": x["x"] + 100},
            "c": lambda x: seen.append(x) or {"z": x["OUTPUT"]}}

    async def main() -> Any:
        async with Engine(pipes, code) as eng:
            return await eng.infer("p", {"inputs": [fp("x", [1.0])]}, timeout=5)

    answer = run(main())
    assert not answer.ok and seen == []
    assert ("step 'c' of pipeline 'p': InputNameClash: its inputs hold more than one tensor "
            "named 'OUTPUT'; give them names of their own with the step's tensorMap") in answer.error


def test_a_batch_of_tensors_whose_shapes_differ_beyond_dimension_0_says_so() -> None:
    pipes = load_pipelines({"metadata": {"name": "p"}, "spec": {
        "steps": [{"name": "s", "batch": {"size": 2, "windowMs": 1000}}],
        "output": {"steps": ["s"]}}})

    async def main() -> list[Any]:
        async with Engine(pipes, {"s": double}) as eng:
            return await asyncio.gather(
                eng.infer("p", {"inputs": [{**fp("x", [1.0, 2.0]), "shape": [1, 2]}]}, timeout=5),
                eng.infer("p", {"inputs": [{**fp("x", [1.0, 2.0, 3.0]), "shape": [1, 3]}]},
                          timeout=5))

    for answer in run(main()):
        assert not answer.ok
        assert ("BatchError: batched requests' tensor 'x' differ in shape beyond dimension 0: "
                "[1, 3] vs [1, 2]") in answer.error


def test_a_pipeline_whose_steps_all_feed_each_other_needs_output_steps() -> None:
    """Every step read by another (a loop) leaves no default output: its requests could never
    be answered, so validation says so."""
    spec: dict[str, Any] = {
        "allowCycles": True, "maxStepRevisits": 3,
        "steps": [{"name": "a", "inputs": ["p.inputs.x", "b.outputs.x"], "inputsJoinType": "any"},
                  {"name": "b", "inputs": ["a.outputs.again"],
                   "tensorMap": {"a.outputs.again": "x"}}]}
    (problem,) = validate(load_pipelines({"metadata": {"name": "p"}, "spec": spec}))
    assert "every step is read by another step, so it has no default output" in problem
    assert validate(load_pipelines({"metadata": {"name": "p"},
                                    "spec": {**spec, "output": {"steps": ["a"]}}})) == []
