"""Every case of ../shared/conformance/cases.yaml, read from that file, on every transport."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from engine.compile import PipelineInvalid, compile_pipelines
from engine.spec import load_pipelines
from engine.tensors import Tensor
from tests.harness import Harness, transports
from tests.reference_models import STEPS

CASES_FILE = Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance" / "cases.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(CASES_FILE.read_text())
BY_NAME = {c["name"]: c for c in CASES}


def assert_outputs(outputs: tuple[Tensor, ...], expected: list[dict[str, Any]]) -> None:
    got = [t.to_json() for t in outputs]
    assert [(g["name"], g["datatype"], g["shape"]) for g in got] == [
        (e["name"], e["datatype"], e["shape"]) for e in expected
    ]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(np.asarray(g["data"], float), np.asarray(e["data"], float))


def exchanges(case: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    if "requests" in case:
        return [(r["request"], r["expect"]) for r in case["requests"]]
    return [(case["request"], case["expect"])]


RUNNABLE = [c["name"] for c in CASES if "pipelines" in c]

# What plain_case checks: a case's requests and the outputs (of `pipeline`, default the one
# requested) each one gets. Anything else — `also`, `note`, `model_contract`, an `expect` in
# prose, fields it does not know — is for a dedicated runner in CASE_RUNNERS to assert.
PLAIN_CASE_KEYS = {"name", "pipelines", "models", "send_to", "request", "requests", "expect"}
PLAIN_EXPECT_KEYS = {"outputs", "pipeline"}
# Cases that are not run on an engine, and the keys their own tests below check.
NOT_RUN = {"invalid-specs": {"name", "expect_rejected_with_clear_message", "note"}}


def unchecked_fields(case: dict[str, Any]) -> list[str]:
    """The fields of `case` that plain_case would not check (empty: plain_case covers it)."""
    found = [k for k in case if k not in PLAIN_CASE_KEYS]
    if "request" in case and "requests" in case:
        found.append("both request and requests")
    if "requests" in case:
        if "expect" in case:
            found.append("expect (beside requests)")
        places = [(f"requests[{i}].", r) for i, r in enumerate(case["requests"])]
        for prefix, r in places:
            found += [f"{prefix}{k}" for k in r if k not in ("request", "expect")]
        expects = [(prefix, r.get("expect")) for prefix, r in places]
    elif "request" in case:
        expects = [("", case.get("expect"))]
    else:
        found.append("no request")
        expects = []
    for prefix, expect in expects:
        if not isinstance(expect, dict):
            found.append(f"{prefix}expect (prose: {expect!r})" if expect is not None
                         else f"{prefix}expect (missing)")
            continue
        found += [f"{prefix}expect.{k}" for k in expect if k not in PLAIN_EXPECT_KEYS]
        if not isinstance(expect.get("outputs"), list):
            found.append(f"{prefix}expect.outputs (missing)")
    return found


def needs_runner(name: str) -> str:
    """Why the runnable case `name` cannot go to plain_case ('' when it can)."""
    unchecked = unchecked_fields(BY_NAME[name])
    if not unchecked:
        return ""
    return (f"case {name!r} carries {'; '.join(unchecked)}, which plain_case does not check: "
            f"it needs a runner in CASE_RUNNERS (tests/test_conformance.py) that turns them "
            f"into assertions")


def test_every_case_is_covered() -> None:
    """A new case in the shared file must get a test here (or fail loudly): a case with
    prose (`also`, `note`, `model_contract`, an `expect` in words) needs its own runner."""
    names = {c["name"] for c in CASES}
    assert set(CASE_RUNNERS) <= set(RUNNABLE), "runners for cases no longer in the file"
    problems = [needs_runner(n) for n in RUNNABLE if n not in CASE_RUNNERS]
    for name, keys in NOT_RUN.items():
        if name in names:
            extra = set(BY_NAME[name]) - keys
            if extra:
                problems.append(f"case {name!r} carries {sorted(extra)}, which its tests do not "
                                f"check")
    problems += [f"case {n!r} has no pipelines and no test" for n in names
                 if n not in RUNNABLE and n not in NOT_RUN]
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)


@pytest.fixture(params=transports())
def transport_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


@pytest.mark.parametrize("name", RUNNABLE)
def test_case(name: str, transport_kind: str, request: pytest.FixtureRequest) -> None:
    case = BY_NAME[name]
    runner = CASE_RUNNERS.get(name)
    if runner is None:
        if why := needs_runner(name):
            pytest.fail(why, pytrace=False)
        runner = plain_case
    run(runner(case, Harness(transport_kind, request)))


def outputs_only(case: dict[str, Any]) -> bool:
    """Whether every request of `case` expects outputs that plain_case can check."""
    if "request" not in case and "requests" not in case:
        return False
    return all(isinstance(e, dict) and isinstance(e.get("outputs"), list)
               for _, e in exchanges(case))


# The engine's default configuration: nothing reads the topics (no tap on the embedded bus,
# step_inputs=False on Kafka), so steps take the short path of StepProcessor.fire. The
# outputs every such case expects are checked there too, through `infer` only (the prose of
# the cases that have some is checked by their runners, which need the topic log).
DEFAULT_PATH = [n for n in RUNNABLE if outputs_only(BY_NAME[n])]


@pytest.mark.parametrize("name", DEFAULT_PATH)
def test_case_default_path(name: str, transport_kind: str, request: pytest.FixtureRequest) -> None:
    run(plain_case(BY_NAME[name], Harness(transport_kind, request, observe=False)))


async def plain_case(case: dict[str, Any], h: Harness) -> None:
    async with h.engine(case, STEPS) as eng:
        for req, expect in exchanges(case):
            res = await eng.infer(case["send_to"], req, result_of=expect.get("pipeline"), timeout=30)
            assert res.ok, res.error
            assert_outputs(res.outputs, expect["outputs"])


async def routing_case(case: dict[str, Any], h: Harness) -> None:
    # also: the step that was not chosen never runs (no record on its topics for that request)
    async with h.engine(case, STEPS) as eng:
        for req, expect in exchanges(case):
            res = await eng.infer(case["send_to"], req, timeout=30)
            assert res.ok, res.error
            assert_outputs(res.outputs, expect["outputs"])
            chosen = "mul10" if req["inputs"][0]["data"] == [0] else "add10"
            other = "add10" if chosen == "mul10" else "mul10"
            await h.settle()
            assert h.records(eng.topics.model(chosen, "outputs"), res.request_id)
            for port in ("inputs", "outputs"):
                assert not h.records(eng.topics.model(other, port), res.request_id)


def triggered(case: dict[str, Any], req: dict[str, Any]) -> dict[str, bool]:
    """Step -> whether `req` meets its triggers (steps of the case's one pipeline, all of
    whose inputs every request carries; triggers are that pipeline's input tensors)."""
    (pipeline,) = case["pipelines"]
    prefix = f"{pipeline['metadata']['name']}.inputs."
    sent = {t["name"] for t in req["inputs"]}
    fired = {}
    for step in pipeline["spec"]["steps"]:
        refs = step.get("triggers", [])
        assert all(r.startswith(prefix) for r in refs), f"only {prefix}* triggers: {refs}"
        hits = [r[len(prefix):] in sent for r in refs]
        join = step.get("triggersJoinType", "inner")
        assert join in ("inner", "any"), f"triggersJoinType {join}: extend triggered()"
        fired[step["name"]] = not refs or (any(hits) if join == "any" else all(hits))
    return fired


async def triggers_case(case: dict[str, Any], h: Harness) -> None:
    # also: the trigger tensors (ok1..ok3) are not among the inputs the steps receive
    # and (the gate) a step whose triggers the request does not meet stays idle: with
    # stepsJoin any its extra run would not show in the answer, so it is looked for on its topics
    async with h.engine(case, STEPS) as eng:

        def check_runs(request_id: str, fired: dict[str, bool]) -> None:
            for step, runs in fired.items():
                ins = h.records(eng.topics.model(step, "inputs"), request_id)
                outs = h.records(eng.topics.model(step, "outputs"), request_id)
                errors = [r for r in h.records(eng.topics.errors, request_id)
                          if r.lineage.step == step]
                if runs:
                    assert (len(ins), len(outs), errors) == (1, 1, []), (
                        f"triggered step {step} runs once: {len(ins)} inputs, {len(outs)} "
                        f"outputs, errors {[r.error for r in errors]}")
                else:
                    assert (ins, outs, errors) == ([], [], []), (
                        f"step {step} was not triggered but ran: {len(ins)} inputs, "
                        f"{len(outs)} outputs, {len(errors)} errors")

        done = []
        for req, expect in exchanges(case):
            fired = triggered(case, req)
            assert any(fired.values()) and not all(fired.values()), "a case for the gate"
            res = await eng.infer(case["send_to"], req, timeout=30)
            assert res.ok, res.error
            assert_outputs(res.outputs, expect["outputs"])
            await h.settle()
            seen = [r for step in fired
                    for r in h.records(eng.topics.model(step, "inputs"), res.request_id)]
            assert seen, "the triggered step published its inputs"
            assert all([t.name for t in r.tensors] == ["INPUT"] for r in seen)
            check_runs(res.request_id, fired)
            done.append((res.request_id, fired))
        await h.settle()  # a late extra run of an earlier request shows by now
        for request_id, fired in done:
            check_runs(request_id, fired)


async def output_order_case(case: dict[str, Any], h: Harness) -> None:
    # note: two tensors, both named OUTPUT, in output.steps order
    (pipeline,) = case["pipelines"]
    order = pipeline["spec"]["output"]["steps"]
    assert all("." not in s for s in order), "output.steps are whole steps here"
    async with h.engine(case, STEPS) as eng:
        for req, expect in exchanges(case):
            res = await eng.infer(case["send_to"], req, timeout=30)
            assert res.ok, res.error
            assert_outputs(res.outputs, expect["outputs"])
            assert [t.name for t in res.outputs] == ["OUTPUT"] * len(order) == ["OUTPUT", "OUTPUT"]
            await h.settle()
            for step, tensor in zip(order, res.outputs, strict=True):
                outs = h.records(eng.topics.model(step, "outputs"), res.request_id)
                assert len(outs) == 1, (step, outs)
                assert [t.name for t in outs[0].tensors] == [tensor.name], step
                np.testing.assert_array_equal(outs[0].tensors[0].data, tensor.data,
                                              err_msg=f"output tensor from {step}")


async def chained_case(case: dict[str, Any], h: Harness) -> None:
    # note: p-second's output carries the same request lineage as the p-first request
    async with h.engine(case, STEPS) as eng:
        for req, expect in exchanges(case):
            record = eng.make_request(case["send_to"], req)
            first = eng.expect(record.lineage.request_id, case["send_to"])
            second = eng.expect(record.lineage.request_id, expect["pipeline"])
            eng.submit(record)
            res1, res2 = await asyncio.wait_for(asyncio.gather(first, second), 30)
            assert res2.ok, res2.error
            assert_outputs(res2.outputs, expect["outputs"])
            assert res2.lineage is not None and res1.lineage is not None
            assert res2.lineage.request_id == record.lineage.request_id
            assert res2.lineage.trace_id == record.lineage.trace_id
            await h.settle()
            ids = {r.lineage.record_id for r in h.all_records(record.lineage.request_id)}
            assert res1.lineage.record_id in ids
            # p-second's input record names p-first's output record as its parent
            inputs2 = h.records(eng.topics.pipeline(expect["pipeline"], "inputs"),
                                record.lineage.request_id)
            assert [r.lineage.parents for r in inputs2] == [(res1.lineage.record_id,)]


async def batching_case(case: dict[str, Any], h: Harness) -> None:
    # expect: add10 runs once, on a [3,4] tensor; each request gets its own row back with its
    # own request id
    calls: list[tuple[int, ...]] = []

    def add10(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(tuple(inputs["INPUT"].shape))
        return STEPS["add10"](inputs)

    async with h.engine(case, {**STEPS, "add10": add10}) as eng:
        reqs = case["concurrent_requests"]
        results = await asyncio.gather(
            *(eng.infer(case["send_to"], r["request"], timeout=30) for r in reqs)
        )
        assert calls == [(3, 4)]
        assert len({r.request_id for r in results}) == 3
        for res, r in zip(results, reqs, strict=True):
            assert res.ok, res.error
            assert_outputs(res.outputs, r["expect"]["outputs"])


async def error_case(case: dict[str, Any], h: Harness) -> None:
    # expect: an error result naming step add_sub and the shape problem; an error record with
    # the request's lineage on the errors topic; the next valid request still succeeds
    good = BY_NAME["single-step"]
    async with h.engine(case, STEPS) as eng:
        res = await eng.infer(case["send_to"], case["request"], timeout=30)
        assert not res.ok
        assert "add_sub" in res.error and "[1, 20]" in res.error
        await h.settle()
        errors = h.records(eng.topics.errors, res.request_id)
        assert len(errors) == 1 and errors[0].kind == "error"
        assert errors[0].lineage.step == "add_sub"
        assert errors[0].lineage.pipeline == case["send_to"]
        assert errors[0].lineage.parents, "the error record names the record it came from"
        ok = await eng.infer(case["send_to"], good["request"], timeout=30)
        assert ok.ok, ok.error
        assert_outputs(ok.outputs, good["expect"]["outputs"])


async def cycle_case(case: dict[str, Any], h: Harness) -> None:
    # expect: the loop stops after 3 revisits with an error record naming the limit; nothing hangs
    limit = case["pipelines"][0]["spec"]["maxStepRevisits"]
    assert case["request"] == {"INPUT": "F"}  # shorthand: an FP32 tensor named INPUT
    req = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}
    async with h.engine(case, STEPS) as eng:
        record = eng.make_request(case["send_to"], req)
        rid = record.lineage.request_id
        eng.submit(record)
        errors: list[Any] = []
        for _ in range(300):
            await h.settle()
            errors = h.records(eng.topics.errors, rid)
            if errors:
                break
            await asyncio.sleep(0.05)
        assert len(errors) == 1
        assert f"maxStepRevisits={limit}" in errors[0].error
        runs = h.records(eng.topics.model("add10", "outputs"), rid)
        assert len(runs) == 1 + limit  # the first visit plus `limit` revisits
        assert sorted(r.lineage.generation for r in runs) == list(range(limit + 1))
        first = runs[0].tensors[0].data
        np.testing.assert_allclose(first, [11, 12, 13, 14])


CASE_RUNNERS = {
    "conditional-routing-any": routing_case,
    "pipeline-inputs-and-output-join": output_order_case,
    "triggers": triggers_case,
    "pipeline-to-pipeline": chained_case,
    "batching-keeps-every-request": batching_case,
    "error-names-the-step": error_case,
    "cycle-with-max-revisits": cycle_case,
}


# -- invalid specs --------------------------------------------------------------------------
BASE = """\
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: p-bad
spec:
  steps:
{steps}
  output:
    steps: [a]
"""

INVALID: dict[str, tuple[str, list[str]]] = {
    # rule text fragment -> (steps YAML or whole spec, strings the message must contain)
    "a step named like the pipeline": ("    - name: a\n    - name: p-bad\n", ["p-bad"]),
    "a step input that is empty": ("    - name: a\n      inputs: ['']\n", ["'a'", "empty"]),
    "a trigger that is empty": ("    - name: a\n      triggers: ['']\n", ["'a'", "empty"]),
    "a reference to a step that does not exist": (
        "    - name: a\n      inputs: [nosuch.outputs.X]\n", ["'a'", "nosuch.outputs.X"]),
    "a.b.c.d": ("    - name: a\n    - name: b\n      inputs: [a.b.c.d]\n", ["'b'", "a.b.c.d"]),
    "a.sideways": ("    - name: a\n    - name: b\n      inputs: [a.sideways]\n",
                   ["'b'", "a.sideways"]),
    "two steps with the same name": ("    - name: a\n    - name: a\n", ["'a'", "same name"]),
    "the same step both in inputs and in triggers": (
        "    - name: a\n    - name: b\n      inputs: [a.outputs.X]\n      triggers: [a.outputs.Y]\n",
        ["'b'", "a.outputs.Y", "both in inputs and in triggers"]),
    "a cycle": ("    - name: a\n      inputs: [b]\n    - name: b\n      inputs: [a]\n",
                ["cycle", "allowCycles"]),
    "spec.input given with empty externalInputs": (
        "SPEC:\n  input:\n    externalInputs: []\n  steps:\n    - name: a\n",
        ["externalInputs", "empty"]),
    "a pipeline with no steps": ("SPEC:\n  steps: []\n", ["no steps"]),
}


def _spec_text(body: str) -> str:
    if body.startswith("SPEC:"):
        return BASE.split("spec:")[0] + "spec:" + body[len("SPEC:"):]
    return BASE.format(steps=body)


def _rule_key(rule: str) -> list[str]:
    keys = [k for k in INVALID if k in rule]
    if "bad form" in rule:
        keys = ["a.b.c.d", "a.sideways"]
    return keys


@pytest.mark.parametrize("rule", BY_NAME["invalid-specs"]["expect_rejected_with_clear_message"])
def test_invalid_spec_rejected(rule: str, tmp_path: Path) -> None:
    keys = _rule_key(rule)
    assert keys, f"no test spec written for the rule {rule!r}"
    for key in keys:
        body, must_contain = INVALID[key]
        path = tmp_path / "bad.yaml"
        path.write_text(_spec_text(body))
        with pytest.raises(PipelineInvalid) as err:
            compile_pipelines(load_pipelines(path))
        message = str(err.value)
        assert "'p-bad'" in message
        for fragment in must_contain:
            assert fragment in message, (fragment, message)
        assert re.search(rf"{re.escape(str(path))}:\d+", message), message


def test_cycle_allowed_when_declared(tmp_path: Path) -> None:
    text = _spec_text("    - name: a\n      inputs: [b]\n    - name: b\n      inputs: [a]\n")
    text = text.replace("spec:\n", "spec:\n  allowCycles: true\n", 1)
    path = tmp_path / "cycle.yaml"
    path.write_text(text)
    compile_pipelines(load_pipelines(path))


def test_problem_points_at_the_offending_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(_spec_text("    - name: a\n    - name: b\n      inputs: [a.sideways]\n"))
    with pytest.raises(PipelineInvalid) as err:
        compile_pipelines(load_pipelines(path))
    line = path.read_text().splitlines().index("      inputs: [a.sideways]") + 1
    assert f"{path}:{line}:" in str(err.value)


@pytest.mark.parametrize(
    "name", ["insurance_claims.yaml", "insurance_claims_with_bug.yaml"]
)
def test_reference_pipelines_with_underscores_load(name: str) -> None:
    path = CASES_FILE.parents[1] / "reference" / "insurance-claims" / name
    compiled = compile_pipelines(load_pipelines(path))
    assert compiled.pipelines
