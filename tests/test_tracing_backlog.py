"""A store recorder whose flusher falls behind commits the rows itself once too many are
waiting: what a crash can lose, and the memory held, stay bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from engine.engine import Engine
from engine.spec import load_pipelines
from engine.tensors import Tensor
from tracing.collector import Collector
from tracing.files import committed
from tracing.recorder import StoreRecorder
from tracing.store import TraceStore

PIPELINE = {"metadata": {"name": "p"},
            "spec": {"steps": [{"name": "a"}, {"name": "b", "inputs": ["a"]}],
                     "output": {"steps": ["b"]}}}


def step(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": inputs["x"] + 1}


def test_rows_beyond_the_bound_are_committed_without_a_flush(tmp_path: Path) -> None:
    recorder = StoreRecorder(tmp_path / "store", max_pending_rows=100)
    # no flusher thread and no flush: only the bound can commit anything
    collector = Collector([recorder], flush_seconds=None, batch_events=16)

    async def go() -> None:
        async with Engine(load_pipelines(PIPELINE), {"a": step, "b": step},
                          observers=[collector]) as engine:
            for i in range(100):  # 4 events a request: 400 rows
                assert (await engine.infer("p", [Tensor("x", "FP64", np.array([float(i)]))])).ok

    asyncio.run(go())
    batches = committed(tmp_path / "store")
    assert len(batches) >= 3  # 400 rows in commits of about 100
    held = len(TraceStore(tmp_path / "store").frame("p"))
    assert 75 <= held < 100  # the rows still pending (fewer than 100) are not committed yet
    collector.close()
    assert len(TraceStore(tmp_path / "store").frame("p")) == 100
