"""OpenTelemetry spans for what the engine did, built off the hot path from its events.

One span per step execution (status ok, error or timeout; a skipped step did not execute
and gets none) of a sampled request (the W3C sampled flag its lineage carries, decided once
per request: :mod:`tracing.sampling`). Its trace id and span id are exactly the ones the
engine put into the step's output ``traceparent``, its parent is the span of the first
record the step consumed, and further consumed records (joins) become links. A record the
engine made at a pipeline's input stage (chained pipelines) or output stage gets a
zero-length span of its own, parented on the span of the record it was made from, so a
chained request stays one connected trace. A request's own record carries the client's
``traceparent``: the client owns that span (when the request had none, the engine made up a
parent id that no span has, and the step spans hang off that id as a trace root).

Spans are created after the fact, a batch of event columns (:mod:`tracing.events`) at a
time, as SDK ``ReadableSpan`` objects with explicit ids, times and parent: going through
``Tracer.start_span`` would cost about ten times as much per span, since the tracer API is
built for live spans (context, sampler, id generator, locking). They are built where the
collector hands the batch over (the event loop, or a tracing process:
:mod:`tracing.offload`): measured with ``make bench-tracing``, building them on a thread of
their own cost about a third more CPU per request, the two threads contending for the GIL.
Each batch's spans go to the exporter as one export call, on an export thread of the sink's
own (exporters wait on I/O, which releases the GIL), so a slow or absent collector never
holds up recording; when ``max_batches`` batches wait for it, new ones are dropped (counted
in :attr:`SpanSink.dropped`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import AttributeValue

from engine.tensors import Tensor
from tracing.events import EventBatch

log = logging.getLogger(__name__)
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
UNSET = Status(StatusCode.UNSET)
SCOPE = InstrumentationScope("flowcause.tracing")
REMEMBERED_RECORDS = 200_000  # record id -> span id, to parent pipeline-stage spans
REMEMBERED_STATES = 1024  # distinct tracestate values parsed and kept
# the event columns a span is made of, in the order of _step_span's / _port_span's arguments
STEP_SPAN = ("pipeline", "step", "status", "request_id", "trace_id", "span_id", "record_id",
             "generation", "tracestate", "parent_span_ids", "inputs", "outputs", "received_ns",
             "started_ns", "finished_ns", "batch_size", "error")
PORT_SPAN = ("pipeline", "port", "time_ns", "request_id", "trace_id", "span_id", "record_id",
             "generation", "tracestate", "parents", "tensors")


def default_resource() -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME``, service name ``flowcause``
    unless they name one."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "flowcause"}))
    return resource


def _names(tensors: tuple[Tensor, ...]) -> tuple[str, ...]:
    return tuple([t.name for t in tensors])


_SHAPE_TEXT: dict[tuple[int, ...], str] = {}


def _shapes(tensors: tuple[Tensor, ...]) -> tuple[str, ...]:
    out = []
    for t in tensors:
        shape = t.data.shape
        text = _SHAPE_TEXT.get(shape)
        if text is None:
            text = _SHAPE_TEXT[shape] = str(list(shape))
        out.append(text)
    return tuple(out)


class SpanSink:
    """Collector sink that turns engine events into spans and exports them.

    :meth:`consume` builds the SDK span objects of a batch of events; the export thread
    exports them, one call per batch.
    """

    def __init__(self, exporter: SpanExporter, resource: Resource | None = None,
                 max_batches: int = 1024) -> None:
        self.exporter = exporter
        self.resource = resource or default_resource()
        self.max_batches = max_batches
        self.dropped = 0
        self._span_of_record: OrderedDict[str, int] = OrderedDict()
        self._trace_states: dict[str, TraceState] = {}
        self._batches: deque[list[ReadableSpan]] = deque()
        self._ready = threading.Condition()
        self._exporting = False
        self._closed = False
        self._thread = threading.Thread(target=self._export, name="flowcause-span-export",
                                        daemon=True)
        self._thread.start()

    def consume(self, batch: EventBatch) -> None:
        steps, ports = batch.steps, batch.ports
        # a step that did not execute has no span, nor has a request that is not sampled
        spans = [self._step_span(*row) for row, sampled
                 in zip(zip(*(steps[c] for c in STEP_SPAN), strict=True), steps["sampled"],
                        strict=True)
                 if sampled and row[2] != "skipped"]
        for row, sampled in zip(zip(*(ports[c] for c in PORT_SPAN), strict=True),
                                ports["sampled"], strict=True):
            span = self._port_span(*row) if sampled else None
            if span is not None:
                spans.append(span)
        while len(self._span_of_record) > REMEMBERED_RECORDS:
            self._span_of_record.popitem(last=False)
        with self._ready:
            if len(self._batches) >= self.max_batches:
                self.dropped += len(spans)
                return
            self._batches.append(spans)
            self._ready.notify_all()

    def _export(self) -> None:
        while True:
            with self._ready:
                while not self._batches and not self._closed:
                    self._ready.wait()
                if not self._batches:
                    return
                spans = self._batches.popleft()
                self._exporting = True
            try:
                self.exporter.export(spans)
            except Exception:  # noqa: BLE001 - an exporter failure must not stop tracing
                log.exception("span export failed; %d spans lost", len(spans))
            with self._ready:
                self._exporting = False
                self._ready.notify_all()

    def wait_exported(self) -> None:
        """Block until every batch consumed so far has been exported (or failed)."""
        with self._ready:
            while self._batches or self._exporting:
                self._ready.wait()

    def _step_span(self, pipeline: str, step: str, status: str, request_id: str,
                   trace_hex: str, span_hex: str, record_id: str, generation: int,
                   tracestate: str | None, parent_span_ids: tuple[str, ...],
                   inputs: tuple[Tensor, ...],
                   outputs: tuple[Tensor, ...], received_ns: int, started_ns: int,
                   finished_ns: int, batch_size: int, error: str | None) -> ReadableSpan:
        trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
        self._span_of_record[record_id] = span_id
        state = self._trace_state(tracestate)
        parents = [SpanContext(trace_id, int(p, 16), True, SAMPLED, state)
                   for p in parent_span_ids]
        attributes: dict[str, AttributeValue] = {
            "flowcause.pipeline": pipeline,
            "flowcause.step": step,
            "flowcause.request_id": request_id,
            "flowcause.generation": generation,
            "flowcause.status": status,
            "flowcause.batch_size": batch_size,
            "flowcause.inputs": _names(inputs),
            "flowcause.input_shapes": _shapes(inputs),
            "flowcause.outputs": _names(outputs),
            "flowcause.output_shapes": _shapes(outputs),
        }
        span_status = UNSET
        if error is not None:
            attributes["flowcause.error"] = error
            span_status = Status(StatusCode.ERROR, error)
        if received_ns and started_ns:
            attributes["flowcause.join_wait_ms"] = (started_ns - received_ns) / 1e6
        return ReadableSpan(
            name=step,
            context=SpanContext(trace_id, span_id, False, SAMPLED, state),
            parent=parents[0] if parents else None,
            resource=self.resource,
            attributes=attributes,
            links=[Link(p) for p in parents[1:]],
            kind=SpanKind.INTERNAL,
            status=span_status,
            start_time=started_ns or received_ns or finished_ns,
            end_time=finished_ns,
            instrumentation_scope=SCOPE,
        )

    def _port_span(self, pipeline: str, port: str, time_ns: int, request_id: str,
                   trace_hex: str, span_hex: str, record_id: str, generation: int,
                   tracestate: str | None, parents_ids: tuple[str, ...],
                   tensors: tuple[Tensor, ...]) -> ReadableSpan | None:
        trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
        self._span_of_record[record_id] = span_id
        if not parents_ids:
            return None  # the request's own record: its span is the client's
        known = [self._span_of_record.get(p) for p in parents_ids]
        state = self._trace_state(tracestate)
        parents = [SpanContext(trace_id, s, True, SAMPLED, state) for s in known if s is not None]
        return ReadableSpan(
            name=f"{pipeline}.{port}",
            context=SpanContext(trace_id, span_id, False, SAMPLED, state),
            parent=parents[0] if parents else None,
            resource=self.resource,
            attributes={
                "flowcause.pipeline": pipeline,
                "flowcause.port": port,
                "flowcause.request_id": request_id,
                "flowcause.generation": generation,
                "flowcause.tensors": _names(tensors),
                "flowcause.shapes": _shapes(tensors),
            },
            links=[Link(p) for p in parents[1:]],
            kind=SpanKind.INTERNAL,
            start_time=time_ns,
            end_time=time_ns,
            instrumentation_scope=SCOPE,
        )

    def _trace_state(self, header: str | None) -> TraceState | None:
        """The client's ``tracestate`` as the SDK's object (parsed once per distinct value)."""
        if header is None:
            return None
        state = self._trace_states.get(header)
        if state is None:
            if len(self._trace_states) >= REMEMBERED_STATES:
                self._trace_states.clear()
            state = self._trace_states[header] = TraceState.from_header([header])
        return state

    def flush(self) -> None:
        """Nothing to do: batches are exported as they come, and the collector's periodic
        flush must not wait for a slow exporter (:meth:`wait_exported` does)."""

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._thread.join()
        self.exporter.shutdown()
