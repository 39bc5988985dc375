"""What the engine tells observers (the tracing recorder, metrics): one event per node
decision, and every record on a pipeline's input and output topics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.lineage import Lineage
from engine.record import Record
from engine.tensors import Tensor


@dataclass(slots=True)
class StepEvent:
    """A step ran (``ok``/``error``), did not run (``skipped``) or timed out (``timeout``).

    Times are ``time.time_ns()`` wall-clock nanoseconds; ``received_ns`` is when the first
    input for this request arrived at the step. ``lineage`` is the step's output lineage (for
    skipped/failed steps: the lineage the output would have had). ``parent_span_ids`` are the
    spans of the records the step consumed, so spans can be linked across joins.
    """

    pipeline: str
    step: str
    status: str
    lineage: Lineage
    parent_span_ids: tuple[str, ...]
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()
    received_ns: int = 0
    started_ns: int = 0
    finished_ns: int = 0
    batch_size: int = 1
    error: str | None = None


class Observer(Protocol):
    def on_step(self, event: StepEvent) -> None: ...

    def on_pipeline_record(self, pipeline: str, port: str, record: Record) -> None: ...
