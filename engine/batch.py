"""Batching (``batch.size``): stack requests along dimension 0, run the step once, and give
every request its own slice back, with its own lineage (beyond Seldon, which answers only
the last request of a batch)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import numpy as np

from engine.compile import DEFAULT_BATCH_WINDOW_MS
from engine.steps import InputNameClash, cancelled_by_engine
from engine.tensors import Tensor

if TYPE_CHECKING:
    from engine.processor import Run, StepProcessor


class BatchError(ValueError):
    pass


def stack(runs: list[Run]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate each input tensor along dim 0; returns the arrays and each run's rows."""
    first = {t.name: t for t in runs[0].tensors}
    # same names and datatypes (concatenating FP32 with FP64 would turn both into FP64), and
    # the same shapes beyond dimension 0
    kinds = sorted((n, t.datatype) for n, t in first.items())
    sizes = []
    columns: dict[str, list[np.ndarray]] = {n: [] for n in first}
    for run in runs:
        tensors = {t.name: t for t in run.tensors}
        if len(tensors) != len(run.tensors):
            raise InputNameClash(run.tensors)
        theirs = sorted((n, t.datatype) for n, t in tensors.items())
        if theirs != kinds:
            raise BatchError(f"batched requests carry different tensors: {theirs} vs {kinds}")
        rows = {t.data.shape[0] if t.data.ndim else -1 for t in tensors.values()}
        if len(rows) != 1 or -1 in rows:
            raise BatchError("every batched tensor needs the same dimension 0")
        sizes.append(rows.pop())
        for n, t in tensors.items():
            if t.data.shape[1:] != first[n].data.shape[1:]:
                raise BatchError(f"batched requests' tensor {n!r} differ in shape beyond dimension "
                                 f"0: {list(t.data.shape)} vs {list(first[n].data.shape)} (a batch "
                                 "is stacked along dimension 0)")
            columns[n].append(t.data)
    return {n: np.concatenate(columns[n], axis=0) for n in first}, sizes


def split(outputs: tuple[Tensor, ...], sizes: list[int]) -> list[tuple[Tensor, ...]]:
    total = sum(sizes)
    cuts = np.cumsum(sizes)[:-1]
    per_run: list[list[Tensor]] = [[] for _ in sizes]
    for t in outputs:
        if t.data.ndim == 0 or t.data.shape[0] != total:
            raise BatchError(f"output {t.name!r} has dimension 0 of {t.shape[:1]}, expected "
                             f"{total} (one row per batched input row)")
        for i, part in enumerate(np.split(t.data, cuts, axis=0)):
            per_run[i].append(Tensor(t.name, t.datatype, part, t.parameters))
    return [tuple(ts) for ts in per_run]


class Batcher:
    """Collects runs until ``batch.size`` (or ``batch.windowMs``, default 100 ms) is reached."""

    def __init__(self, processor: StepProcessor) -> None:
        batch = processor.plan.batch
        assert batch is not None and batch.size
        self.processor = processor
        self.size = batch.size
        window_ms = batch.window_ms if batch.window_ms is not None else DEFAULT_BATCH_WINDOW_MS
        self.window_s = window_ms / 1000.0
        self.pending: list[Run] = []
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False  # stopping: no timer flushes a partial batch any more

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def add(self, run: Run) -> None:
        self.pending.append(run)
        if len(self.pending) >= self.size:
            self.flush()
        elif self.timer is None and not self.closed:
            self.timer = asyncio.get_running_loop().call_later(self.window_s, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        runs, self.pending = self.pending, []
        if runs:
            self.processor.track(asyncio.get_running_loop().create_task(self._run(runs)))

    async def _run(self, runs: list[Run]) -> None:
        proc = self.processor
        started = time.time_ns()
        try:
            inputs, sizes = stack(runs)
            outputs = await proc.runnable.run(inputs)
            slices = split(outputs, sizes)
        except Exception as exc:  # noqa: BLE001 - the whole batch fails, each request told
            for run in runs:
                proc.step_failed(run, exc, started, batch_size=len(runs))
            return
        except asyncio.CancelledError as exc:
            if cancelled_by_engine():
                raise
            for run in runs:  # raised inside the step's own code: a step error
                proc.step_failed(run, exc, started, batch_size=len(runs))
            return
        for run, part in zip(runs, slices, strict=True):
            proc.succeed(run, part, started, batch_size=len(runs))
