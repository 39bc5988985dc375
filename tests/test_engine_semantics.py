"""Engine behaviour beyond the shared conformance cases: failures, timeouts, lineage, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli import main as cli_main
from engine.compile import compile_pipelines
from engine.embedded import EmbeddedBus
from engine.engine import Engine, RequestError
from engine.lineage import Lineage, new_request_id, new_span_id, new_trace_id
from engine.observe import StepEvent
from engine.record import Record
from engine.spec import load_pipelines
from engine.tensors import DTYPES, Tensor, TensorError

ROOT = Path(__file__).resolve().parents[1]


def fp(name: str, data: list[float]) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": [len(data)], "data": data}


def one_step(name: str = "p", steps: list[dict[str, Any]] | None = None,
             output: list[str] | None = None, **spec: Any) -> list:
    body = {"steps": steps or [{"name": "s"}], "output": {"steps": output or ["s"]}, **spec}
    return load_pipelines({"metadata": {"name": name}, "spec": body})


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


# -- failures never stop other requests -------------------------------------------------------
@pytest.mark.parametrize(
    "step, expected",
    [
        (lambda x: 1 / 0, "ZeroDivisionError"),
        (lambda x: "not a mapping", "expected a mapping of tensors"),
        (lambda x: {"y": np.array([object()])}, "malformed tensor 'y'"),
    ],
    ids=["raises", "not-a-mapping", "malformed-tensor"],
)
def test_failing_step_gives_error_result_and_record(step: Any, expected: str) -> None:
    async def main() -> None:
        bus = EmbeddedBus()
        errors: list[Record] = []
        bus.tap(lambda topic, r: errors.append(r) if topic.endswith("errors.errors") else None)
        calls = {"n": 0}

        def flaky(inputs: dict[str, np.ndarray]) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                return step(inputs)
            return {"y": inputs["x"] + 1}

        async with Engine(one_step(), {"s": flaky}, transport=bus) as eng:
            bad = await eng.infer("p", {"inputs": [fp("x", [1.0])]})
            good = await eng.infer("p", {"inputs": [fp("x", [1.0])]})
        assert not bad.ok and expected in bad.error and "'s'" in bad.error
        assert [e.lineage.request_id for e in errors] == [bad.request_id]
        assert errors[0].lineage.origin == "s.errors"
        assert good.ok and good.outputs[0].data.tolist() == [2.0]

    run(main())


def test_async_step_timeout() -> None:
    async def slow(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        await asyncio.sleep(5)
        return {"y": inputs["x"]}

    slow.timeout_s = 0.05  # type: ignore[attr-defined]

    async def main() -> None:
        async with Engine(one_step(), {"s": slow}) as eng:
            res = await eng.infer("p", {"inputs": [fp("x", [1.0])]}, timeout=5)
        assert not res.ok and "timed out after 0.05 s" in res.error

    run(main())


def test_inner_join_partner_missing_ends_in_timeout() -> None:
    """A partner that never arrives (and is never announced absent) times out, not lost."""

    async def missing() -> None:
        pipes = load_pipelines({"metadata": {"name": "q"}, "spec": {
            "input": {"externalInputs": ["never.outputs"], "joinWindowMs": 50},
            "steps": [{"name": "s"}], "output": {"steps": ["s"]}}})
        pipes += load_pipelines({"metadata": {"name": "r"}, "spec": {
            "input": {"externalInputs": ["q.outputs", "never.outputs"], "joinWindowMs": 100},
            "steps": [{"name": "t"}], "output": {"steps": ["t"]}}})
        pipes += one_step("never")
        async with Engine(pipes, {"s": lambda x: x, "t": lambda x: x}) as eng:
            # q waits for never's output, which is never sent (we send to q's input directly)
            record = eng.make_request("q", {"inputs": [fp("x", [1.0])]})
            fut = eng.expect(record.lineage.request_id, "r")
            eng.submit(record)  # r joins q.outputs with never.outputs -> never comes
            res = await asyncio.wait_for(fut, 5)
        assert not res.ok
        assert "join window closed waiting for outputs" in res.error
        assert "inputs of pipeline 'r'" in res.error

    run(missing())


def test_routed_branches_resolve_without_waiting_for_the_window() -> None:
    """Steps downstream of an untaken branch end at once (absence notices), not by timeout."""
    steps = [
        {"name": "router"},
        {"name": "left", "inputs": ["router.outputs.l"]},
        {"name": "left2", "inputs": ["left"]},
        {"name": "right", "inputs": ["router.outputs.r"]},
        {"name": "join", "inputs": ["left2", "right"], "inputsJoinType": "outer"},
    ]
    code = {
        "router": lambda x: {"l": x["x"]} if x["x"][0] > 0 else {"r": x["x"]},
        "left": lambda x: {"a": x["l"]},
        "left2": lambda x: {"b": x["a"] * 2},
        "right": lambda x: {"c": x["r"] * 3},
        "join": lambda x: {"out": x.get("b", x.get("c"))},
    }

    async def main() -> None:
        async with Engine(one_step(steps=steps, output=["join"]), code) as eng:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            pos = await eng.infer("p", {"inputs": [fp("x", [1.0])]}, timeout=5)
            neg = await eng.infer("p", {"inputs": [fp("x", [-1.0])]}, timeout=5)
            assert loop.time() - t0 < 1.0, "outer join waited for its (60 s) window"
        assert pos.outputs[0].data.tolist() == [2.0]
        assert neg.outputs[0].data.tolist() == [-3.0]

    run(main())


def test_a_retry_with_the_same_id_joins_apart_from_the_attempt_it_replaces() -> None:
    """The client gives up on request r while its slow partner is still on the way, and
    sends r again: the retry joins its own records (docs: it gets its own answer), not the
    first attempt's, whose partner dropped the retry's record as a duplicate before."""
    steps = [{"name": "a"}, {"name": "b"},
             {"name": "c", "inputs": ["a.outputs.va", "b.outputs.vb"], "joinWindowMs": 2000}]

    async def slow_b(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        await asyncio.sleep(0.3)
        return {"vb": x["x"] + 1000}

    code = {"a": lambda x: {"va": x["x"] + 1}, "b": slow_b,
            "c": lambda x: {"out": x["va"] + x["vb"]}}

    async def main() -> None:
        async with Engine(one_step(steps=steps, output=["c"]), code) as eng:
            with pytest.raises(TimeoutError):
                await eng.infer("p", {"id": "r", "inputs": [fp("x", [1.0])]}, timeout=0.1)
            retry = await eng.infer("p", {"id": "r", "inputs": [fp("x", [5.0])]}, timeout=5)
        assert retry.ok, retry.error
        assert retry.outputs[0].data.tolist() == [1011.0]  # (5 + 1) + (5 + 1000)

    run(main())


async def _plus_one(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": inputs["x"] + 1}


@pytest.mark.parametrize("step, code, ok", [
    ({"name": "s"}, lambda x: {"y": x["x"] + 1}, True),
    ({"name": "s"}, _plus_one, True),
    ({"name": "s", "batch": {"size": 1}}, lambda x: {"y": x["x"] + 1}, True),
    ({"name": "s", "batch": {"size": 1}}, lambda x: 1 / 0, False),
], ids=["sync", "async", "batched", "failing"])
def test_untraced_steps_pass_on_the_traceparent_they_received(step: dict[str, Any],
                                                               code: Any, ok: bool) -> None:
    """With no observer no span exists, so no hop makes up a span id (an async or batched
    step, or a failing one, did: a traced hop downstream hung off a span no one exported)."""
    traceparent = f"00-{'ab' * 16}-{'cd' * 8}-01"

    async def main() -> Any:
        async with Engine(one_step(steps=[step]), {"s": code}) as eng:
            return await eng.infer("p", {"inputs": [fp("x", [1.0])]}, traceparent=traceparent,
                                   timeout=5)

    answer = run(main())
    assert answer.ok is ok
    assert answer.lineage.traceparent == traceparent


class RedeliveringBus(EmbeddedBus):
    redelivers = True  # as KafkaTransport: processors remember what they decided


@pytest.mark.parametrize("again", [["partner"], ["request", "partner"]])
def test_a_join_drops_records_redelivered_after_it_decided(again: list[str]) -> None:
    """As a Kafka worker reads again what a stop left uncommitted: the join's partner alone
    (it started a new join that timed out: a false error for an answered request), or the
    request and the partner (the step ran twice). Docs: processors drop keys they decided."""
    pipes = load_pipelines({"metadata": {"name": "k"}, "spec": {
        "steps": [{"name": "features"},
                  {"name": "model", "inputs": ["features.outputs.f", "k.inputs.x"],
                   "joinWindowMs": 200}],
        "output": {"steps": ["model"]}}})
    code = {"features": lambda i: {"f": i["x"] * 2}, "model": lambda i: {"y": i["f"] + i["x"]}}

    async def main() -> tuple[Any, list[tuple[str, Record]]]:
        bus = RedeliveringBus()
        log: list[tuple[str, Record]] = []
        bus.tap(lambda topic, r: log.append((topic, r)))
        async with Engine(pipes, code, transport=bus) as eng:
            answer = await eng.infer("k", {"id": "r1", "inputs": [fp("x", [1.0])]}, timeout=5)
            first = {"request": next(r for t, r in log if t.endswith("pipeline.k.inputs")),
                     "partner": next(r for t, r in log if t.endswith("model.features.outputs"))}
            topics = {"request": eng.topics.pipeline("k", "inputs"),
                      "partner": eng.topics.model("features", "outputs")}
            for which in again:
                bus.publish(topics[which], first[which])
            await asyncio.sleep(0.4)  # two join windows
        return answer, log

    answer, log = run(main())
    assert answer.ok and answer.outputs[0].data.tolist() == [3.0]
    assert [t for t, _ in log if t.endswith("errors.errors")] == []
    assert len([t for t, _ in log if t.endswith("model.model.outputs")]) == 1


def test_error_answer_names_the_input_tensors_the_request_lacks() -> None:
    """A misspelt input tensor is a branch not taken (the step that names it does not run);
    the answer says which tensor the request lacks. A branch not taken with every input
    present gets no such note."""
    steps = [
        {"name": "router", "inputs": ["p.inputs.x"]},
        {"name": "left", "inputs": ["router.outputs.l"]},
    ]
    code = {"router": lambda x: {"l": x["x"]} if x["x"][0] > 0 else {"r": x["x"]},
            "left": lambda x: {"a": x["l"]}}

    async def main() -> None:
        async with Engine(one_step(steps=steps, output=["left"]), code) as eng:
            misspelt = await eng.infer("p", {"inputs": [fp("X", [1.0])]}, timeout=5)
            routed = await eng.infer("p", {"inputs": [fp("x", [-1.0])]}, timeout=5)
            good = await eng.infer("p", {"inputs": [fp("x", [1.0])]}, timeout=5)
        assert not misspelt.ok and "branch not taken" in misspelt.error
        assert ("the request has no tensor 'x', which 'p' reads from its inputs "
                "(the request's tensors: 'X')") in misspelt.error
        assert not routed.ok and "branch not taken" in routed.error
        assert "no tensor" not in routed.error
        assert good.ok and good.outputs[0].data.tolist() == [1.0]

    run(main())


def test_input_tensors_read_are_those_named_on_the_pipeline_inputs() -> None:
    pipes = load_pipelines({"metadata": {"name": "p"}, "spec": {
        "steps": [{"name": "a", "inputs": ["p.inputs.x"], "triggers": ["p.inputs.go"]},
                  {"name": "b", "inputs": ["p.inputs"]},
                  {"name": "c", "inputs": ["a.outputs.y", "p.inputs.z"],
                   "tensorMap": {"p.inputs.z": "zz"}}],
        "output": {"steps": ["b", "c"]}}})
    assert compile_pipelines(pipes).input_tensors_read("p") == {"x", "go", "z"}


def test_joins_remember_only_keys_whose_partners_may_still_come() -> None:
    """An inner join that got every input forgets the request at once (memory does not grow
    with the request rate times the 60 s window); an ``any`` join remembers it until its
    late partner came, which it drops instead of running again."""
    steps = [
        {"name": "a"}, {"name": "b"},
        {"name": "both", "inputs": ["a", "b"]},
        {"name": "first", "inputs": ["a", "b"], "inputsJoinType": "any"},
    ]
    runs = {"first": 0}

    def first(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        runs["first"] += 1
        return {"f": next(iter(x.values()))}

    code = {"a": lambda x: {"y": x["x"]}, "b": lambda x: {"z": x["x"] + 1},
            "both": lambda x: {"w": x["y"] + x["z"]}, "first": first}

    async def main() -> None:
        async with Engine(one_step(steps=steps, output=["both", "first"]), code) as eng:
            for i in range(50):
                res = await eng.infer("p", {"inputs": [fp("x", [float(i)])]}, timeout=5)
                assert res.ok
            await asyncio.sleep(0.05)
            decided = {p.plan.name: len(p.table.decided) for p in eng.processors
                       if p.plan.name in ("both", "first")}
        assert decided == {"both": 0, "first": 0}, decided
        assert runs["first"] == 50  # each late partner was dropped, not run

    run(main())


def test_decided_keys_are_forgotten_a_window_later_when_no_partner_comes() -> None:
    """A cycle's ``any`` join decides on the request's own input; the loop's last iteration
    never sends its partner. The join must forget those keys one window later, not keep
    every request ever seen."""
    pipes = load_pipelines({"metadata": {"name": "loop"}, "spec": {
        "allowCycles": True, "maxStepRevisits": 3,
        "steps": [{"name": "add10", "inputs": ["loop.inputs.INPUT", "add10.outputs.OUTPUT"],
                   "tensorMap": {"add10.outputs.OUTPUT": "INPUT"}, "inputsJoinType": "any",
                   "joinWindowMs": 100}],
        "output": {"steps": ["add10"]}}})

    async def main() -> None:
        async with Engine(pipes, {"add10": lambda i: {"OUTPUT": i["INPUT"] + 10}}) as eng:
            join = next(p for p in eng.processors if p.plan.name == "add10").table
            await asyncio.gather(*(eng.infer("loop", {"inputs": [fp("INPUT", [1.0])]}, timeout=5)
                                   for _ in range(200)))
            assert join.decided  # remembered while a partner may still come
            await asyncio.sleep(0.5)  # five windows
            assert not join.pending and not join.decided, (len(join.pending), len(join.decided))

    run(main())


def test_a_step_changing_its_inputs_in_place_changes_nothing_upstream() -> None:
    """In Seldon every step decodes a request of its own. Here too: a step that zeroes its
    input in place must not change what a sibling step is given, nor what the upstream
    step is recorded to have produced."""
    produced: dict[str, np.ndarray] = {}

    class Recorder:
        def on_step(self, event: StepEvent) -> None:
            for t in event.outputs:
                produced[event.step] = t.data

        def on_pipeline_record(self, pipeline: str, port: str, record: Record) -> None:
            pass

    def zeroes(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x["y"] *= 0
        return {"z": x["y"]}

    steps = [{"name": "a"}, {"name": "b", "inputs": ["a"]}, {"name": "c", "inputs": ["a"]}]
    code = {"a": lambda x: {"y": x["x"] * 2}, "b": zeroes, "c": lambda x: {"w": x["y"] + 1}}

    async def main() -> None:
        async with Engine(one_step(steps=steps, output=["b", "c"]), code,
                          observers=[Recorder()]) as eng:
            res = await eng.infer("p", {"inputs": [fp("x", [3.0])]}, timeout=5)
        assert res.ok
        got = {t["name"]: t["data"] for t in res.to_json()["outputs"]}
        assert got == {"z": [0.0], "w": [7.0]}, got
        assert produced["a"].tolist() == [6.0]

    run(main())


def test_a_batch_never_mixes_datatypes() -> None:
    """Stacking an FP32 request with an FP64 one would hand back FP64 to both: the batch
    fails instead, each request told why, as for differing tensor names."""
    pipes = load_pipelines({"metadata": {"name": "p"},
                            "spec": {"steps": [{"name": "s", "batch": {"size": 2}}]}})

    def tensor(datatype: str, value: float) -> dict[str, Any]:
        return {"name": "x", "datatype": datatype, "shape": [1, 1], "data": [value]}

    async def main() -> None:
        async with Engine(pipes, {"s": lambda i: {"y": i["x"] * 2}}) as eng:
            mixed = await asyncio.gather(eng.infer("p", {"inputs": [tensor("FP32", 1.0)]}),
                                         eng.infer("p", {"inputs": [tensor("FP64", 2.0)]}))
            same = await asyncio.gather(eng.infer("p", {"inputs": [tensor("FP32", 1.0)]}),
                                        eng.infer("p", {"inputs": [tensor("FP32", 2.0)]}))
        assert not any(r.ok for r in mixed)
        assert all("different tensors" in (r.error or "") for r in mixed), [r.error for r in mixed]
        assert [r.outputs[0].datatype for r in same] == ["FP32", "FP32"]

    run(main())


def test_a_loop_answers_with_the_output_its_last_turn_makes() -> None:
    """The output step is skipped on the loop's first turns (the router sends the value
    round again) and runs on the last: the answer is that output, not the first turns'
    absence."""
    pipes = load_pipelines({"metadata": {"name": "p"}, "spec": {
        "allowCycles": True, "maxStepRevisits": 5,
        "steps": [
            {"name": "inc", "inputs": ["p.inputs.x", "check.outputs.again"],
             "tensorMap": {"check.outputs.again": "x"}, "inputsJoinType": "any"},
            {"name": "check", "inputs": ["inc"]},
            {"name": "fin", "inputs": ["check.outputs.done"]}],
        "output": {"steps": ["fin"]}}})

    def check(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"again": x["v"]} if x["v"][0] < 3 else {"done": x["v"]}

    code = {"inc": lambda x: {"v": x["x"] + 1}, "check": check,
            "fin": lambda x: {"result": x["done"] * 100}}

    async def main() -> None:
        async with Engine(pipes, code) as eng:
            res = await eng.infer("p", {"inputs": [fp("x", [0.0])]}, timeout=5)
        assert res.ok and [(t.name, t.data.tolist()) for t in res.outputs] == [("result", [300.0])]

    run(main())


# -- lineage ------------------------------------------------------------------------------------
def test_every_record_of_a_request_is_listed_across_chained_pipelines() -> None:
    pipes = one_step("first", steps=[{"name": "a"}], output=["a"])
    pipes += load_pipelines({"metadata": {"name": "second"}, "spec": {
        "input": {"externalInputs": ["first.outputs"]},
        "steps": [{"name": "b"}], "output": {"steps": ["b"]}}})

    async def main() -> None:
        bus = EmbeddedBus()
        seen: list[Record] = []
        bus.tap(lambda topic, r: seen.append(r))
        async with Engine(pipes, {"a": lambda x: {"y": x["x"]}, "b": lambda x: {"z": x["y"]}},
                          transport=bus) as eng:
            res = await eng.infer("first", {"id": "r-1", "inputs": [fp("x", [1.0])]},
                                  result_of="second")
            other = await eng.infer("first", {"inputs": [fp("x", [2.0])]}, result_of="second")
        assert res.ok and other.ok
        mine = [r for r in seen if r.lineage.request_id == "r-1"]
        origins = [(r.lineage.pipeline, r.lineage.origin) for r in mine]
        assert origins == [("first", "inputs"), ("first", "a.inputs"), ("first", "a.outputs"),
                           ("first", "outputs"), ("second", "inputs"), ("second", "b.inputs"),
                           ("second", "b.outputs"), ("second", "outputs")]
        ids = {r.lineage.record_id for r in mine}
        for r in mine[1:]:
            assert r.lineage.parents and set(r.lineage.parents) <= ids
        assert len({r.lineage.trace_id for r in mine}) == 1

    run(main())


def test_lineage_headers_round_trip() -> None:
    lin = Lineage("rid", "a" * 32, "b" * 16, "p", "s.outputs", 2, ("x/p/inputs/0",), {"s": 2})
    value, headers = Record(lin, (Tensor.from_array("t", np.arange(3.0)),)).encode()
    back = Record.decode(value, headers)
    assert back.lineage.to_dict() == lin.to_dict() and back.lineage.visits == {"s": 2}
    assert back.tensors[0] == Tensor.from_array("t", np.arange(3.0))
    with pytest.raises(ValueError):
        Record.decode(b"{not json", headers)
    with pytest.raises(ValueError):
        Record.decode(value, [h for h in headers if h[0] != "traceparent"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_process_makes_ids_of_its_own() -> None:
    """Workers forked from one parent (a pre-forking server, multiprocessing's fork) must not
    repeat the parent's request, trace and span ids."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running the parent's cleanup
        try:
            os.write(write, json.dumps([new_request_id(), new_trace_id(), new_span_id()]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    parent = [new_request_id(), new_trace_id(), new_span_id()]
    assert all(a != b for a, b in zip(parent, child, strict=True)), (parent, child)


def test_request_traceparent_is_continued() -> None:
    async def main() -> None:
        async with Engine(one_step(), {"s": lambda x: {"y": x["x"]}}) as eng:
            tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            res = await eng.infer("p", {"inputs": [fp("x", [1.0])],
                                        "parameters": {"traceparent": tp}})
            assert res.lineage is not None
            assert res.lineage.trace_id == "0af7651916cd43dd8448eb211c80319c"
            with pytest.raises(RequestError, match="traceparent"):
                await eng.infer("p", {"inputs": [fp("x", [1.0])],
                                      "parameters": {"traceparent": "00-zz"}})
            with pytest.raises(RequestError, match="unknown pipeline"):
                await eng.infer("nope", {"inputs": [fp("x", [1.0])]})

    run(main())


# -- tensors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tensor, message",
    [
        ({"name": "t", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}, "needs 4"),
        ({"name": "t", "datatype": "INT8", "shape": [1], "data": [300]}, "out of range"),
        ({"name": "t", "datatype": "INT32", "shape": [1], "data": [1.5]}, "integers"),
        ({"name": "t", "datatype": "BOOL", "shape": [1], "data": ["yes"]}, "true/false"),
        ({"name": "t", "datatype": "BYTES", "shape": [1], "data": [1]}, "strings"),
        ({"name": "t", "datatype": "FP99", "shape": [1], "data": [1]}, "unknown datatype"),
        ({"name": "t", "datatype": "FP32", "shape": [-1], "data": [1]}, "non-negative"),
        ({"datatype": "FP32", "shape": [1], "data": [1]}, "without a name"),
    ],
)
def test_malformed_tensors_rejected(tensor: dict[str, Any], message: str) -> None:
    with pytest.raises(TensorError, match=message):
        Tensor.from_json(tensor)


NUMERIC = [d for d in DTYPES if d not in ("BYTES", "BOOL", "FP16")]


@settings(max_examples=200, deadline=None)
@given(
    datatype=st.sampled_from(NUMERIC),
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=3),
    data=st.data(),
)
def test_tensor_json_round_trip(datatype: str, shape: list[int], data: st.DataObject) -> None:
    n = int(np.prod(shape)) if shape else 1
    dtype = DTYPES[datatype]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = data.draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=n,
                                    max_size=n))
    else:
        values = data.draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=n, max_size=n))
    obj = {"name": "t", "datatype": datatype, "shape": shape, "data": values}
    tensor = Tensor.from_json(obj)
    assert tensor.shape == tuple(shape)
    again = Tensor.from_json(tensor.to_json())
    assert again == tensor


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_validate_reports_ok_and_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("metadata: {name: p}\nspec:\n  steps:\n    - name: a\n      inputs: [zz]\n")
    assert cli_main(["validate", str(ROOT / "examples/scoring/pipeline.yaml")]) == 0
    assert "OK" in capsys.readouterr().out
    assert cli_main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:5" in out and "'zz'" in out


def test_readme_run_example_works_as_written() -> None:
    """The README's `flowcause run` command, through the installed console script."""
    exe = Path(sys.executable).parent / "flowcause"
    proc = subprocess.run(
        [str(exe), "run", "examples/scoring/pipeline.yaml", "--models",
         "examples/scoring/steps.py", "--input", "examples/scoring/request.json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["id"] == "req-1"
    assert [t["name"] for t in out["outputs"]] == ["decision", "risk"]
    assert out["outputs"][0]["data"] == ["review"]
    assert out["parameters"]["traceparent"].startswith("00-")
