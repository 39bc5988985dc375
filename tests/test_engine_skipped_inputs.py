"""A step that does not run for a request announces its *inputs* absent too, not only its
outputs: a node that reads ``S.inputs`` (whole, ``S.inputs.T``, as an input or a trigger),
an output stage whose ``steps`` name ``S.inputs`` and a pipeline chained on
``P.step.S.inputs`` learn of S's skip at once, as readers of ``S.outputs`` do, on both
transports (docs/engine.md, "Topics" and "Semantics").

Before the fix they were never told: a join with S.inputs waited out its window, a one-input
reader and an output stage ``[S.inputs]`` never answered."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
import yaml

from engine.engine import Engine
from engine.record import Record
from engine.tensors import Tensor
from tests.harness import Harness, transports
from tests.loop_example import LOOP_STEPS, LOOP_YAML

# The answers come at once; the join windows are the default 60 s, so a reader left waiting
# for its window (or for ever) shows as a missing answer.
ANSWER_TIMEOUT_S = 15.0


def pipe(name: str, steps: list[dict[str, Any]], output: list[str] | None = None,
         **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"steps": steps, **spec}
    if output is not None:
        body["output"] = {"steps": output}
    return {"metadata": {"name": name}, "spec": body}


ROUTE = {"name": "route"}  # x > 0: outputs a and c; else b and c (so s, on a, is skipped)
S = {"name": "s", "inputs": ["route.outputs.a"]}
PIPELINES = [
    # a join of s's inputs with a partner that always comes
    pipe("joined", [ROUTE, S, {"name": "join", "inputs": ["s.inputs", "route.outputs.c"]}],
         ["join"]),
    # a one-input reader of one tensor of s's inputs
    pipe("tensor", [ROUTE, S, {"name": "one", "inputs": ["s.inputs.a"]}], ["one"]),
    # s's inputs as a trigger
    pipe("gated", [ROUTE, S, {"name": "gate", "inputs": ["route.outputs.c"],
                              "triggers": ["s.inputs.a"]}], ["gate"]),
    # the output stage names s's inputs
    pipe("direct", [ROUTE, S], ["s.inputs"]),
    # a pipeline chained on a step's inputs of another
    {"metadata": {"name": "chained"},
     "spec": {"input": {"externalInputs": ["direct.step.s.inputs"]},
              "steps": [{"name": "after", "inputs": ["chained.inputs.a"]}],
              "output": {"steps": ["after"]}}},
    # a step that receives its inputs and then fails: its inputs were made
    pipe("failing", [ROUTE, {"name": "bad", "inputs": ["route.outputs.a"]},
                     {"name": "join2", "inputs": ["bad.inputs", "route.outputs.c"]}],
         ["join2"]),
]


def route(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    x = inputs["x"]
    return {"a": x, "c": x + 10} if x[0] > 0 else {"b": x, "c": x + 10}


def bad(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    raise ValueError("bad always fails")


STEPS = {
    "route": route,
    "s": lambda i: {"y": i["a"] * 2},
    "join": lambda i: {"w": i["a"] + i["c"]},
    "join2": lambda i: {"w": i["a"] - i["c"]},
    "one": lambda i: {"z": i["a"] * 3},
    "gate": lambda i: {"g": i["c"] * 5},
    "after": lambda i: {"u": i["a"] + 0.5},
    "bad": bad,
}

NOT_RUN = ("pipeline {!r} produced no output: its output steps did not run as its stepsJoin "
           "requires ({})")
# x > 0 (s runs) -> the answer's tensors; x <= 0 (s skipped) -> the answer's error
EXPECTED: dict[tuple[str, str | None], tuple[list[tuple[str, float]], str]] = {
    ("joined", None): ([("w", 2 * 1.0 + 10)], NOT_RUN.format("joined", "branch not taken")),
    ("tensor", None): ([("z", 3.0)], NOT_RUN.format("tensor", "branch not taken")),
    ("gated", None): ([("g", 55.0)], NOT_RUN.format("gated", "branch not taken")),
    ("direct", None): ([("a", 1.0)], NOT_RUN.format("direct", "branch not taken")),
    ("direct", "chained"): ([("u", 1.5)], NOT_RUN.format("chained", "branch not taken")),
    ("failing", None): ([("w", -10.0)], NOT_RUN.format("failing", "branch not taken")),
}


@pytest.fixture(params=transports())
def transport_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def ask(eng: Engine, pipeline: str, result_of: str | None, x: float) -> Any:
    try:
        return await eng.infer(pipeline, [Tensor("x", "FP64", np.array([x]))],
                               result_of=result_of, timeout=ANSWER_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {ANSWER_TIMEOUT_S} s"


def summary(res: Any) -> Any:
    if isinstance(res, str):
        return res
    if not res.ok:
        return res.error
    return [(t.name, t.data.tolist()[0]) for t in res.outputs]


@pytest.mark.parametrize("observe", [True, False], ids=["observed", "default"])
@pytest.mark.parametrize("pipeline, result_of", list(EXPECTED), ids=[
    f"{p}-{r}" if r else p for p, r in EXPECTED])
def test_readers_of_a_skipped_steps_inputs_are_told_at_once(
        transport_kind: str, pipeline: str, result_of: str | None, observe: bool,
        request: pytest.FixtureRequest) -> None:
    h = Harness(transport_kind, request, observe=observe)
    ran, skipped = EXPECTED[(pipeline, result_of)]

    async def go() -> tuple[list[Any], float]:
        async with h.engine({"pipelines": PIPELINES}, STEPS) as eng:
            started = time.monotonic()
            # one at a time, then all at once: taken and untaken branches interleaved
            answers = [summary(await ask(eng, pipeline, result_of, x)) for x in (1.0, -1.0)]
            answers += [summary(r) for r in await asyncio.gather(
                *(ask(eng, pipeline, result_of, x) for x in (1.0, -1.0) * 4))]
            return answers, time.monotonic() - started

    answers, took = asyncio.run(go())
    assert answers == [ran, skipped] * 5
    assert took < ANSWER_TIMEOUT_S  # nobody waited for a join window


def test_a_step_that_fails_after_receiving_its_inputs_still_made_them(
        transport_kind: str, request: pytest.FixtureRequest) -> None:
    """Decision: S's inputs record is made before S's code runs, so when S then fails a reader
    of S.inputs gets the inputs (data), not an absence notice; the failure is on the errors
    topic as ever."""
    h = Harness(transport_kind, request)

    async def go() -> None:
        async with h.engine({"pipelines": PIPELINES}, STEPS) as eng:
            res = await ask(eng, "failing", None, 2.0)
            assert summary(res) == [("w", -10.0)]
            await h.settle()
            errors = h.records(eng.topics.errors, res.request_id)
            assert [e.lineage.step for e in errors] == ["bad"]
            ins = h.records(eng.topics.model("bad", "inputs"), res.request_id)
            assert [(r.kind, [t.name for t in r.tensors]) for r in ins] == [("data", ["a"])]
            notices = h.records(eng.topics.control("failing"), res.request_id)
            assert [(n.lineage.origin, n.kind) for n in notices] == [("bad.outputs", "absent")]

    asyncio.run(go())


async def slow(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    await asyncio.sleep(1.0)
    return {"v": inputs["x"]}


def test_a_step_whose_join_times_out_announces_its_inputs_failed(
        request: pytest.FixtureRequest) -> None:
    """S never received its inputs (its join window closed): a reader of S.inputs is told of
    S's failure at once and the answer is S's error, not the reader's own window closing.
    Embedded only: on Kafka a poll's records are produced when the poll ends, the slow
    step's included, so the window does not close (docs/kafka-transport.md)."""
    pipeline = pipe("late", [
        ROUTE, {"name": "slow"},
        {"name": "s3", "inputs": ["route.outputs.a", "slow.outputs"], "joinWindowMs": 200},
        {"name": "join3", "inputs": ["s3.inputs", "route.outputs.c"]}], ["join3"])
    steps = {"route": route, "slow": slow, "s3": lambda i: i,
             "join3": lambda i: {"w": i["a"] + i["c"]}}
    h = Harness("embedded", request)

    async def go() -> list[Any]:
        async with h.engine({"pipelines": [pipeline]}, steps) as eng:
            res = await ask(eng, "late", None, 1.0)
            notices = h.records(eng.topics.control("late"), res.request_id)
            await asyncio.sleep(1.2)  # the slow step's late outputs are dropped
            return [summary(res), [(n.lineage.origin, (n.error or "").split(":")[0])
                                   for n in notices if n.lineage.origin.startswith("s3.")]]

    timed_out = "step 's3' of pipeline 'late': join window closed waiting for slow.outputs"
    assert asyncio.run(go()) == [timed_out, [("s3.inputs", "error"), ("s3.outputs", "error")]]


def test_inputs_notices_in_a_loop(transport_kind: str, request: pytest.FixtureRequest) -> None:
    """In a cycle a step after the loop (fin) is skipped on the turns that go round again:
    its inputs are announced absent for those turns, as its outputs are, and the turn that
    reaches it still answers (a skipped output stage is not final in a loop)."""
    loop_pipelines = list(yaml.safe_load_all("---\n".join([
        LOOP_YAML.replace("steps: [fin]", "steps: [fin.inputs]"),
        LOOP_YAML.replace("name: loop", "name: tailed").replace("loop.inputs", "tailed.inputs")
        .replace("  output:", "    - name: tail\n      inputs: [fin.inputs.done]\n  output:")
        .replace("steps: [fin]", "steps: [tail]"),
    ])))
    steps = {**LOOP_STEPS, "tail": lambda i: {"t": i["done"] + 0.5}}
    h = Harness(transport_kind, request)

    async def go() -> tuple[list[Any], list[Record]]:
        async with h.engine({"pipelines": loop_pipelines}, steps) as eng:
            results = [await ask(eng, p, None, 0.0) for p in ("loop", "tailed")]
            await h.settle()
            notices = [n for r in results if not isinstance(r, str)
                       for n in h.records(eng.topics.control(r.pipeline), r.request_id)]
            return [summary(r) for r in results], notices

    answers, notices = asyncio.run(go())
    assert answers == [[("done", 3.0)], [("t", 3.5)]]
    # fin is skipped on two turns (check said "again"); each time its inputs notice carries
    # the visits its inputs record would have carried (fin's own run not among them)
    for pipeline in ("loop", "tailed"):
        fin = [(n.lineage.origin, n.lineage.generation, n.lineage.visits) for n in notices
               if n.lineage.pipeline == pipeline and n.lineage.origin.startswith("fin.")]
        assert fin[:4] == [("fin.inputs", 0, {"inc": 1, "check": 1}),
                           ("fin.outputs", 0, {"inc": 1, "check": 1, "fin": 1}),
                           ("fin.inputs", 0, {"inc": 2, "check": 2}),
                           ("fin.outputs", 0, {"inc": 2, "check": 2, "fin": 1})], fin
        # (after the answer, the loop's notices run on to maxStepRevisits: fin's come in
        # pairs all the same)
        for (i_origin, i_gen, i_visits), (o_origin, o_gen, o_visits) in zip(
                fin[::2], fin[1::2], strict=False):
            assert (i_origin, o_origin, i_gen, o_gen) == ("fin.inputs", "fin.outputs", 0, 0)
            assert i_visits == {k: n for k, n in o_visits.items() if k != "fin"}, fin


def test_a_step_beyond_max_step_revisits_announces_its_inputs_failed(
        request: pytest.FixtureRequest) -> None:
    """A step that would run beyond maxStepRevisits fails before making its inputs record:
    both its inputs and its outputs are announced absent, as errors."""
    loop = yaml.safe_load(LOOP_YAML.replace("maxStepRevisits: 5", "maxStepRevisits: 1"))
    h = Harness("embedded", request)

    async def go() -> tuple[Any, list[Record]]:
        async with h.engine({"pipelines": [loop]}, LOOP_STEPS) as eng:
            res = await ask(eng, "loop", None, 0.0)
            return res, h.records(eng.topics.control("loop"), res.request_id)

    res, notices = asyncio.run(go())
    assert "exceeded maxStepRevisits=1 (revisit 2)" in summary(res)
    inc = [(n.lineage.origin, (n.error or "").split(":")[0], n.lineage.visits)
           for n in notices if n.lineage.origin.startswith("inc.")]
    assert inc == [("inc.inputs", "error", {"inc": 2, "check": 2}),
                   ("inc.outputs", "error", {"inc": 2, "check": 2})]
