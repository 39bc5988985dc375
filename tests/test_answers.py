"""Which answer a request gets when a step fails: the awaited pipeline's output stage decides,
the same on both transports (on Kafka the errors, control and outputs topics are read in no
fixed order, so "the first record to arrive" would differ from run to run)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from engine.engine import Engine
from engine.kafka import KafkaTransport
from engine.spec import load_pipelines
from engine.tensors import Tensor
from engine.topics import Topics
from tests.harness import Harness, transports
from tests.loop_example import LOOP, LOOP_STEPS

PIPELINES = [
    {"metadata": {"name": "side"},  # the failing step is off the output path
     "spec": {"steps": [{"name": "good"}, {"name": "bad", "inputs": ["good.outputs.y"]}],
              "output": {"steps": ["good"]}}},
    {"metadata": {"name": "onpath"},  # the failing step is the output step
     "spec": {"steps": [{"name": "good"}, {"name": "bad", "inputs": ["good.outputs.y"]}],
              "output": {"steps": ["bad"]}}},
    {"metadata": {"name": "chained"},  # fed by onpath's outputs, which are never made
     "spec": {"input": {"externalInputs": ["onpath.outputs"]},
              "steps": [{"name": "after", "inputs": ["chained.inputs.y"]}],
              "output": {"steps": ["after"]}}},
]
BAD = "ValueError: bad always fails"
REQUESTS = 12


def good(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": inputs["x"] + 1}


def after(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"z": inputs["y"] * 2}


def bad(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    raise ValueError("bad always fails")


STEPS = {"good": good, "bad": bad, "after": after}


@pytest.fixture(params=transports())
def transport_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def answers(h: Harness, pipeline: str, result_of: str | None = None) -> list[Any]:
    """Each request's answer, sent one at a time and then all at once."""
    async with h.engine({"pipelines": PIPELINES}, STEPS) as eng:
        def send(i: int) -> Any:
            return eng.infer(pipeline, [Tensor("x", "FP64", np.array([float(i)]))],
                             result_of=result_of, timeout=30)
        one_by_one = [await send(i) for i in range(REQUESTS)]
        together = await asyncio.gather(*(send(i) for i in range(REQUESTS)))
        await h.settle()
        for res in (*one_by_one, *together):  # the failure is recorded all the same
            errors = h.records(eng.topics.errors, res.request_id)
            assert [e.lineage.step for e in errors] == ["bad"], errors
        return [*one_by_one, *together]


def test_a_failure_off_the_output_path_leaves_the_answer_a_success(
        transport_kind: str, request: pytest.FixtureRequest) -> None:
    results = asyncio.run(answers(Harness(transport_kind, request), "side"))
    assert [r.error for r in results] == [None] * len(results)
    for i, res in enumerate(results):
        assert [t.name for t in res.outputs] == ["y"]
        assert res.outputs[0].data.tolist() == [float(i % REQUESTS) + 1]


@pytest.mark.parametrize("result_of", [None, "chained"])
def test_a_failure_that_keeps_the_output_from_being_made_is_the_answer(
        transport_kind: str, result_of: str | None, request: pytest.FixtureRequest) -> None:
    results = asyncio.run(answers(Harness(transport_kind, request), "onpath", result_of))
    # the step's own error, never "produced no output", whichever record arrives first
    assert {r.error for r in results} == {f"step 'bad' of pipeline 'onpath': {BAD}"}
    assert {r.pipeline for r in results} == {result_of or "onpath"}


async def slow(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    await asyncio.sleep(1.5)
    return {"z": inputs["x"] * 3}


def test_an_output_stage_whose_join_window_closes_answers_with_its_own_error(
        request: pytest.FixtureRequest) -> None:
    """The output stage's own failure (no step failed) ends the wait at once, not at the
    client's timeout. Embedded only: on Kafka a poll's records are produced when the poll
    ends, the slow step's included, so the window does not close."""
    pipeline = {"metadata": {"name": "late"},
                "spec": {"steps": [{"name": "good"}, {"name": "slow"}],
                         "output": {"steps": ["good", "slow"], "joinWindowMs": 300}}}

    async def go() -> Any:
        h = Harness("embedded", request)
        async with h.engine({"pipelines": [pipeline]}, {"good": good, "slow": slow}) as eng:
            return await eng.infer("late", [Tensor("x", "FP64", np.array([1.0]))], timeout=20)

    res = asyncio.run(go())
    assert res.error == "outputs of pipeline 'late': join window closed waiting for slow.outputs"


def big(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"b": np.zeros(50_000)}  # 400 kB: over the transport's limit in the test below


@pytest.mark.parametrize("output, answer", [
    ("good", None),  # off the output path: the answer is the output
    ("big", "over the 100000-byte limit; dropped"),  # on it: the node's failure, at once
])
def test_an_output_too_large_for_kafka_is_its_steps_failure(
        kafka_bootstrap: str, output: str, answer: str | None) -> None:
    pipeline = {"metadata": {"name": "huge"},
                "spec": {"steps": [{"name": "good"}, {"name": "big", "inputs": ["good.outputs.y"]}],
                         "output": {"steps": [output]}}}

    async def go() -> list[Any]:
        topics = Topics(prefix=f"big{output}{np.random.default_rng().integers(1 << 30)}")
        transport = KafkaTransport(kafka_bootstrap, group_id=topics.prefix, partitions=1,
                                   max_record_bytes=100_000)
        async with Engine(load_pipelines(pipeline), {"good": good, "big": big},
                          transport=transport, topics=topics) as eng:
            return [await eng.infer("huge", [Tensor("x", "FP64", np.array([float(i)]))],
                                    timeout=20) for i in range(5)]

    results = asyncio.run(go())
    if answer is None:
        assert [r.error for r in results] == [None] * 5
    else:
        assert all(r.error is not None and r.error.endswith(answer) for r in results), results


def test_a_step_after_a_loop_answers_on_the_turn_that_reaches_it(
        transport_kind: str, request: pytest.FixtureRequest) -> None:
    """fin is fed every turn (generation 0 each time) and skips until the turn that says
    done. On Kafka the first turn's skip was remembered as fin's decision, and the turn that
    brought data dropped as its redelivery: the request was never answered."""
    async def go() -> list[Any]:
        async with Harness(transport_kind, request, observe=False).engine(
                {"pipelines": [LOOP]}, LOOP_STEPS) as eng:
            return [await eng.infer("loop", [Tensor("x", "FP64", np.array([start]))], timeout=20)
                    for start in (0.0, 2.0, 5.0)]

    assert [(r.error, r.outputs[0].data.tolist()) for r in asyncio.run(go())] == [
        (None, [300.0]), (None, [300.0]), (None, [600.0])]
