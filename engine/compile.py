"""Compile validated pipelines into node plans: what each node reads, joins and writes.

A node is a step, a pipeline's input stage (only when ``spec.input`` names external
pipelines) or a pipeline's output stage. Each reads *slots*: one slot per distinct
(topic, producing pipeline) among its references, so that references to several tensors of
one record are served by one arrival.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from engine.refs import Ref, parse_ref
from engine.spec import DEFAULT_JOIN_WINDOW_MS, Batch, JoinType, Pipeline
from engine.tensors import Tensor
from engine.topics import Topics
from engine.validate import sink_steps, validate

DEFAULT_MAX_STEP_REVISITS = 0  # Seldon's: a cycle needs maxStepRevisits to turn at all
DEFAULT_BATCH_WINDOW_MS = 100


class PipelineInvalid(ValueError):
    """Raised with every problem found in a set of pipelines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Pick:
    """Take the tensors named in ``tensors`` (every tensor when None) from a slot's record,
    in the record's order, renaming via ``renames``: as Seldon projects a topic onto the set
    of tensor names its references give (a whole-topic reference beside named ones adds
    nothing; a name given twice is taken once)."""

    __slots__ = ("tensors", "renames")

    def __init__(self, tensors: frozenset[str] | None,
                 rename: tuple[tuple[str, str], ...] = ()) -> None:
        self.tensors = tensors
        self.renames = dict(rename)

    def apply(self, record_tensors: tuple[Tensor, ...], out: list[Tensor]) -> None:
        renames, wanted = self.renames, self.tensors
        if wanted is None and not renames:
            out.extend(record_tensors)
            return
        out.extend(t.renamed(renames[t.name]) if t.name in renames else t
                   for t in record_tensors if wanted is None or t.name in wanted)

    def present(self, record_tensors: tuple[Tensor, ...]) -> bool:
        if self.tensors is None:
            return bool(record_tensors)
        return any(t.name in self.tensors for t in record_tensors)


@dataclass(frozen=True, slots=True)
class Slot:
    topic: str
    pipeline: str  # records on the topic count only when produced by this pipeline
    origin: str  # lineage origin of those records, e.g. "s1.outputs" or "outputs"
    input_picks: tuple[Pick, ...]
    trigger_picks: tuple[Pick, ...]


@dataclass(frozen=True, slots=True)
class NodePlan:
    pipeline: str
    kind: str  # "step" | "inputs" | "outputs"
    name: str  # the step name, or "inputs"/"outputs"
    slots: tuple[Slot, ...]
    inputs_join: JoinType
    triggers_join: JoinType
    window_s: float
    in_topic: str | None  # where a step publishes its joined inputs
    out_topic: str
    batch: Batch | None = None
    allow_cycles: bool = False
    max_revisits: int = DEFAULT_MAX_STEP_REVISITS
    # in a cycle: slots whose records come at generation 0 only (see _gen0_only)
    gen0_only: tuple[int, ...] = ()

    @property
    def origin(self) -> str:
        return f"{self.name}.outputs" if self.kind == "step" else self.kind

    @property
    def label(self) -> str:
        return f"{self.pipeline}.{self.name}"


@dataclass
class CompiledPipelines:
    pipelines: dict[str, Pipeline]
    nodes: list[NodePlan]
    topics: Topics
    control_topics: dict[str, str] = field(default_factory=dict)

    def input_tensors_read(self, pipeline: str) -> frozenset[str]:
        """The tensors that ``pipeline``'s steps and output stage name in references to its
        own inputs (``P.inputs.T``, as inputs or triggers); a whole ``P.inputs`` names none."""
        return frozenset(
            name
            for node in self.nodes if node.pipeline == pipeline and node.kind != "inputs"
            for slot in node.slots if slot.pipeline == pipeline and slot.origin == "inputs"
            for pick in slot.input_picks + slot.trigger_picks if pick.tensors
            for name in pick.tensors
        )

    def node(self, pipeline: str, name: str) -> NodePlan:
        for n in self.nodes:
            if n.pipeline == pipeline and n.name == name:
                return n
        raise KeyError(f"{pipeline}.{name}")


def _slot_topic(ref: Ref, topics: Topics) -> str:
    if ref.step is None:
        return topics.pipeline(ref.pipeline, ref.port)
    return topics.model(ref.step, ref.port)


def _slots(
    pipeline: Pipeline,
    inputs: Iterable[str],
    triggers: Iterable[str],
    tensor_map: dict[str, str],
    topics: Topics,
    external: bool,
) -> tuple[Slot, ...]:
    renames: dict[Ref, list[tuple[str, str]]] = {}
    for key, new_name in tensor_map.items():
        ref = parse_ref(key, pipeline, external=external)
        renames.setdefault(ref.whole(), []).append((ref.tensor or "", new_name))
    # per slot: its origin, the whole refs of its references, the tensors its inputs name
    # (None: a whole-topic input), and one trigger pick per trigger reference
    slots: dict[tuple[str, str], tuple[str, dict[Ref, None], list[str | None], list[Pick]]] = {}
    for texts, is_trigger in ((inputs, False), (triggers, True)):
        for text in texts:
            ref = parse_ref(text, pipeline, external=external)
            key = (_slot_topic(ref, topics), ref.pipeline)
            origin, wholes, named, trigger_picks = slots.setdefault(key, (ref.origin, {}, [], []))
            wholes[ref.whole()] = None
            if is_trigger:
                trigger_picks.append(Pick(None if ref.tensor is None else frozenset([ref.tensor]),
                                          tuple(renames.get(ref.whole(), ()))))
            else:
                named.append(ref.tensor)
    out = []
    for (topic, pipe), (origin, wholes, named, trigger_picks) in slots.items():
        input_picks: tuple[Pick, ...] = ()
        if named:
            chosen = frozenset(t for t in named if t is not None)
            rename = tuple(r for whole in wholes for r in renames.get(whole, ()))
            input_picks = (Pick(chosen or None, rename),)
        out.append(Slot(topic, pipe, origin, input_picks, tuple(trigger_picks)))
    return tuple(out)


def _gen0_only(plan: NodePlan, nodes: list[NodePlan]) -> tuple[int, ...]:
    """Slots of a step in a cyclic pipeline whose producer the step does not reach (the
    pipeline's inputs, other pipelines, steps before the loop): their records never carry a
    visit of the step, so they come at generation 0 only."""
    def producer(slot: Slot) -> str | None:
        if slot.pipeline != plan.pipeline or "." not in slot.origin:
            return None  # another pipeline, or the pipeline's inputs
        return slot.origin.rsplit(".", 1)[0]

    feeds: dict[str, set[str]] = defaultdict(set)  # step -> steps that read it
    for node in nodes:
        if node.pipeline == plan.pipeline and node.kind == "step":
            for slot in node.slots:
                src = producer(slot)
                if src is not None:
                    feeds[src].add(node.name)
    reached: set[str] = set()
    todo = [plan.name]
    while todo:
        for nxt in feeds.get(todo.pop(), ()):
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    return tuple(i for i, slot in enumerate(plan.slots)
                 if (src := producer(slot)) is None or (src != plan.name and src not in reached))


def _window_s(ms: int | None) -> float:
    """A join window in seconds; 0 means unset, as in Seldon (a uint32 field)."""
    return (ms or DEFAULT_JOIN_WINDOW_MS) / 1000.0


def compile_pipelines(pipelines: Iterable[Pipeline], topics: Topics | None = None) -> CompiledPipelines:
    """Validate and compile; raises :class:`PipelineInvalid` listing every problem."""
    pipelines = list(pipelines)
    problems = validate(pipelines)
    if problems:
        raise PipelineInvalid(problems)
    topics = topics or Topics()
    nodes: list[NodePlan] = []
    for p in pipelines:
        own_inputs = f"{p.name}.inputs"
        cycles = p.spec.allow_cycles
        revisits = (
            p.spec.max_step_revisits
            if p.spec.max_step_revisits is not None
            else DEFAULT_MAX_STEP_REVISITS
        )
        if p.input is not None:
            nodes.append(
                NodePlan(
                    pipeline=p.name,
                    kind="inputs",
                    name="inputs",
                    slots=_slots(p, p.input.external_inputs, p.input.external_triggers,
                                 p.input.tensor_map, topics, external=True),
                    inputs_join=p.input.join_type,
                    triggers_join=p.input.triggers_join_type,
                    window_s=_window_s(p.input.join_window_ms),
                    in_topic=None,
                    out_topic=topics.pipeline(p.name, "inputs"),
                )
            )
        for step in p.steps:
            nodes.append(
                NodePlan(
                    pipeline=p.name,
                    kind="step",
                    name=step.name,
                    slots=_slots(p, step.inputs or [own_inputs], step.triggers, step.tensor_map,
                                 topics, external=False),
                    inputs_join=step.inputs_join_type,
                    triggers_join=step.triggers_join_type,
                    window_s=_window_s(step.join_window_ms),
                    in_topic=topics.model(step.name, "inputs"),
                    out_topic=topics.model(step.name, "outputs"),
                    batch=step.batch,
                    allow_cycles=cycles,
                    max_revisits=revisits,
                )
            )
        output = p.output
        out_steps = output.steps if output and output.steps else sink_steps(p)
        nodes.append(
            NodePlan(
                pipeline=p.name,
                kind="outputs",
                name="outputs",
                slots=_slots(p, out_steps, [], output.tensor_map if output else {}, topics,
                             external=False),
                inputs_join=output.steps_join if output else JoinType.INNER,
                triggers_join=JoinType.INNER,
                window_s=_window_s(output.join_window_ms if output else None),
                in_topic=None,
                out_topic=topics.pipeline(p.name, "outputs"),
                allow_cycles=cycles,
            )
        )
    nodes = [replace(n, gen0_only=_gen0_only(n, nodes)) if n.allow_cycles and n.kind == "step"
             else n for n in nodes]
    return CompiledPipelines(
        pipelines={p.name: p for p in pipelines},
        nodes=nodes,
        topics=topics,
        control_topics={p.name: topics.control(p.name) for p in pipelines},
    )
