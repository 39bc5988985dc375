"""Observers see a request arrive on its pipeline's inputs topic before the steps that read
that topic run (the trace store's request time is that arrival)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from engine.engine import Engine
from engine.observe import StepEvent
from engine.record import Record
from engine.spec import load_pipelines
from engine.tensors import Tensor

PIPELINE = {"metadata": {"name": "p"},
            "spec": {"steps": [{"name": "a"}, {"name": "b", "inputs": ["a"]}],
                     "output": {"steps": ["b"]}}}


def slow(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    time.sleep(0.05)
    return {"x": inputs["x"] + 1}


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def on_step(self, event: StepEvent) -> None:
        self.events.append((f"step {event.step} started", event.started_ns))

    def on_pipeline_record(self, pipeline: str, port: str, record: Record) -> None:
        self.events.append((f"{pipeline}.{port}", time.time_ns()))


def test_the_inputs_record_is_observed_before_its_steps_run() -> None:
    seen = Seen()

    async def go() -> None:
        async with Engine(load_pipelines(PIPELINE), {"a": slow, "b": slow}, observers=[seen]) as e:
            res = await e.infer("p", [Tensor("x", "FP64", np.array([1.0]))])
            assert res.ok, res.error

    asyncio.run(go())
    names = [name for name, _ in seen.events]
    assert names == ["p.inputs", "step a started", "step b started", "p.outputs"]
    arrived, a_started = seen.events[0][1], seen.events[1][1]
    assert arrived <= a_started
