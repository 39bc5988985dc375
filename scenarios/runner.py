"""Running a scenario: traffic through the engine with tracing on, faults switched on at
their start, and the two windows (healthy → reference, incident) it leaves in the store.

Phases (warm-up, healthy, incident) are separated by drains: before the first healthy and the
first incident request (and before any later fault start) every request sent so far has
finished, so no healthy request meets a faulty step and the windows split cleanly by
arrival time.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from engine.engine import Engine, InferenceResult
from engine.refs import RefError, parse_ref
from engine.spec import Pipeline
from engine.steps import StepRegistry
from engine.tensors import Tensor
from scenarios import traffic
from scenarios.faults import Arrays, Injection, transform, wrap_step
from scenarios.report import REPORT_FILE, RESULT_FILE
from scenarios.spec import INPUTS, Scenario, ScenarioError
from scenarios.transports import create_transport
from tracing.config import TracingConfig, build

REQUEST_TIMEOUT_S = 60.0


@dataclass
class Execution:
    """What a run left behind: where its traces are and which requests were which."""

    scenario: Scenario
    seed: int
    transport: str
    store: Path
    pipelines: list[Pipeline]
    target: str
    reference: tuple[float, float]  # epoch seconds, [start, end)
    incident: tuple[float, float]
    sent: int = 0  # warm-up included
    errors: int = 0
    lost: int = 0  # no answer within the request timeout
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def pipeline(self, name: str) -> Pipeline:
        return next(p for p in self.pipelines if p.name == name)


@dataclass
class _Traffic:
    """Requests in flight, their count and the progress bar."""

    limit: asyncio.Semaphore
    bar: tqdm
    pending: set[asyncio.Future[InferenceResult]] = field(default_factory=set)
    errors: int = 0
    lost: int = 0

    def done(self, future: asyncio.Future[InferenceResult]) -> None:
        self.pending.discard(future)
        self.limit.release()
        self.bar.update(1)
        if future.cancelled():
            self.lost += 1
        elif not future.result().ok:
            self.errors += 1

    async def drain(self, timeout: float) -> None:
        if not self.pending:
            return
        _, late = await asyncio.wait(set(self.pending), timeout=timeout)
        for future in late:
            future.cancel()
        await asyncio.sleep(0)  # let the cancelled futures' callbacks run


def _registry(scenario: Scenario, injections: list[Injection]) -> tuple[StepRegistry, dict[str, str]]:
    """Step code with every faulted step wrapped, and the step -> model mapping to use."""
    registry = StepRegistry.from_module(scenario.module(scenario.steps))
    models = dict(scenario.models)
    by_step: dict[str, list[Injection]] = {}
    for injection in injections:
        if injection.fault.step != INPUTS:
            by_step.setdefault(injection.fault.step, []).append(injection)
    for step, faults in by_step.items():
        original = registry.resolve(step, models.pop(step, None))
        registry.update({step: wrap_step(original, faults, scenario.module)})
    return registry, models


def _consumers(pipelines: list[Pipeline], name: str) -> list[str]:
    """The pipelines whose ``spec.input.externalInputs`` take pipeline ``name``'s outputs
    (``name``, ``name.outputs`` or ``name.outputs.T``; a single step's outputs do not count)."""
    found = []
    for p in pipelines:
        if p.name == name or p.input is None:
            continue
        for text in p.input.external_inputs:
            try:
                ref = parse_ref(text, p, external=True)
            except RefError:
                continue
            if ref.pipeline == name and ref.step is None and ref.port == "outputs":
                found.append(p.name)
                break
    return found


def result_pipeline(pipelines: list[Pipeline], target: str) -> str:
    """The pipeline whose output ends a request sent to ``target`` when the scenario has no
    ``result_of``: the last pipeline of the chain that starts at ``target`` (a pipeline
    taking the target's outputs, one taking that one's, and so on), or ``target`` itself.
    A chain that ends in more than one pipeline (or in none: a loop) has no last one, and
    is an error: the scenario must say which with ``result_of``."""
    reached, todo = {target}, [target]
    while todo:
        for name in _consumers(pipelines, todo.pop()):
            if name not in reached:
                reached.add(name)
                todo.append(name)
    ends = [p.name for p in pipelines if p.name in reached and not _consumers(pipelines, p.name)]
    if len(ends) != 1:
        found = f"ends in {', '.join(ends)}" if ends else "loops"
        raise ScenarioError(f"the chain of pipelines from {target!r} {found}: set result_of "
                            "to the pipeline whose output ends a request")
    return ends[0]


def _request(arrays: Arrays, injections: Iterable[Injection]) -> tuple[Tensor, ...]:
    for injection in injections:
        if injection.active:
            arrays = transform(injection, arrays)
    return tuple(Tensor.from_array(name, a) for name, a in arrays.items())


def _progress(scenario: Scenario, total: int, show: bool) -> tqdm:
    return tqdm(total=total, desc=scenario.name, unit="req", file=sys.stderr, leave=False,
                disable=not (show and sys.stderr.isatty()), mininterval=0.25)


@dataclass
class _Plan:
    """Everything a run needs before it sends anything, each part checked."""

    seed: int
    pipelines: list[Pipeline]
    target: str
    waits_for: str
    injections: list[Injection]
    registry: StepRegistry
    models: dict[str, str]
    requests: list[Arrays]


def _plan(scenario: Scenario, seed: int | None) -> _Plan:
    seed = scenario.traffic.seed if seed is None else seed
    if seed < 0:
        raise ScenarioError(f"seed {seed}: a seed is 0 or more")
    pipelines = scenario.pipelines()
    target = scenario.target or pipelines[0].name
    waits_for = scenario.result_of or result_pipeline(pipelines, target)
    injections = [Injection.create(f, seed, i) for i, f in enumerate(scenario.faults)
                  if f.type != "none"]
    registry, models = _registry(scenario, injections)
    phases = scenario.phases
    requests = traffic.requests(scenario, phases.warmup + phases.healthy + phases.incident, seed)
    _check_input_tensors(injections, requests)
    return _Plan(seed, pipelines, target, waits_for, injections, registry, models, requests)


def _check_input_tensors(injections: list[Injection], requests: list[Arrays]) -> None:
    """A fault on the traffic must name tensors the traffic has (a generator's are known only
    now; the other sources' were checked when the file loaded)."""
    have = list(requests[0]) if requests else []
    for injection in injections:
        named = getattr(injection.fault.params, "tensors", None) or []
        unknown = [t for t in named if t not in have]
        if injection.fault.step == INPUTS and unknown:
            raise ScenarioError(f"faults.{injection.index}.params.tensors: {', '.join(unknown)} not "
                                f"among the traffic's tensors ({', '.join(have)})")


def check(scenario: Scenario, seed: int | None = None) -> None:
    """Everything :func:`execute` checks before it sends a request (the pipelines' chain, the
    step code and replacement code, the traffic and the tensors its faults name), without
    running anything: a :class:`ScenarioError` (or ``StepNotFound``) says what is wrong."""
    _plan(scenario, seed)


def _stop_if_broken(injections: list[Injection], scenario: Scenario) -> None:
    for injection in injections:
        if injection.problem:
            raise ScenarioError(f"{scenario.name}: {injection.problem}")


async def execute(scenario: Scenario, out: Path, *, seed: int | None = None,
                  transport: str = "embedded", bootstrap: str | None = None,
                  progress: bool = True) -> Execution:
    """Run ``scenario``'s traffic and record it in ``out/store`` (replaced if present; a
    previous run's ``result.json`` and ``report.md`` in ``out`` are removed, so nothing
    of it describes the new store). A fault that turns out to select none of its tensors
    stops the run with a :class:`ScenarioError`."""
    plan = _plan(scenario, seed)
    seed, pipelines, target, waits_for = plan.seed, plan.pipelines, plan.target, plan.waits_for
    injections, registry, models, requests = (plan.injections, plan.registry, plan.models,
                                              plan.requests)
    inputs_faults = [i for i in injections if i.fault.step == INPUTS]
    warmup = scenario.phases.warmup
    healthy = warmup + scenario.phases.healthy  # index of the first incident request

    for stale in (RESULT_FILE, REPORT_FILE):
        (out / stale).unlink(missing_ok=True)
    store = out / "store"
    shutil.rmtree(store, ignore_errors=True)
    tracing = build(TracingConfig.from_env(store=str(store)))
    assert tracing is not None
    bus, topics = create_transport(transport, bootstrap)
    engine = Engine(pipelines, registry, transport=bus, topics=topics, models=models,
                    observers=[tracing.collector], sampler=tracing.sampler)
    # Drain points: the end of the warm-up, the start of the incident phase and of every fault.
    starts = {warmup, healthy} | {healthy + i.fault.start for i in injections}
    traffic_state = _Traffic(asyncio.Semaphore(scenario.traffic.concurrency),
                             _progress(scenario, len(requests), progress))
    interval = 1.0 / scenario.traffic.rate if scenario.traffic.rate else 0.0
    marks: dict[str, float] = {}
    try:
        await engine.start()
        next_send = marks["start"] = time.time()
        for index, arrays in enumerate(requests):
            if index in starts:
                await traffic_state.drain(REQUEST_TIMEOUT_S)
                marks.setdefault("reference" if index == warmup else "incident", time.time())
                next_send = max(next_send, time.time())
                for injection in injections:
                    injection.active = injection.active or healthy + injection.fault.start == index
            if interval:
                delay = next_send - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_send += interval
            await traffic_state.limit.acquire()
            _stop_if_broken(injections, scenario)
            phase = "w" if index < warmup else "h" if index < healthy else "i"
            record = engine.make_request(target, _request(arrays, inputs_faults),
                                         request_id=f"{phase}{index:06d}")
            future = engine.expect(record.lineage.request_id, waits_for)
            traffic_state.pending.add(future)
            future.add_done_callback(traffic_state.done)
            engine.submit(record)
        await traffic_state.drain(REQUEST_TIMEOUT_S)
        _stop_if_broken(injections, scenario)
        marks["end"] = time.time()
    finally:
        traffic_state.bar.close()
        await engine.stop()
        tracing.collector.close()
    return Execution(
        scenario=scenario, seed=seed, transport=transport, store=store, pipelines=pipelines,
        target=target, reference=(marks["reference"], marks["incident"]),
        incident=(marks["incident"], marks["end"]), sent=len(requests),
        errors=traffic_state.errors, lost=traffic_state.lost,
        seconds=marks["end"] - marks["start"],
    )
