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
Building them is most of what a tracing process does per request, so the per-span work is
kept small (insurance-claims wire batches, SpanSink.consume: 31 -> 20 us of CPU per request,
234k -> 141k instructions under callgrind): one loop per table, two small helpers per span
(inlining them too saved another 5k, not worth the repeated code); ``ReadableSpan`` called
positionally (matching its 13 keywords cost 16k instructions per request); contexts made as
the very tuples ``SpanContext.__new__`` returns, validity computed here (its Python-level
``__new__`` cost 24k); each span's attributes copied from a template per step or port and
tensors' names and shapes, then the request's own values set (building each dict afresh,
with the names and shape texts, cost 17k); a request's trace id parsed once. Both
constructor shortcuts are checked against the SDK at import, falling back to plain calls if
another SDK version differs.

Each batch's spans go to the exporter as one export call, on an export thread of the sink's
own (exporters wait on I/O, which releases the GIL), so a slow or absent collector never
holds up recording; when ``max_batches`` batches wait for it, new ones are dropped (counted
in :attr:`SpanSink.dropped`). Closing waits up to ``close_timeout_s`` for the batches still
queued; then the rest is dropped (counted) and the exporter shut down, which ends its retries
(an OTLP exporter without a collector retries each batch for ~7 s).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from operator import attrgetter
from typing import Any

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
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import AttributeValue

from tracing.events import Columns, EventBatch

log = logging.getLogger(__name__)
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
UNSET = Status(StatusCode.UNSET)
INTERNAL = SpanKind.INTERNAL
SCOPE = InstrumentationScope("flowcause.tracing")
REMEMBERED_RECORDS = 200_000  # record id -> span id, to parent pipeline-stage spans
REMEMBERED_STATES = 1024  # distinct tracestate values parsed and kept
REMEMBERED_TEMPLATES = 4096  # attributes templates kept, per (step or port, tensor names and shapes)
TRACE_ID_MAX, SPAN_ID_MAX = 2**128 - 1, 2**64 - 1  # a SpanContext is valid with ids in 1..max
# the event columns a span is made of, in the order _step_spans / _port_spans unpack them
STEP_SPAN = ("pipeline", "step", "status", "request_id", "trace_id", "span_id", "record_id",
             "generation", "tracestate", "parent_span_ids", "inputs", "outputs", "received_ns",
             "started_ns", "finished_ns", "batch_size", "error", "sampled")
PORT_SPAN = ("pipeline", "port", "time_ns", "request_id", "trace_id", "span_id", "record_id",
             "generation", "tracestate", "parents", "tensors", "sampled")
# ReadableSpan's parameters, in the order spans are made with (positionally: see the docstring)
SPAN_FIELDS = ("name", "context", "parent", "resource", "attributes", "events", "links", "kind",
               "instrumentation_info", "status", "start_time", "end_time", "instrumentation_scope")
_TENSOR_KEY = attrgetter("name", "data.shape")
TensorKey = tuple[tuple[str, tuple[int, ...]], ...]  # (name, shape) of each of some tensors
# what a span's attributes depend on, but for the request's own values (see _step_template)
StepKey = tuple[TensorKey, int, str, str, str, bool, bool]
PortKey = tuple[TensorKey, str, str]


def _context_maker() -> Callable[[type[SpanContext], tuple[Any, ...]], SpanContext]:
    """What spans' contexts are made with, as ``make(SpanContext, (trace_id, span_id,
    is_remote, trace_flags, trace_state, is_valid))``: ``tuple.__new__`` if that makes what
    ``SpanContext(...)`` does (the tuple of these six, trace state never None), else (some
    other SDK version) ``SpanContext(...)`` itself with the first five."""
    fields = (1, 2, True, SAMPLED, DEFAULT_TRACE_STATE)
    made = SpanContext(*fields)
    fast: Any = tuple.__new__
    with contextlib.suppress(TypeError):  # TypeError: SpanContext is no tuple any more
        if type(made) is SpanContext and made == fast(SpanContext, (*fields, True)):
            return fast  # type: ignore[no-any-return]
    return lambda _cls, six: SpanContext(*six[:5])


def _span_maker() -> Callable[..., ReadableSpan]:
    """What spans are made with, positionally in the order of ``SPAN_FIELDS``: ``ReadableSpan``
    if that is the order of its parameters, else a call of it by keyword."""
    if tuple(inspect.signature(ReadableSpan).parameters) == SPAN_FIELDS:
        return ReadableSpan
    return lambda *args: ReadableSpan(**dict(zip(SPAN_FIELDS, args, strict=True)))


_context = _context_maker()
_span = _span_maker()


def _attributes(templates: dict[Any, dict[str, AttributeValue]], key: tuple[Any, ...],
                make: Callable[..., dict[str, AttributeValue]], request_id: str,
                generation: int) -> dict[str, AttributeValue]:
    """A copy of the attributes template for ``key`` (``make(*key)`` the first time), with
    the request's id and generation set."""
    template = templates.get(key)
    if template is None:
        if len(templates) >= REMEMBERED_TEMPLATES:
            templates.clear()
        template = templates[key] = make(*key)
    attributes = template.copy()
    attributes["flowcause.request_id"] = request_id
    attributes["flowcause.generation"] = generation
    return attributes


def _readable_span(name: str, trace_id: int, span_id: int, trace_valid: bool,
                   state: TraceState, parents: list[SpanContext], resource: Resource,
                   attributes: dict[str, AttributeValue], status: Status, start_ns: int,
                   end_ns: int) -> ReadableSpan:
    """A finished span: the first parent its parent, the others links."""
    return _span(  # the arguments of SPAN_FIELDS
        name,
        _context(SpanContext, (trace_id, span_id, False, SAMPLED, state,
                               trace_valid and 0 < span_id <= SPAN_ID_MAX)),
        parents[0] if parents else None,
        resource,
        attributes,
        (),  # events
        [Link(p) for p in parents[1:]] if len(parents) > 1 else [],
        INTERNAL,
        None,  # instrumentation_info (deprecated: the scope)
        status,
        start_ns,
        end_ns,
        SCOPE,
    )


def default_resource() -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME``, service name ``flowcause``
    unless they name one."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "flowcause"}))
    return resource


def _names_shapes(tensors: TensorKey) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names of some tensors, and their shapes as text (attribute values)."""
    return tuple([name for name, _ in tensors]), tuple([str(list(shape)) for _, shape in tensors])


def _step_template(tensors: TensorKey, inputs: int, pipeline: str, step: str, status: str,
                   ok: bool, join_wait: bool) -> dict[str, AttributeValue]:
    """A step span's attributes, the request's own values left None: its id, generation,
    batch size, the error (unless ``ok``) and the join wait (if ``join_wait``)."""
    input_names, input_shapes = _names_shapes(tensors[:inputs])
    output_names, output_shapes = _names_shapes(tensors[inputs:])
    attributes: dict[str, AttributeValue | None] = {
        "flowcause.pipeline": pipeline,
        "flowcause.step": step,
        "flowcause.request_id": None,
        "flowcause.generation": None,
        "flowcause.status": status,
        "flowcause.batch_size": None,
        "flowcause.inputs": input_names,
        "flowcause.input_shapes": input_shapes,
        "flowcause.outputs": output_names,
        "flowcause.output_shapes": output_shapes,
    }
    if not ok:
        attributes["flowcause.error"] = None
    if join_wait:
        attributes["flowcause.join_wait_ms"] = None
    return attributes  # type: ignore[return-value]


def _port_template(tensors: TensorKey, pipeline: str, port: str) -> dict[str, AttributeValue]:
    """A pipeline-stage span's attributes, the request's id and generation left None."""
    names, shapes = _names_shapes(tensors)
    attributes: dict[str, AttributeValue | None] = {
        "flowcause.pipeline": pipeline,
        "flowcause.port": port,
        "flowcause.request_id": None,
        "flowcause.generation": None,
        "flowcause.tensors": names,
        "flowcause.shapes": shapes,
    }
    return attributes  # type: ignore[return-value]


def _outputs_of_step_inputs(record_id: str) -> str:
    """For a step's joined inputs record (``<request>/<pipeline>/<step>.inputs/<gen>``, which
    feeds a pipeline whose ``externalInputs`` name ``<pipeline>.step.<step>.inputs``), the id
    of that step run's output record: both carry the run's span id, and only the output's id
    is remembered for it. Other ids are returned as they are."""
    parts = record_id.rsplit("/", 2)
    if len(parts) != 3 or not parts[1].endswith(".inputs"):
        return record_id
    return f"{parts[0]}/{parts[1].removesuffix('.inputs')}.outputs/{parts[2]}"


class SpanSink:
    """Collector sink that turns engine events into spans and exports them.

    :meth:`consume` builds the SDK span objects of a batch of events; the export thread
    exports them, one call per batch.
    """

    def __init__(self, exporter: SpanExporter, resource: Resource | None = None,
                 max_batches: int = 1024, close_timeout_s: float = 10.0) -> None:
        self.exporter = exporter
        self.resource = resource or default_resource()
        self.max_batches = max_batches
        self.close_timeout_s = close_timeout_s
        self.dropped = 0
        self._span_of_record: OrderedDict[str, int] = OrderedDict()
        self._trace_states: dict[str, TraceState] = {}
        # attributes of spans but for the request's values, by what they depend on
        self._step_templates: dict[StepKey, dict[str, AttributeValue]] = {}
        self._port_templates: dict[PortKey, dict[str, AttributeValue]] = {}
        self._batches: deque[list[ReadableSpan]] = deque()
        self._ready = threading.Condition()
        self._exporting = False
        self._closed = False
        self._thread = threading.Thread(target=self._export, name="flowcause-span-export",
                                        daemon=True)
        self._thread.start()

    def consume(self, batch: EventBatch) -> None:
        spans: list[ReadableSpan] = []
        self._step_spans(batch.steps, spans)
        self._port_spans(batch.ports, spans)
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

    def _step_spans(self, steps: Columns, spans: list[ReadableSpan]) -> None:
        """The span of each step execution of a sampled request, appended to ``spans``."""
        span_of_record, templates, resource = self._span_of_record, self._step_templates, self.resource
        trace_hex: str | None = None
        trace_id, trace_valid = 0, False
        for (pipeline, step, status, request_id, row_trace_hex, span_hex, record_id, generation,
             tracestate, parent_span_ids, inputs, outputs, received_ns, started_ns, finished_ns,
             batch_size, error, sampled) in zip(*[steps[c] for c in STEP_SPAN], strict=True):
            # a step that did not execute has no span, nor has a request that is not sampled
            if not sampled or status == "skipped":
                continue
            if row_trace_hex != trace_hex:  # a request's steps come in a row: parsed once
                trace_hex, trace_id = row_trace_hex, int(row_trace_hex, 16)
                trace_valid = 0 < trace_id <= TRACE_ID_MAX
            span_id = int(span_hex, 16)
            span_of_record[record_id] = span_id
            state = DEFAULT_TRACE_STATE if tracestate is None else self._trace_state(tracestate)
            parents = []
            for parent_hex in parent_span_ids:
                parent_id = int(parent_hex, 16)
                parents.append(_context(SpanContext, (trace_id, parent_id, True, SAMPLED, state,
                                                      trace_valid and 0 < parent_id <= SPAN_ID_MAX)))
            # what only depends on the step and its tensors' names and shapes: a template to copy
            join_wait = bool(received_ns and started_ns)
            key = (tuple(map(_TENSOR_KEY, inputs + outputs)), len(inputs), pipeline, step, status,
                   error is None, join_wait)
            attributes = _attributes(templates, key, _step_template, request_id, generation)
            attributes["flowcause.batch_size"] = batch_size
            span_status = UNSET
            if error is not None:
                attributes["flowcause.error"] = error
                span_status = Status(StatusCode.ERROR, error)
            if join_wait:
                attributes["flowcause.join_wait_ms"] = (started_ns - received_ns) / 1e6
            spans.append(_readable_span(step, trace_id, span_id, trace_valid, state, parents,
                                        resource, attributes, span_status,
                                        started_ns or received_ns or finished_ns, finished_ns))

    def _port_spans(self, ports: Columns, spans: list[ReadableSpan]) -> None:
        """The span of each record of a sampled request made at a pipeline's input or output
        stage, appended to ``spans``."""
        span_of_record, templates, resource = self._span_of_record, self._port_templates, self.resource
        for (pipeline, port, time_ns, request_id, trace_hex, span_hex, record_id, generation,
             tracestate, parent_records, tensors, sampled) in zip(*[ports[c] for c in PORT_SPAN],
                                                                  strict=True):
            if not sampled:
                continue
            span_id = int(span_hex, 16)
            span_of_record[record_id] = span_id
            if not parent_records:
                continue  # the request's own record: its span is the client's
            trace_id = int(trace_hex, 16)
            trace_valid = 0 < trace_id <= TRACE_ID_MAX
            state = DEFAULT_TRACE_STATE if tracestate is None else self._trace_state(tracestate)
            parents = []
            for parent_record in parent_records:
                parent_id = span_of_record.get(parent_record)
                if parent_id is None:
                    parent_id = span_of_record.get(_outputs_of_step_inputs(parent_record))
                if parent_id is not None:
                    parents.append(_context(SpanContext, (trace_id, parent_id, True, SAMPLED, state,
                                                          trace_valid and 0 < parent_id <= SPAN_ID_MAX)))
            key = (tuple(map(_TENSOR_KEY, tensors)), pipeline, port)
            attributes = _attributes(templates, key, _port_template, request_id, generation)
            spans.append(_readable_span(f"{pipeline}.{port}", trace_id, span_id, trace_valid, state,
                                        parents, resource, attributes, UNSET, time_ns, time_ns))

    def _trace_state(self, header: str) -> TraceState:
        """The client's ``tracestate`` as the SDK's object (parsed once per distinct value)."""
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
        self._thread.join(self.close_timeout_s)
        if self._thread.is_alive():  # the exporter cannot deliver (e.g. no collector listens)
            with self._ready:
                lost = sum(map(len, self._batches))
                self._batches.clear()
                self.dropped += lost
            log.error("tracing: spans not exported within %g s of closing; %d more dropped",
                      self.close_timeout_s, lost)
        self.exporter.shutdown()  # also ends an export still retrying
        self._thread.join(self.close_timeout_s)  # a daemon: it cannot hold the process
