"""The engine: compiled pipelines + step code + a transport, and a client API on top."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from engine.compile import CompiledPipelines, NodePlan, compile_pipelines
from engine.embedded import EmbeddedBus
from engine.join import caused_by_failure
from engine.lineage import (
    TRACESTATE_MAX,
    Lineage,
    Sampler,
    new_request_id,
    new_span_id,
    new_trace_id,
    parent_or_sampled,
    parse_traceparent,
)
from engine.observe import Observer
from engine.processor import NodeProcessor, PortProcessor, StepProcessor
from engine.record import FAILED_SUFFIX, Record
from engine.spec import Pipeline
from engine.steps import StepNotFound, StepRegistry
from engine.tensors import Tensor, TensorError, carried, tensors_from_json
from engine.topics import Topics
from engine.transport import Transport


class RequestError(ValueError):
    """A request that cannot be sent (bad JSON tensors, unknown pipeline)."""


class EngineStateError(RuntimeError):
    """The engine cannot be used from here: it was stopped (an engine does not start
    again), or it is used from another event loop or thread than the one it started in."""


STOPPED_ANSWER = "engine stopped before the answer"


@dataclass
class InferenceResult:
    request_id: str
    pipeline: str
    outputs: tuple[Tensor, ...] = ()
    error: str | None = None
    lineage: Lineage | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model_name": self.pipeline, "id": self.request_id}
        if self.error is not None:
            out["error"] = self.error
        else:
            out["outputs"] = [t.to_json() for t in self.outputs]
        if self.lineage is not None:
            out["parameters"] = {"traceparent": self.lineage.traceparent}
            if self.lineage.tracestate:
                out["parameters"]["tracestate"] = self.lineage.tracestate
        return out


class _Route:
    """Who receives records of one topic: producing pipeline -> expected origin -> slots.

    Nested dicts rather than a (pipeline, origin) key: no tuple is built per record."""

    def __init__(self) -> None:
        self.slots: dict[str, dict[str, list[tuple[NodeProcessor, int]]]] = {}

    def add(self, pipeline: str, origin: str, proc: NodeProcessor, slot: int) -> None:
        self.slots.setdefault(pipeline, {}).setdefault(origin, []).append((proc, slot))

    def __call__(self, record: Record) -> None:
        lin = record.lineage
        by_origin = self.slots.get(lin.pipeline)
        if by_origin is not None:
            for proc, slot in by_origin.get(lin.origin, ()):
                proc.on_record(slot, record)


class Engine:
    """Runs pipelines on a transport (the embedded bus unless told otherwise).

    ``steps`` maps step (or model) names to step code; ``models`` maps a step name to the
    model name whose code it runs, when they differ. ``sampler`` gives each request the W3C
    sampled flag its records carry (spans are made for sampled requests only); by default a
    request follows its client's ``traceparent`` and is sampled without one.
    """

    def __init__(
        self,
        pipelines: Iterable[Pipeline] | CompiledPipelines,
        steps: StepRegistry | Mapping[str, Any],
        transport: Transport | None = None,
        topics: Topics | None = None,
        models: Mapping[str, str] | None = None,
        observers: Iterable[Observer] = (),
        results: bool = True,
        sampler: Sampler = parent_or_sampled,
    ) -> None:
        self.compiled = (
            pipelines
            if isinstance(pipelines, CompiledPipelines)
            else compile_pipelines(pipelines, topics)
        )
        self.topics = self.compiled.topics
        self.registry = steps if isinstance(steps, StepRegistry) else StepRegistry(steps)
        self.models = dict(models or {})
        step_names = {n.name for n in self.compiled.nodes if n.kind == "step"}
        unknown = sorted(set(self.models) - step_names)
        if unknown:
            raise StepNotFound(f"models given for {', '.join(map(repr, unknown))}, which "
                               f"{'is no step' if len(unknown) == 1 else 'are no steps'} of the "
                               f"pipelines (steps: {', '.join(sorted(step_names))})")
        self.transport: Transport = transport or EmbeddedBus()
        self.observers = list(observers)
        self.results = results  # False for a worker process that serves no waiting clients
        self.sampler = sampler  # the sampled flag of requests (tracing.sampling)
        self.processors: list[NodeProcessor] = []
        # request id -> (pipeline waited for, trace id of the request or None, future)
        self._waiters: dict[str, list[tuple[str, str | None, asyncio.Future[InferenceResult]]]] = {}
        self._input_topics = {p: self.topics.pipeline(p, "inputs") for p in self.compiled.pipelines}
        # For requests with waiters: the errors of failed nodes, first first, which answer a
        # wait only once its pipeline's output stage is skipped because of a failure; and the
        # pipelines whose output stage was, before any such error had arrived.
        self._failures: dict[str, list[InferenceResult]] = {}
        self._failed_outputs: dict[str, set[str]] = {}
        self._started = False
        self._stopped = False
        self._starting: asyncio.Future[None] | None = None  # set while start() runs
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it started in

    # -- life cycle ----------------------------------------------------------------------
    def _processor(self, plan: NodePlan) -> NodeProcessor:
        control = self.topics.control(plan.pipeline)
        if plan.kind == "step":
            runnable = self.registry.resolve(plan.name, self.models.get(plan.name))
            proc: NodeProcessor = StepProcessor(plan, self.transport.publish, control,
                                                self.topics.errors, self.observers, runnable,
                                                self.transport.wants)
        else:
            proc = PortProcessor(plan, self.transport.publish, control, self.topics.errors,
                                 self.observers)
        if getattr(self.transport, "redelivers", False):
            proc.remember_decisions()
        return proc

    def _check_loop(self) -> None:
        """An engine runs in the event loop it started in (it is not thread-safe): its
        timers, tasks and futures belong to that loop."""
        if self._loop is not None and asyncio._get_running_loop() is not self._loop:
            raise EngineStateError(
                "this Engine runs in the event loop it was started in and is not thread-safe; "
                "it cannot be used from another event loop or thread (e.g. a second "
                "asyncio.run()): make one Engine per event loop")

    async def start(self) -> None:
        """Start the engine (once; concurrent calls wait for the same start). An engine
        that was stopped, or whose start failed, does not start again."""
        if self._stopped:
            raise EngineStateError("this Engine was stopped (or failed to start); an engine "
                                   "does not start again: make a new Engine")
        self._check_loop()
        if self._started:
            return
        if self._starting is not None:
            await asyncio.shield(self._starting)
            if not self._started:
                raise EngineStateError("this Engine failed to start")
            return
        self._loop = asyncio.get_running_loop()
        self._starting = self._loop.create_future()
        try:
            await self._start()
        except BaseException:
            self._stopped = True  # half wired: not started again
            raise
        finally:
            self._starting.set_result(None)
        self._started = True

    async def _start(self) -> None:
        routes: dict[str, _Route] = defaultdict(_Route)
        for plan in self.compiled.nodes:
            proc = self._processor(plan)
            self.processors.append(proc)
            for i, slot in enumerate(plan.slots):
                routes[slot.topic].add(slot.pipeline, slot.origin, proc, i)
                routes[self.topics.control(slot.pipeline)].add(slot.pipeline, slot.origin, proc, i)
        self.transport.prepare(self._all_topics(), self)
        # Observers first: a record goes to a topic's handlers in the order they subscribed,
        # and a step that reads the pipeline's inputs runs inside its handler; the observer
        # must see the request arrive before that step has run, not after.
        if self.observers:
            for name in self.compiled.pipelines:
                for port in ("inputs", "outputs"):
                    self.transport.subscribe(self.topics.pipeline(name, port),
                                             self._observer_tap(name, port))
        for topic, route in routes.items():
            self.transport.subscribe(topic, route)
        for name in self.compiled.pipelines:
            if self.results:
                self.transport.subscribe(self.topics.pipeline(name, "outputs"), self._on_output,
                                         shared=False)
                self.transport.subscribe(self.topics.control(name), self._on_control,
                                         shared=False)
        if self.results:
            self.transport.subscribe(self.topics.errors, self._on_error, shared=False)
        await self.transport.start()

    def _all_topics(self) -> list[str]:
        topics = {self.topics.errors}
        for plan in self.compiled.nodes:
            topics.update(s.topic for s in plan.slots)
            topics.add(plan.out_topic)
            if plan.in_topic:
                topics.add(plan.in_topic)
        for name in self.compiled.pipelines:
            topics.update((self.topics.pipeline(name, "inputs"), self.topics.pipeline(name, "outputs"),
                           self.topics.control(name)))
        return sorted(topics)

    def held_records(self) -> Iterator[Record]:
        for proc in self.processors:
            yield from proc.held_records()

    def forget_requests(self, keep: Callable[[str], bool]) -> None:
        for proc in self.processors:
            proc.forget_requests(keep)

    def running_tasks(self) -> list[asyncio.Task[Any]]:
        return [t for proc in self.processors for t in proc.tasks]

    def _observer_tap(self, pipeline: str, port: str) -> Any:
        def tap(record: Record) -> None:
            if record.lineage.pipeline == pipeline:
                for observer in self.observers:
                    observer.on_pipeline_record(pipeline, port, record)
        return tap

    async def stop(self) -> None:
        """Stop the engine for good (it does not start again). Requests still waiting get
        an error answer (``engine stopped before the answer``); batches still open are
        dropped and join windows no longer close; steps still running are cancelled."""
        if self._starting is not None and not self._starting.done():
            await asyncio.shield(self._starting)
        self._stopped = True
        for proc in self.processors:
            proc.close()
        # The transport stops first: it stops consuming and finishes the poll in hand, steps
        # running as tasks included, and commits only what they answered. Steps still running
        # after that (the transport gave up waiting) are cancelled here; what they consumed
        # was never committed, so the deployment reads those requests again.
        await self.transport.stop()
        pending = [t for proc in self.processors for t in proc.tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for proc in self.processors:
            proc.discard()  # what waited in a batch (the transport no longer needs it held)
        waiters, self._waiters = self._waiters, {}
        self._failures.clear()
        self._failed_outputs.clear()
        for request_id, entries in waiters.items():
            for wanted, _, fut in entries:
                if not fut.done():
                    fut.set_result(InferenceResult(request_id, wanted, error=STOPPED_ANSWER))
        self._started = False

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- results -------------------------------------------------------------------------
    def _resolve(self, request_id: str, pipeline: str | None, result: InferenceResult) -> None:
        waiters = self._waiters.get(request_id)
        if not waiters:
            return
        keep = []
        trace = result.lineage.trace_id if result.lineage is not None else None
        for entry in waiters:
            wanted, wanted_trace, fut = entry
            if fut.done():
                continue
            # a waiter that knows its request's trace takes only records of that trace: an
            # earlier request with the same id (one its client gave up on) is not its answer
            if (pipeline is None or wanted == pipeline) and (
                    wanted_trace is None or trace is None or wanted_trace == trace):
                # each waiter gets its own answer object: one mutated for several would
                # name the last waiter's pipeline in all of them
                fut.set_result(result if result.pipeline == wanted
                               else dataclasses.replace(result, pipeline=wanted))
            else:
                keep.append(entry)
        if keep:
            self._waiters[request_id] = keep
        else:
            self._done_waiting(request_id)

    def _done_waiting(self, request_id: str) -> None:
        self._waiters.pop(request_id, None)
        self._failures.pop(request_id, None)
        self._failed_outputs.pop(request_id, None)

    def _loops(self, pipeline: str) -> bool:
        """Whether ``pipeline`` has cycles (or is not one of ours): there an output stage
        that skips is not final, so errors answer at once."""
        compiled = self.compiled.pipelines.get(pipeline)
        return compiled is None or compiled.spec.allow_cycles

    def _on_output(self, record: Record) -> None:
        lin = record.lineage
        self._resolve(lin.request_id, lin.pipeline,
                      InferenceResult(lin.request_id, lin.pipeline, record.tensors, lineage=lin))

    def _on_error(self, record: Record) -> None:
        """The awaited pipeline's output stage decides the answer, on both transports alike
        (there the error and output topics are read in no fixed order): a node's failure
        answers only the waits whose output stage it keeps from being made, so a step off
        the output path that fails leaves the answer a success. Errors of pipelines with
        cycles and refused records (nothing follows them) answer every wait at once."""
        lin = record.lineage
        waiters = self._waiters.get(lin.request_id)
        if not waiters:
            return
        result = InferenceResult(lin.request_id, lin.pipeline, error=record.error, lineage=lin)
        if not lin.origin.endswith(FAILED_SUFFIX) or self._loops(lin.pipeline):
            self._resolve(lin.request_id, None, result)
            return
        self._failures.setdefault(lin.request_id, []).append(result)
        failed = self._failed_outputs.get(lin.request_id, set())
        for wanted in {w[0] for w in waiters if w[0] in failed or self._loops(w[0])}:
            self._resolve(lin.request_id, wanted, result)

    def _on_control(self, record: Record) -> None:
        """A pipeline's output stage that failed, or skipped (its ``stepsJoin`` cannot be met:
        an output step did not run), ends the wait with an error: the error of the failure
        (waiting for its record if it has not arrived yet), else one saying that the output
        steps did not run; but not in a pipeline with cycles, where a later turn of
        the loop may still reach it. Seldon has no absence notices: there the output never
        comes and the caller times out."""
        lin = record.lineage
        if (lin.origin != "outputs" or not record.error or self._loops(lin.pipeline)
                or lin.request_id not in self._waiters):
            return
        if caused_by_failure(record.error):  # the output stage's own failure (its join
            # window closed) or a skip that a failure upstream caused
            failure = next((f for f in self._failures.get(lin.request_id, ())
                            if f.lineage is not None and f.lineage.trace_id == lin.trace_id), None)
            if failure is None:
                self._failed_outputs.setdefault(lin.request_id, set()).add(lin.pipeline)
            else:
                self._resolve(lin.request_id, lin.pipeline, failure)
            return
        if not record.error.startswith("skipped"):
            return
        reason = record.error.removeprefix("skipped").lstrip(": ")
        self._resolve(lin.request_id, lin.pipeline, InferenceResult(
            lin.request_id, lin.pipeline, lineage=lin,
            error=f"pipeline {lin.pipeline!r} produced no output: its output steps did not "
                  f"run as its stepsJoin requires ({reason})"))

    # -- client API ----------------------------------------------------------------------
    def make_request(
        self,
        pipeline: str,
        request: Mapping[str, Any] | Iterable[Tensor],
        request_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> Record:
        """Turn OIP JSON (``{"id"?, "inputs": [...], "parameters"?}``) or tensors into the
        record that enters ``pipeline``. W3C trace context comes as arguments or as the
        parameters ``traceparent`` and ``tracestate``; a ``tracestate`` without a
        ``traceparent`` is dropped (W3C), as is one longer than 512 characters (as
        OpenTelemetry's propagator does)."""
        if pipeline not in self.compiled.pipelines:
            raise RequestError(f"unknown pipeline {pipeline!r} "
                               f"(loaded: {', '.join(self.compiled.pipelines)})")
        if type(request) is not tuple and isinstance(request, Mapping):
            try:
                tensors = tensors_from_json(request.get("inputs"))
            except TensorError as exc:
                raise RequestError(f"request to {pipeline!r}: {exc}") from None
            request_id = request_id or request.get("id")
            params = request.get("parameters") or {}
            if not isinstance(params, Mapping):
                raise RequestError(f"request to {pipeline!r}: 'parameters' must be a mapping, "
                                   f"got {type(params).__name__}")
            traceparent = traceparent or params.get("traceparent")
            tracestate = tracestate or params.get("tracestate")
        elif type(request) is tuple or (isinstance(request, Iterable)
                                        and not isinstance(request, str | bytes)):
            tensors = tuple(request)
            for tensor in tensors:
                if not isinstance(tensor, Tensor):
                    others = {type(t).__name__ for t in tensors if not isinstance(t, Tensor)}
                    raise RequestError(f"request to {pipeline!r}: expected Tensor objects, "
                                       f"got {', '.join(sorted(others))}")
            try:
                tensors = carried(tensors)
            except TensorError as exc:
                raise RequestError(f"request to {pipeline!r}: {exc}") from None
        else:
            raise RequestError(f"request to {pipeline!r}: expected OIP v2 JSON (a mapping) or "
                               f"tensors, got {type(request).__name__}")
        parent_sampled: bool | None = None
        if traceparent:
            if not isinstance(traceparent, str):
                raise RequestError(f"request to {pipeline!r}: traceparent must be a string")
            try:
                trace_id, parent_span, parent_sampled = parse_traceparent(traceparent)
            except ValueError as exc:
                raise RequestError(str(exc)) from None
        else:
            trace_id, parent_span = new_trace_id(), new_span_id()
            # a generated request id is also the trace id: one id to look up in a tracer
            request_id = request_id or trace_id
            tracestate = None  # another tracer's state, without that tracer's traceparent
        if (not isinstance(tracestate, str) or not tracestate.strip()
                or len(tracestate) > TRACESTATE_MAX):
            tracestate = None
        lineage = Lineage(str(request_id or new_request_id()), trace_id, parent_span, pipeline,
                          "inputs", sampled=self.sampler(trace_id, parent_sampled),
                          tracestate=tracestate)
        return Record(lineage, tensors)

    def submit(self, record: Record) -> None:
        """Send a request record into its pipeline without waiting for a result."""
        if self._stopped:
            raise EngineStateError("this Engine was stopped: make a new Engine")
        self._check_loop()
        pipeline = record.lineage.pipeline
        topic = self._input_topics.get(pipeline) or self.topics.pipeline(pipeline, "inputs")
        self.transport.publish(topic, record)

    async def infer(
        self,
        pipeline: str,
        request: Mapping[str, Any] | Iterable[Tensor],
        *,
        result_of: str | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        timeout: float | None = 120.0,
    ) -> InferenceResult:
        """Send one request and wait for the output of ``result_of`` (default: ``pipeline``),
        or for the error that kept it from being made (a step that fails off the output
        path does not: the answer is the output).

        Request ids must be unique among the requests in flight: a request whose id another
        request still waits on is not run; its answer is an error saying so."""
        if not self._started:
            await self.start()
        self._check_loop()
        record = self.make_request(pipeline, request, request_id, traceparent, tracestate)
        lin = record.lineage
        if self.in_flight(lin.request_id):
            return InferenceResult(
                lin.request_id, result_of or pipeline, lineage=lin,
                error=f"request id {lin.request_id!r} is in use by a request still in flight; "
                      f"request ids must be unique among requests in flight, this request was "
                      f"not run")
        future = self.expect(lin.request_id, result_of or pipeline, lin.trace_id)
        self.submit(record)
        try:
            result = await asyncio.wait_for(future, timeout)
        except BaseException:  # timed out or cancelled: the waiter leaves
            self.forget(lin.request_id, future)
            raise
        return result if result.ok else self._with_missing_inputs(result, record)

    def _with_missing_inputs(self, result: InferenceResult, request: Record) -> InferenceResult:
        """An error answer, plus the input tensors the pipeline's steps name that the request
        lacks. A step whose named input is absent does not run (Seldon's routing semantics),
        so a misspelt tensor name would otherwise read only as "branch not taken"."""
        given = {t.name for t in request.tensors}
        missing = self.compiled.input_tensors_read(request.lineage.pipeline) - given
        if not missing:
            return result
        return dataclasses.replace(result, error=(
            f"{result.error}; note: the request has no tensor "
            f"{', '.join(repr(m) for m in sorted(missing))}, which "
            f"{request.lineage.pipeline!r} reads from its inputs "
            f"(the request's tensors: {', '.join(repr(g) for g in sorted(given)) or 'none'})"))

    def in_flight(self, request_id: str) -> bool:
        """True while a client waits for an answer to a request with this id."""
        return any(not fut.done() for _, _, fut in self._waiters.get(request_id, ()))

    def expect(self, request_id: str, pipeline: str,
               trace_id: str | None = None) -> asyncio.Future[InferenceResult]:
        """A future for the result of ``pipeline`` for ``request_id`` (register before sending).

        With ``trace_id`` (the request record's), only records of that trace answer it. A
        caller that gives up on the future before it is answered calls :meth:`forget` (as
        ``infer`` does); a done-callback would cost every request a turn of the event loop."""
        if self._stopped:
            raise EngineStateError("this Engine was stopped: make a new Engine")
        self._check_loop()
        future: asyncio.Future[InferenceResult] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(request_id, []).append((pipeline, trace_id, future))
        return future

    def forget(self, request_id: str, future: asyncio.Future[InferenceResult]) -> None:
        """Stop waiting with ``future`` (from :meth:`expect`) for ``request_id``."""
        waiters = [w for w in self._waiters.get(request_id, ()) if w[2] is not future]
        if waiters:
            self._waiters[request_id] = waiters
        else:
            self._done_waiting(request_id)
