"""Node processors: the step logic that every transport shares.

A processor receives records (and absence notices) for its slots, joins them, and acts:
a step publishes its joined inputs on ``model.<step>.inputs``, runs its code and publishes
``model.<step>.outputs``; a pipeline's input stage publishes ``pipeline.<p>.inputs``; its
output stage publishes ``pipeline.<p>.outputs``. Transports only move the records.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from engine.batch import Batcher
from engine.compile import NodePlan
from engine.join import FIRE, SKIP, JoinTable, Key, Outcome, absence_reason
from engine.lineage import Lineage, new_span_id
from engine.observe import Observer, StepEvent
from engine.record import REFUSED_SUFFIX, Record, bounded_error, failure_records
from engine.steps import InputNameClash, RunnableStep, cancelled_by_engine
from engine.tensors import Tensor

Publish = Callable[[str, Record], None]
SEEN_LIMIT = 200_000  # decided keys remembered per node for de-duplication


class NodeProcessor:
    """Joins a node's inputs per request and generation; subclasses say what firing means."""

    def __init__(
        self,
        plan: NodePlan,
        publish: Publish,
        control_topic: str,
        errors_topic: str,
        observers: list[Observer],
    ) -> None:
        self.plan = plan
        self.publish = publish
        self.control_topic = control_topic
        self.errors_topic = errors_topic
        self.observers = observers
        self.single = len(plan.slots) == 1 and not plan.slots[0].trigger_picks
        self.picks = plan.slots[0].input_picks if self.single else ()
        # One pick of a whole record, unrenamed: the record's tensor tuple is the input as is.
        self.whole = (len(self.picks) == 1 and self.picks[0].tensors is None
                      and not self.picks[0].renames)
        self.table = JoinTable(plan)
        self.batcher: Batcher | None = None
        # decided (request id, generation) -> the trace id of the request that decided them
        # (redelivery dedupe, and ids reused in another trace refused)
        self.seen: OrderedDict[tuple[str, int] | str, str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- arrival -------------------------------------------------------------------------
    def on_record(self, slot: int, record: Record) -> None:
        """A data record or absence notice for ``slot`` (already filtered by pipeline)."""
        lineage = record.lineage
        key = (lineage.request_id, lineage.visits.get(self.plan.name, 0) if lineage.visits else 0,
               lineage.trace_id)
        if self.single:  # one slot, no triggers: no join state at all
            if self.seen is not None:
                # In a loop, a node after the loop (fin, after a router that sends a value
                # round again until it is done) is fed once per turn, at its own generation
                # 0 each time: the consumed record's id tells the turns apart, and absence
                # notices (the turns whose branch was not taken) are not remembered, so the
                # turn that brings data is not taken for a redelivery of an earlier one.
                cyclic = self.plan.allow_cycles
                decided = lineage.record_id if cyclic else key[:2]
                if self._decided_already(decided, key, record):
                    return
                if not cyclic or record.kind == "data":
                    self._remember(decided, lineage.trace_id)
            if record.kind != "data":
                self.absent(key, record, "skipped", absence_reason([record]))
                return
            if self.whole:
                joined = record.tensors
            else:
                tensors: list[Tensor] = []
                for pick in self.picks:
                    pick.apply(record.tensors, tensors)
                joined = tuple(tensors)
            if joined:
                self.fire(key, joined, (record,), record,
                          time.time() if self.observers else 0.0)
            else:
                self.absent(key, record, "skipped", "projected inputs are empty")
            return
        # a key this join decided: a redelivered record (same trace) starts no new join,
        # which would run the step again or, its partner not redelivered, time out
        if (self.seen is not None and not self.plan.allow_cycles
                and self._decided_already(key[:2], key, record)):
            return
        outcome = self.table.offer(key, slot, record, time.time())
        if outcome is not None:
            self._decided(key)
            self.act(key, outcome, record)
        # pending keys close, and decided ones whose partners never come are forgotten, a
        # window later
        if self._timer is None and (self.table.pending or self.table.decided):
            self._arm()

    def _arm(self) -> None:
        deadline = self.table.next_deadline()
        if deadline is None:
            self._timer = None
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, deadline - time.time()), self._expire)

    def _expire(self) -> None:
        self._timer = None
        for key, outcome, arrivals in self.table.expire(time.time()):
            example = next(a for a in arrivals if a is not None)
            self._decided(key)
            self.act(key, outcome, example)
        self._arm()

    def _decided(self, key: Key) -> None:
        """Remember a join's decision where records are redelivered (not in a loop, where a
        node after the loop decides once per turn at one generation: there the join's own
        memory of late partners is all there is)."""
        if self.seen is not None and not self.plan.allow_cycles:
            self._remember(key[:2], key[2])

    def _decided_already(self, decided: tuple[str, int] | str, key: Key, record: Record) -> bool:
        """Whether ``decided`` (see ``seen``) was decided: ``record`` is then a redelivery,
        dropped, or, in another trace, a client reusing the request id, refused."""
        assert self.seen is not None
        trace = self.seen.get(decided)
        if trace is None:
            return False
        if trace != record.lineage.trace_id and record.kind == "data":
            self.reused(key, record, trace)
        return True

    def _remember(self, decided: tuple[str, int] | str, trace_id: str) -> None:
        assert self.seen is not None
        self.seen[decided] = trace_id
        if len(self.seen) > SEEN_LIMIT:
            self.seen.popitem(last=False)

    # -- decisions -----------------------------------------------------------------------
    def act(self, key: Key, outcome: Outcome, example: Record) -> None:
        if outcome.kind == FIRE:
            self.fire(key, outcome.tensors, outcome.records, example, outcome.arrived_s)
        elif outcome.kind == SKIP:
            self.absent(key, example, "skipped", outcome.reason)
        else:
            self.fail(key, example, outcome.reason, status="timeout")

    def out_lineage(self, key: Key, example: Record, origin: str, span_id: str,
                    parents: tuple[str, ...]) -> Lineage:
        return example.lineage.child(self.plan.pipeline, origin, span_id, parents, key[1],
                                     self._notice_visits(key, example))

    def _notice_visits(self, key: Key, example: Record) -> dict[str, int] | None:
        """In a cycle, a notice stands for the output this node did not make for generation
        ``key[1]``: it carries the visits that output would have carried, so that a join
        downstream keys it to the same generation (not to generation 0)."""
        if not self.plan.allow_cycles:
            return None
        visits = dict(example.lineage.visits or {})
        if self.plan.kind == "step":
            visits[self.plan.name] = key[1] + 1
        return visits

    def absent(self, key: Key, example: Record, status: str, reason: str) -> None:
        plan = self.plan
        if plan.allow_cycles and status == "skipped":
            # A skipped output stage is not final in a loop: a later turn may still reach
            # it; joins downstream (a chained pipeline's input stage) wait for that turn.
            if plan.kind == "outputs":
                return
            # Nothing can run beyond maxStepRevisits: a skip there ends a chain of notices
            # that would otherwise go round the loop.
            if plan.kind == "step" and key[1] > plan.max_revisits:
                return
        lineage = self.out_lineage(key, example, self.plan.origin, example.lineage.span_id, ())
        reason = bounded_error(reason)
        text = f"{status}: {reason}"
        self.inputs_absent(key, lineage, text)
        self.publish(self.control_topic, Record(lineage, kind="absent", error=text))
        if self.observers and self.plan.kind == "step":
            self.notify(StepEvent(self.plan.pipeline, self.plan.name, status, lineage,
                                  (example.lineage.span_id,), error=reason))

    def fail(self, key: Key, example: Record, message: str, status: str = "error",
             lineage: Lineage | None = None, inputs: tuple[Tensor, ...] = (),
             times: tuple[int, int, int] = (0, 0, 0), batch_size: int = 1,
             parent_spans: tuple[str, ...] = (), inputs_made: bool = False) -> None:
        """Error record on the errors topic, and an absence notice so joins downstream end.

        ``inputs_made``: a step that failed after it published its joined inputs (its code
        raised): readers of its inputs have them, only its outputs are announced absent."""
        plan = self.plan
        # bounded: an exception message can be any size, a record cannot
        text = bounded_error(f"{'step ' + repr(plan.name) if plan.kind == 'step' else plan.kind} "
                             f"of pipeline {plan.pipeline!r}: {message}")
        base = lineage or self.out_lineage(
            key, example, plan.origin,
            new_span_id() if self.observers else example.lineage.span_id,
            (example.lineage.record_id,))
        error, notice = failure_records(base, plan.name, plan.origin, text)
        self.publish(self.errors_topic, error)
        if not inputs_made:
            self.inputs_absent(key, base, notice.error or "")
        self.publish(self.control_topic, notice)
        if self.observers and plan.kind == "step":
            self.notify(StepEvent(plan.pipeline, plan.name, status, base,
                                  parent_spans or (example.lineage.span_id,), inputs=inputs,
                                  received_ns=times[0], started_ns=times[1], finished_ns=times[2],
                                  batch_size=batch_size, error=text))

    def inputs_absent(self, key: Key, lineage: Lineage, text: str) -> None:
        """A step's joined inputs record (``S.inputs``) that was not made: see StepProcessor.
        Other nodes publish no inputs record."""

    def reused(self, key: Key, record: Record, trace_id: str) -> None:
        """A request id this node already decided, in a request of another trace: not a
        redelivery (which repeats the trace) but a client reusing the id. Where records are
        redelivered, ids must be unique; the request gets an error answer, not silence. Only
        the errors topic: an absence notice would reach joins that decided the first one."""
        lin = record.lineage
        text = (f"{self.plan.kind} {self.plan.name!r} of pipeline {self.plan.pipeline!r}: "
                f"request id {lin.request_id!r} was already used by another request (trace "
                f"{trace_id}); on Kafka a request id must be unique, this request was not run")
        err = lin.child(self.plan.pipeline, f"{self.plan.name}{REFUSED_SUFFIX}", lin.span_id,
                        (lin.record_id,), key[1])
        self.publish(self.errors_topic, Record(err, kind="error", error=text))

    def notify(self, event: StepEvent) -> None:
        for observer in self.observers:
            observer.on_step(event)

    def fire(self, key: Key, tensors: tuple[Tensor, ...], records: tuple[Record, ...],
             example: Record, arrived_s: float) -> None:
        raise NotImplementedError

    def track(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def remember_decisions(self) -> None:
        """For transports that redeliver after a crash: ignore keys already decided."""
        self.seen = OrderedDict()

    def held_records(self) -> Iterator[Record]:
        for _, arrivals in self.table.pending.values():
            yield from (a for a in arrivals if a is not None)
        if self.batcher is not None:
            for run in self.batcher.pending:
                yield from run.records

    def forget_requests(self, keep: Callable[[str], bool]) -> None:
        for key in [k for k in self.table.pending if not keep(k[0])]:
            del self.table.pending[key]

    def close(self) -> None:
        """Stopping: no join window closes and no batch flushes on a timer any more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.batcher is not None:
            self.batcher.close()

    def discard(self) -> None:
        """After the transport stopped: drop the runs still waiting in a batch (they never
        run; on Kafka their records were not committed and are read again)."""
        if self.batcher is not None:
            self.batcher.pending.clear()


def step_inputs(tensors: tuple[Tensor, ...]) -> dict[str, np.ndarray]:
    """What step code is given: a copy of each input array of its own, as a Seldon step
    decodes its own request. A step that changes its inputs in place so changes neither what
    the upstream step produced (nor its record in the trace store) nor another step's
    inputs. (A batched step gets the stacked arrays: copies already.)"""
    arrays = {t.name: t.data.copy() for t in tensors}
    if len(arrays) != len(tensors):
        raise InputNameClash(tensors)
    return arrays


def _merged_visits(plan: NodePlan, records: tuple[Record, ...]) -> dict[str, int] | None:
    """Per step, the most visits any consumed record has seen (cycles only)."""
    if not plan.allow_cycles:
        return None
    merged: dict[str, int] = {}
    for r in records:
        for k, v in (r.lineage.visits or {}).items():
            if v > merged.get(k, 0):
                merged[k] = v
    return merged


class PortProcessor(NodeProcessor):
    """A pipeline's input stage (external inputs) or output stage: joins and republishes."""

    def fire(self, key: Key, tensors: tuple[Tensor, ...], records: tuple[Record, ...],
             example: Record, arrived_s: float) -> None:
        parents = tuple([r.lineage.record_id for r in records])
        visits = _merged_visits(self.plan, records) if self.plan.allow_cycles else None
        # A port's record gets a span id of its own only when an observer makes spans.
        span_id = new_span_id() if self.observers else example.lineage.span_id
        lineage = example.lineage.child(self.plan.pipeline, self.plan.kind, span_id,
                                        parents, key[1], visits)
        self.publish(self.plan.out_topic, Record(lineage, tensors))


class Run:
    """One request's pass through a step: what it consumed, its span, when it arrived."""

    __slots__ = ("key", "tensors", "parents", "example", "span_id", "visits", "parent_spans",
                 "received_ns", "records")

    def __init__(self, key: Key, tensors: tuple[Tensor, ...], parents: tuple[str, ...],
                 example: Record, span_id: str, visits: dict[str, int] | None,
                 parent_spans: tuple[str, ...], received_ns: int,
                 records: tuple[Record, ...] = ()) -> None:
        self.key = key
        # every record the run consumed (a join's included): a transport must not commit past
        # any of them while the run waits (in a batch)
        self.records = records or (example,)
        self.tensors = tensors
        self.parents = parents
        self.example = example
        self.span_id = span_id
        self.visits = visits
        self.parent_spans = parent_spans
        self.received_ns = received_ns


class StepProcessor(NodeProcessor):
    """Runs a step's code on its joined inputs; errors never stop other requests.

    The step's joined inputs are published on ``model.<step>.inputs`` (as in Seldon) and its
    results on ``model.<step>.outputs``; both records name the consumed records as parents.
    """

    def __init__(self, plan: NodePlan, publish: Publish, control_topic: str, errors_topic: str,
                 observers: list[Observer], runnable: RunnableStep,
                 wants: Callable[[str], bool]) -> None:
        super().__init__(plan, publish, control_topic, errors_topic, observers)
        self.runnable = runnable
        self.origin = plan.origin
        self.in_origin = f"{plan.name}.inputs"
        self.in_topic = plan.in_topic or ""
        self.out_topic = plan.out_topic
        self.wants = wants
        self.batcher = Batcher(self) if plan.batch and plan.batch.size else None
        # The common case — a sync step, unbatched, acyclic — takes a short path in fire():
        # same records, lineage and events, fewer objects and calls.
        self.plain = runnable.inline and self.batcher is None and not plan.allow_cycles
        self.run_sync = runnable.run_sync
        self.pipeline = plan.pipeline

    def fire(self, key: Key, tensors: tuple[Tensor, ...], records: tuple[Record, ...],
             example: Record, arrived_s: float) -> None:
        if self.plain and not self.wants(self.in_topic):
            lin = example.lineage
            parents = ((lin.record_id,) if len(records) == 1
                       else tuple([r.lineage.record_id for r in records]))
            observed = bool(self.observers)
            if observed:
                span_id = new_span_id()
                parent_spans = ((lin.span_id,) if len(records) == 1
                                else tuple([r.lineage.span_id for r in records]))
                received, started = int(arrived_s * 1e9), time.time_ns()
            else:  # nothing traces this hop: pass the traceparent on as is
                span_id, parent_spans, received, started = lin.span_id, (), 0, 0
            try:
                outputs = self.run_sync(step_inputs(tensors))
            except Exception as exc:  # noqa: BLE001 - a failing step must not stop the engine
                self.step_failed(Run(key, tensors, parents, example, span_id, None, parent_spans,
                                     received), exc, started)
                return
            lineage = Lineage(lin.request_id, lin.trace_id, span_id, self.pipeline, self.origin,
                              key[1], parents, None, lin.sampled, lin.tracestate)
            if observed:  # before publishing: see succeed()
                self.notify(StepEvent(self.pipeline, self.plan.name, "ok", lineage, parent_spans,
                                      tensors, outputs, received, started, time.time_ns()))
            self.publish(self.out_topic, Record(lineage, outputs))
            return
        plan = self.plan
        parents = tuple([r.lineage.record_id for r in records])
        visits = _merged_visits(plan, records) if plan.allow_cycles else None
        # untraced, a step passes on the traceparent it received (no span has a new id)
        span_id = new_span_id() if self.observers else example.lineage.span_id
        run = Run(key, tensors, parents, example, span_id, visits,
                  tuple([r.lineage.span_id for r in records]) if self.observers else (),
                  int(arrived_s * 1e9), records)
        if key[1] > plan.max_revisits:
            self.fail(key, example, f"exceeded maxStepRevisits={plan.max_revisits} "
                      f"(revisit {key[1]})", lineage=self.lineage(run, self.in_origin, visits))
            return
        if self.wants(self.in_topic):
            self.publish(self.in_topic, Record(self.lineage(run, self.in_origin, visits), tensors))
        if self.batcher is not None:
            self.batcher.add(run)
            return
        if self.runnable.inline:
            started = time.time_ns() if self.observers else 0
            try:
                outputs = self.runnable.run_sync(step_inputs(tensors))
            except Exception as exc:  # noqa: BLE001 - a failing step must not stop the engine
                self.step_failed(run, exc, started)
                return
            self.succeed(run, outputs, started)
            return
        self.track(asyncio.get_running_loop().create_task(self._run_async(run)))

    async def _run_async(self, run: Run) -> None:
        started = time.time_ns() if self.observers else 0
        try:
            outputs = await self.runnable.run(step_inputs(run.tensors))
        except Exception as exc:  # noqa: BLE001
            self.step_failed(run, exc, started)
            return
        except asyncio.CancelledError as exc:
            if cancelled_by_engine():
                raise
            self.step_failed(run, exc, started)  # raised inside the step's own code
            return
        self.succeed(run, outputs, started)

    def inputs_absent(self, key: Key, lineage: Lineage, text: str) -> None:
        """The step did not make its joined inputs record for ``key`` (it was skipped, its
        join failed, or it ran beyond maxStepRevisits): nodes that read ``<step>.inputs``
        (a step, an output stage, another pipeline's input stage) are told so on the control
        topic, as readers of its outputs are, so that their joins decide at once. Published
        where the inputs record itself would be (``wants``). ``lineage`` is the outputs
        notice's; this one differs in its origin and, in a cycle, in its visits: those the
        inputs record would have carried, without this step's own run."""
        if not self.wants(self.in_topic):
            return
        visits = lineage.visits
        if visits is not None:
            visits = {k: v for k, v in visits.items() if k != self.plan.name}
            if key[1]:
                visits[self.plan.name] = key[1]
        inputs = lineage.child(lineage.pipeline, self.in_origin, lineage.span_id,
                               lineage.parents, lineage.generation, visits)
        self.publish(self.control_topic, Record(inputs, kind="absent", error=text))

    def step_failed(self, run: Run, exc: BaseException, started_ns: int,
                    batch_size: int = 1) -> None:
        if isinstance(exc, TimeoutError):
            message = f"timed out after {self.runnable.timeout_s} s"
        elif isinstance(exc, asyncio.CancelledError):
            message = f"CancelledError raised inside the step{': ' if str(exc) else ''}{exc}"
        else:
            message = f"{type(exc).__name__}: {exc}"
        finished = time.time_ns() if self.observers else 0
        self.fail(run.key, run.example, message, lineage=self.output_lineage(run),
                  inputs=run.tensors, times=(run.received_ns, started_ns, finished),
                  batch_size=batch_size, parent_spans=run.parent_spans,
                  inputs_made=True)

    def lineage(self, run: Run, origin: str, visits: dict[str, int] | None) -> Lineage:
        lin = run.example.lineage
        return Lineage(lin.request_id, lin.trace_id, run.span_id, self.plan.pipeline, origin,
                       run.key[1], run.parents, visits, lin.sampled, lin.tracestate)

    def output_lineage(self, run: Run) -> Lineage:
        visits = run.visits
        if visits is not None:
            visits = {**visits, self.plan.name: visits.get(self.plan.name, 0) + 1}
        return self.lineage(run, self.origin, visits)

    def discard(self) -> None:
        """Also drop the calls still queued for the step's threads."""
        super().discard()
        self.runnable.close()

    def succeed(self, run: Run, outputs: tuple[Tensor, ...], started_ns: int,
                batch_size: int = 1) -> None:
        lineage = self.output_lineage(run)
        # Observers hear of the step before its output is published: outside a delivery (an
        # async or batched step) publishing runs everything downstream at once, which would
        # come first in the events and into the step's finish time.
        if self.observers:
            self.notify(StepEvent(self.plan.pipeline, self.plan.name, "ok", lineage,
                                  run.parent_spans, inputs=run.tensors,
                                  outputs=outputs, received_ns=run.received_ns,
                                  started_ns=started_ns, finished_ns=time.time_ns(),
                                  batch_size=batch_size))
        self.publish(self.out_topic, Record(lineage, outputs))
