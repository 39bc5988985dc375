"""Differential test: random pipelines answer alike on the embedded bus and on Kafka.

The two transports must have identical semantics (docs/engine.md), so hypothesis generates
small acyclic Seldon Core v2 pipelines and runs the same spec and requests on both:

- 2 to 6 steps whose inputs are drawn from the pipeline's inputs (whole or ``P.inputs.x``),
  earlier steps' outputs (whole or ``s.outputs.T``) and their joined inputs
  (``s.inputs``); ``inputsJoinType`` inner, outer or any;
  optional triggers (``triggersJoinType`` inner, outer or any); optional ``tensorMap``
  renames (to names that may clash: an inner join naming such a pair is refused by
  validation and not generated, a clash at run time is the step's ``InputNameClash``);
  optional ``batch: {size: 2, windowMs: 50}``; an ``output`` section (``stepsJoin`` inner,
  outer or any, optional renames) or the default output;
- step code that is a deterministic function of the inputs (a weighted sum of the inputs
  in the order the step is given them, scaled per output): plain steps, routers that emit
  one of their outputs or a subset of them depending on the values, steps that raise for
  some values, some of them async with a short sleep;
- 3 to 6 requests of 3 to 8 FP64 values per input tensor, sent one at a time and then all
  at once (``asyncio.gather``).

Each answer (error text, or the output tensors' names, datatypes, shapes and values in
order) must be the same on both transports, and the same whether the requests were sent
one at a time or together.

The generator leaves out what the engine documents as not fixed, where either transport
may legitimately answer otherwise:

- join windows stay at their default (60 s): a window shorter than a slow step closes on
  the bus and not on Kafka (docs/kafka-transport.md, "Join windows and slow steps");
- an ``any`` join (of a step or of the output stage) takes the first arrival, and Kafka
  reads topics in no fixed order: its inputs come from one topic, or from topics that at
  most one of can carry data for a request (branches after different outputs of a router
  that emits exactly one);
- at most one step per pipeline can fail (raise, or a possible tensor name clash): when
  several fail, the answer is the first failure recorded (docs/engine.md, "Which answer a
  request gets"), which depends on arrival order;
- a batched step is a plain inner-join step fed only by topics whose tensor names never
  vary: its batch is made of whichever requests are there, and a batch fails as a whole;

- a pipeline with a step that may fail has no routers (and one with routers no step that
  may fail): when a failure and an untaken branch both keep an inner join from being made,
  the join skips at the first absence notice, so the answer is the failure's error or
  "produced no output ... (branch not taken)" by arrival order, which differs between the
  transports (docs/engine.md, "Which answer a request gets"; this test found it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, assume, given, note, settings
from hypothesis import strategies as st

from engine.embedded import EmbeddedBus
from engine.engine import Engine
from engine.kafka import KafkaTransport
from engine.spec import load_pipelines
from engine.tensors import Tensor
from engine.topics import Topics
from engine.transport import Transport
from engine.validate import validate

logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

PIPE = "fz"
RENAMES = ("r0", "r1", "x0")  # tensorMap targets: x0 may clash with the pipeline's input x0
ANSWER_TIMEOUT_S = 20.0
Fact = tuple[str, str]  # (router that emits exactly one output, the output it emitted)
Tensors = tuple[tuple[str, str, tuple[int, ...], tuple[float, ...]], ...]
Answer = tuple[str | None, Tensors]


@dataclass(frozen=True)
class StepPlan:
    """A step's code: ``acc = x_1 + 2 x_2 + ...`` over its inputs in the order given, each
    output ``scale * acc + offset``; ``kind`` says which outputs it returns or if it raises."""

    name: str
    kind: str  # plain | one (a router emitting one output) | some (a subset) | raise
    outputs: tuple[str, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    delay_s: float  # > 0: an async step that sleeps that long first

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = list(inputs.values())
        acc = arrays[0]
        for weight, array in enumerate(arrays[1:], start=2):
            acc = acc + weight * array
        total = float(np.abs(acc).sum())
        if self.kind == "raise" and int(total * 5) % 3 == 0:
            raise ValueError(f"{self.name} refuses {total!r}")
        keep = list(range(len(self.outputs)))
        if self.kind == "one":
            keep = [int(total * 3) % len(self.outputs)]
        elif self.kind == "some":
            keep = [j for j in keep if int(abs(float(acc[0])) * (j + 2)) % 2 == 0]
        return {self.outputs[j]: self.scales[j] * acc + self.offsets[j] for j in keep}

    async def run_later(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        await asyncio.sleep(self.delay_s)
        return self.run(inputs)


@dataclass(frozen=True)
class Source:
    """A topic a node may read, as the generator knows it."""

    ref: str  # the whole reference: "fz.inputs", "s0.outputs", "s0.inputs"
    step: str | None  # its step (None: the pipeline's inputs)
    names: tuple[str, ...]  # the tensors it may carry, in record order
    fixed: bool  # carries every one of them whenever it carries data
    facts: frozenset[Fact]  # what is true of a request when it carries data
    router: str | None  # its step, when that emits exactly one of `names`


@dataclass(frozen=True)
class Case:
    spec: dict[str, Any]
    steps: tuple[StepPlan, ...]
    inputs: tuple[str, ...]
    requests: tuple[tuple[tuple[float, ...], ...], ...]  # per request, per input: values


Choice = tuple[Source, str | None]  # a source and a tensor of it (None: the whole record)


def text_of(choice: Choice, bare: bool) -> str:
    source, tensor = choice
    if tensor is not None:
        return f"{source.ref}.{tensor}"
    whole = source.ref.endswith(".outputs") or source.ref == f"{PIPE}.inputs"
    return source.ref.split(".")[0] if bare and whole else source.ref


def slots(choices: list[Choice]) -> dict[str, tuple[Source, frozenset[str] | None]]:
    """Per topic, in the order the references first name it: what it gives (None: all)."""
    named: dict[str, tuple[Source, set[str]]] = {}
    for source, tensor in choices:
        entry = named.setdefault(source.ref, (source, set()))
        if tensor is not None:
            entry[1].add(tensor)
    return {ref: (src, frozenset(tensors) or None) for ref, (src, tensors) in named.items()}


def slot_facts(source: Source, tensors: frozenset[str] | None) -> frozenset[Fact]:
    """What is true of a request when this slot gives a non-empty projection."""
    if source.router is not None and tensors is not None and len(tensors) == 1:
        return source.facts | {(source.router, next(iter(tensors)))}
    return source.facts


def exclusive(a: frozenset[Fact], b: frozenset[Fact]) -> bool:
    return any(r1 == r2 and t1 != t2 for r1, t1 in a for r2, t2 in b)


def pairwise_exclusive(choices: list[Choice]) -> bool:
    """Whether at most one of the choices' topics can carry data for a request."""
    facts = [slot_facts(source, tensors) for source, tensors in slots(choices).values()]
    return all(exclusive(a, b) for i, a in enumerate(facts) for b in facts[i + 1:])


def intersection(sets: list[frozenset[Fact]]) -> frozenset[Fact]:
    return frozenset.intersection(*sets) if sets else frozenset()


def given_names(choices: list[Choice], renames: dict[str, str]) -> list[list[str]]:
    """Per topic, the names of the tensors it may give the node, after renames."""
    out = []
    for ref, (source, tensors) in slots(choices).items():
        out.append([renames.get(f"{ref}.{n}", n) for n in source.names
                    if tensors is None or n in tensors])
    return out


def may_clash(choices: list[Choice], renames: dict[str, str], join: str) -> bool:
    """Whether the node may be given two tensors of one name (InputNameClash)."""
    groups = given_names(choices, renames)
    if join == "any":  # one topic at a time
        return any(len(set(g)) != len(g) for g in groups)
    names = [n for g in groups for n in g]
    return len(set(names)) != len(names)


def named_clash(choices: list[Choice], renames: dict[str, str]) -> bool:
    """Whether two references that name their tensors give one name (after renames)."""
    texts = {text_of(c, False): c[1] for c in choices if c[1] is not None}
    names = [renames.get(text, tensor) for text, tensor in texts.items()]
    return len(set(names)) != len(names)


@st.composite
def renames_for(draw: st.DrawFn, choices: list[Choice]) -> dict[str, str]:
    """Up to two tensorMap entries for tensors the choices take."""
    taken = [f"{ref}.{n}" for ref, (source, tensors) in slots(choices).items()
             for n in source.names if tensors is None or n in tensors]
    keys = draw(st.lists(st.sampled_from(taken), max_size=2, unique=True))
    return {key: draw(st.sampled_from(RENAMES)) for key in keys}


@st.composite
def choices_from(draw: st.DrawFn, sources: list[Source], most: int) -> list[Choice]:
    out: list[Choice] = []
    for _ in range(draw(st.integers(1, most))):
        source = draw(st.sampled_from(sources))
        out.append((source, draw(st.sampled_from((None, *source.names)))))
    return out


@st.composite
def exclusive_choices(draw: st.DrawFn, sources: list[Source], most: int) -> list[Choice]:
    """References for an ``any`` join: more of the same topic, or topics exclusive with it."""
    out: list[Choice] = []
    for _ in range(draw(st.integers(1, most))):
        fits = [(s, t) for s in sources for t in (None, *s.names)
                if pairwise_exclusive([*out, (s, t)])]
        others = [c for c in fits if c[0].ref not in {o[0].ref for o in out}]
        out.append(draw(st.sampled_from(others if others and draw(st.booleans()) else fits)))
    return out


@st.composite
def cases(draw: st.DrawFn) -> Case:
    inputs = tuple(f"x{i}" for i in range(draw(st.integers(1, 3))))
    sources = [Source(f"{PIPE}.inputs", None, inputs, True, frozenset(), None)]
    steps: list[StepPlan] = []
    specs: list[dict[str, Any]] = []
    may_fail = False  # a step that may fail was generated already
    routes = False  # a router was generated already (see the docstring: not with failures)
    for i in range(draw(st.integers(2, 6))):
        name = f"s{i}"
        kind = draw(st.sampled_from(("plain", "plain", "one", "some", "raise")))
        if (kind == "raise" and (may_fail or routes)) or (kind in ("one", "some") and may_fail):
            kind = "plain"
        routes = routes or kind in ("one", "some")
        batched = kind == "plain" and draw(st.integers(0, 3)) == 0
        join = "inner" if batched else draw(st.sampled_from(("inner", "outer", "any")))
        usable = [s for s in sources if s.fixed] if batched else sources
        choices = draw((exclusive_choices if join == "any" else choices_from)(usable, 3))
        renames = draw(renames_for(choices))
        if join == "inner" and named_clash(choices, renames):  # refused by validation
            renames = {}
            if named_clash(choices, renames):
                choices = [c for c in choices if c[0].ref == choices[0][0].ref]
        clash = may_clash(choices, renames, join)
        if clash and (may_fail or routes or batched or kind == "raise"):
            renames = {}
            if may_clash(choices, renames, join):
                choices = [c for c in choices if c[0].ref == choices[0][0].ref]
            clash = False
        may_fail = may_fail or clash or kind == "raise"
        step: dict[str, Any] = {"name": name,
                                "inputs": [text_of(c, draw(st.booleans())) for c in choices]}
        if join != "inner" or draw(st.booleans()):
            step["inputsJoinType"] = join
        if renames:
            step["tensorMap"] = renames
        slot_sets = [slot_facts(s, t) for s, t in slots(choices).values()]
        facts = intersection(slot_sets)
        if join == "inner":
            facts |= frozenset().union(*(s.facts for s, _ in slots(choices).values()))
        in_steps = {c[0].step for c in choices} - {None}
        triggers: list[Choice] = []
        trigger_sources = [s for s in sources if s.step not in in_steps and s.ref.endswith(
            (".outputs", f"{PIPE}.inputs"))]
        if draw(st.integers(0, 2)) == 0:
            triggers = draw(choices_from(trigger_sources, 2))
            trigger_join = draw(st.sampled_from(("inner", "outer", "any")))
            step["triggers"] = [text_of(c, draw(st.booleans())) for c in triggers]
            step["triggersJoinType"] = trigger_join
            trigger_sets = [slot_facts(s, None if t is None else frozenset([t]))
                            for s, t in triggers]
            facts |= (frozenset().union(*trigger_sets) if trigger_join == "inner"
                      else intersection(trigger_sets))
        if batched:
            step["batch"] = {"size": 2, "windowMs": 50}
        specs.append(step)
        n_out = draw(st.integers(2, 3)) if kind in ("one", "some") else draw(st.integers(1, 2))
        plan = StepPlan(name, kind, tuple(f"{name}{'abc'[j]}" for j in range(n_out)),
                        tuple(draw(st.sampled_from((-1.5, -0.5, 0.25, 1.0, 2.0)))
                              for _ in range(n_out)),
                        tuple(draw(st.sampled_from((0.0, 0.5, -3.0))) for _ in range(n_out)),
                        draw(st.sampled_from((0.0, 0.0, 0.002, 0.02))))
        steps.append(plan)
        sources.append(Source(f"{name}.outputs", name, plan.outputs, kind in ("plain", "raise"),
                              facts, name if kind == "one" else None))
        if not clash:
            # its joined inputs carry data whenever it runs (even when its code then raises);
            # when it does not, it announces them absent
            joined = tuple(n for g in given_names(choices, renames) for n in g)
            every = join == "inner" and all(s.fixed for s, _ in slots(choices).values())
            sources.append(Source(f"{name}.inputs", name, joined, every, facts, None))
    spec: dict[str, Any] = {"steps": specs}
    if draw(st.integers(0, 3)):
        steps_join = draw(st.sampled_from(("inner", "outer", "any")))
        outs = draw((exclusive_choices if steps_join == "any" else choices_from)(
            [s for s in sources if s.step is not None], 3))
        spec["output"] = {"steps": [text_of(c, draw(st.booleans())) for c in outs],
                          "stepsJoin": steps_join}
        renames = draw(renames_for(outs))
        if renames:
            spec["output"]["tensorMap"] = renames
    pipeline = {"metadata": {"name": PIPE}, "spec": spec}
    assume(not validate(load_pipelines(pipeline)))
    requests = draw(st.lists(
        st.integers(3, 8).flatmap(lambda n: st.tuples(*(
            st.tuples(*(st.floats(-10, 10, allow_nan=False) for _ in range(n)))
            for _ in inputs))),
        min_size=3, max_size=6))
    return Case(pipeline, tuple(steps), inputs, tuple(requests))


def answer_of(error: str | None, outputs: tuple[Tensor, ...]) -> Answer:
    return error, tuple((t.name, t.datatype, tuple(t.data.shape), tuple(t.data.ravel().tolist()))
                        for t in outputs)


async def ask(engine: Engine, case: Case, values: tuple[tuple[float, ...], ...],
              request_id: str) -> Answer:
    tensors = [Tensor(name, "FP64", np.array(v, dtype=np.float64))
               for name, v in zip(case.inputs, values, strict=True)]
    try:
        res = await engine.infer(PIPE, tensors, request_id=request_id, timeout=ANSWER_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {ANSWER_TIMEOUT_S} s", ()
    return answer_of(res.error, res.outputs)


async def run(case: Case, bootstrap: str | None) -> tuple[list[Answer], list[Answer]]:
    """The answers sent one at a time, then all at once, on the embedded bus (no
    ``bootstrap``) or on Kafka, with topics of this run's own."""
    transport: Transport = EmbeddedBus()
    topics = None
    if bootstrap is not None:
        topics = Topics(prefix=f"fz{uuid.uuid4().hex[:10]}")
        transport = KafkaTransport(bootstrap, group_id=f"{topics.prefix}-engine", partitions=1)
    code = {p.name: p.run_later if p.delay_s else p.run for p in case.steps}
    async with Engine(load_pipelines(case.spec), code, transport=transport,
                      topics=topics) as engine:
        one_by_one = [await ask(engine, case, values, f"q{i}")
                      for i, values in enumerate(case.requests)]
        together = await asyncio.gather(*(ask(engine, case, values, f"p{i}")
                                          for i, values in enumerate(case.requests)))
    return one_by_one, list(together)


def check(case: Case, bootstrap: str) -> None:
    """Run the case on both transports and compare the answers."""
    note(f"spec: {case.spec}")
    note(f"steps: {case.steps}")
    embedded = asyncio.run(asyncio.wait_for(run(case, None), 120))
    kafka = asyncio.run(asyncio.wait_for(run(case, bootstrap), 120))
    note(f"embedded: {embedded}")
    note(f"kafka: {kafka}")
    assert kafka[0] == embedded[0], "one at a time: Kafka answers otherwise than the embedded bus"
    assert kafka[1] == embedded[1], "all at once: Kafka answers otherwise than the embedded bus"
    assert embedded[1] == embedded[0], "the answers depend on whether requests came together"


# No shrinking: every example starts a Kafka engine, and a race replays inconsistently; the
# notes give the failing example's spec, step code and both transports' answers.
@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=cases())
def test_embedded_bus_and_kafka_answer_random_pipelines_alike(kafka_bootstrap: str,
                                                              case: Case) -> None:
    check(case, kafka_bootstrap)
