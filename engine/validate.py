"""Rules a pipeline must satisfy before it runs; each problem names pipeline, step, reference
and (when the YAML gives it) file and line."""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from engine.refs import Ref, RefError, parse_ref
from engine.spec import JoinType, Pipeline


def _resolve(
    pipeline: Pipeline, text: object, external: bool, where: str, owner: str
) -> tuple[Ref | None, str | None]:
    """A parsed reference, or the problem with it."""
    if not isinstance(text, str) or not text.strip():
        return None, f"{where}: {owner}: empty reference"
    try:
        ref = parse_ref(text, pipeline, external=external)
    except RefError as exc:
        return None, f"{where}: {owner}: {exc}"
    own = ref.pipeline == pipeline.name
    if external and own:
        return None, (f"{where}: {owner}: reference {text!r} names the pipeline itself; a pipeline "
                      "cannot take its own records as external inputs")
    if own and ref.step is not None and ref.step not in {s.name for s in pipeline.steps}:
        return None, f"{where}: {owner}: reference {text!r} names a step that does not exist"
    return ref, None


def pipeline_problems(pipeline: Pipeline) -> list[str]:
    """Every rule the pipeline breaks, as readable messages (empty when it is valid)."""
    p = pipeline
    problems: list[str] = []
    head = f"pipeline {p.name!r}"
    problems += _name_problems(p.name, p.where("metadata", "name"), head)
    if not p.steps:
        problems.append(f"{p.where('spec')}: {head}: has no steps")
    seen: set[str] = set()
    for i, step in enumerate(p.steps):
        owner = f"{head}: step {step.name!r}"
        problems += _name_problems(step.name, p.where("spec", "steps", i, "name"), owner)
        if step.name == p.name:
            problems.append(f"{p.where('spec', 'steps', i, 'name')}: {owner}: named like the pipeline")
        if step.name in seen:
            problems.append(f"{p.where('spec', 'steps', i, 'name')}: {owner}: two steps with the same name")
        seen.add(step.name)
        input_steps: set[str] = set()
        for field, refs in (("inputs", step.inputs), ("triggers", step.triggers)):
            for j, text in enumerate(refs):
                where = p.where("spec", "steps", i, field, j)
                ref, problem = _resolve(p, text, False, where, f"{owner}: {field[:-1]} {text!r}")
                if problem:
                    problems.append(problem)
                    continue
                assert ref is not None
                if ref.step is not None:
                    if field == "inputs":
                        input_steps.add(ref.step)
                    elif ref.step in input_steps:
                        problems.append(
                            f"{where}: {owner}: trigger {text!r}: step {ref.step!r} is both in "
                            "inputs and in triggers"
                        )
        problems += _tensor_map_problems(p, step.tensor_map,
                                         [*(step.inputs or [f"{p.name}.inputs"]), *step.triggers],
                                         p.where("spec", "steps", i, "tensorMap"), owner, False)
        if step.inputs_join_type is JoinType.INNER:
            problems += _name_clashes(p, step.inputs, step.tensor_map,
                                      p.where("spec", "steps", i, "inputs"), owner)
    if p.input is not None:
        owner = f"{head}: spec.input"
        if not p.input.external_inputs:
            problems.append(f"{p.where('spec', 'input')}: {owner}: externalInputs is empty")
        for field, refs in (
            ("externalInputs", p.input.external_inputs),
            ("externalTriggers", p.input.external_triggers),
        ):
            for j, text in enumerate(refs):
                where = p.where("spec", "input", field, j)
                _, problem = _resolve(p, text, True, where, f"{owner}: {field} {text!r}")
                if problem:
                    problems.append(problem)
        problems += _tensor_map_problems(
            p, p.input.tensor_map, [*p.input.external_inputs, *p.input.external_triggers],
            p.where("spec", "input", "tensorMap"), owner, True)
    if p.steps and not (p.output and p.output.steps) and not sink_steps(p):
        problems.append(f"{p.where('spec')}: {head}: every step is read by another step, so it "
                        "has no default output (the steps no other step reads): list the output "
                        "steps in spec.output.steps")
    if p.output is not None:
        for j, text in enumerate(p.output.steps):  # step, step.outputs[.T], step.inputs[.T]
            _, problem = _resolve(p, text, False, p.where("spec", "output", "steps", j),
                                  f"{head}: output step {text!r}")
            if problem:
                problems.append(problem)
        problems += _tensor_map_problems(p, p.output.tensor_map, p.output.steps or sink_steps(p),
                                         p.where("spec", "output", "tensorMap"),
                                         f"{head}: spec.output", False)
    cycle = None if p.spec.allow_cycles else step_cycle(p)
    if cycle is not None:
        problems.append(f"{p.where('spec', 'steps')}: {head}: has a cycle "
                        f"({' -> '.join(cycle)}); set allowCycles: true to allow it")
    return problems


def step_cycle(pipeline: Pipeline) -> list[str] | None:
    """The steps along a cycle of ``pipeline``'s step graph (inputs and triggers), first
    step repeated at the end; None if it has none (references that do not resolve are left
    out: :func:`pipeline_problems` reports them)."""
    deps = nx.DiGraph()
    for step in pipeline.steps:
        deps.add_node(step.name)
        for text in (*step.inputs, *step.triggers):
            try:
                ref = parse_ref(text, pipeline) if isinstance(text, str) else None
            except RefError:
                continue
            if ref is not None and ref.step is not None and ref.pipeline == pipeline.name:
                deps.add_edge(ref.step, step.name)
    try:
        cycle = nx.find_cycle(deps)
    except nx.NetworkXNoCycle:
        return None
    return [*(u for u, _ in cycle), cycle[0][0]]


def _name_problems(name: str, where: str, owner: str) -> list[str]:
    """A pipeline's or step's name: references are split at dots, so a name cannot hold one.
    (Seldon asks for DNS-1123 labels, which also forbid underscores; the published
    insurance-claims pipeline has them, so they are accepted here.)"""
    if not name.strip():
        return [f"{where}: {owner}: empty name"]
    if "." in name:
        return [f"{where}: {owner}: a name cannot contain '.' (references are split at dots)"]
    return []


def sink_steps(p: Pipeline) -> list[str]:
    """The steps no other step consumes: the output when ``output.steps`` is not given."""
    consumed: set[str | None] = set()
    for step in p.steps:
        for text in [*step.inputs, *step.triggers]:
            try:
                consumed.add(parse_ref(text, p).step)
            except RefError:
                continue  # reported by the reference checks
    return [s.name for s in p.steps if s.name not in consumed]


def _name_clashes(p: Pipeline, inputs: list[str], tensor_map: dict[str, str], where: str,
                  owner: str) -> list[str]:
    """Input references that name their tensors and would give the step two tensors of one
    name (after tensorMap). Only for an inner join, where every input comes: with ``any`` or
    ``outer`` routed branches renamed alike are a way to take whichever comes. The engine
    refuses a clash at run time too (InputNameClash), whatever the join."""
    renames: dict[Ref, str] = {}
    for key, new_name in tensor_map.items():
        try:
            renames[parse_ref(key, p)] = new_name
        except RefError:
            continue  # reported by the tensorMap checks
    given: dict[str, str] = {}
    problems = []
    for text in inputs:
        try:
            ref = parse_ref(text, p)
        except RefError:
            continue  # reported by the reference checks
        if ref.tensor is None:
            continue
        name = renames.get(ref, ref.tensor)
        if name in given and given[name] != text:
            problems.append(f"{where}: {owner}: inputs {given[name]!r} and {text!r} both give the "
                            f"step a tensor named {name!r}; rename one with tensorMap")
        given.setdefault(name, text)
    return problems


def _tensor_map_problems(
    p: Pipeline, tensor_map: dict[str, str], refs: list[str], where: str, owner: str,
    external: bool,
) -> list[str]:
    problems = []
    named: dict[Ref, set[str] | None] = {}  # port -> the tensors taken from it (None: all)
    for text in refs:
        try:
            ref = parse_ref(text, p, external=external)
        except RefError:
            continue  # reported by the reference checks
        taken = named.setdefault(ref.whole(), set())
        if ref.tensor is None or taken is None:
            named[ref.whole()] = None
        else:
            taken.add(ref.tensor)
    for key, new_name in tensor_map.items():
        try:
            ref = parse_ref(key, p, external=external)
        except RefError as exc:
            problems.append(f"{where}: {owner}: tensorMap key {key!r}: {exc}")
            continue
        if ref.tensor is None:
            problems.append(f"{where}: {owner}: tensorMap key {key!r} must name a tensor")
        elif ref.whole() not in named:
            problems.append(f"{where}: {owner}: tensorMap key {key!r} is not among its inputs")
        elif (taken := named[ref.whole()]) is not None and ref.tensor not in taken:
            problems.append(f"{where}: {owner}: tensorMap key {key!r} names a tensor it does not "
                            f"take from {str(ref.whole())!r} (only {', '.join(sorted(taken))})")
        if not new_name:
            problems.append(f"{where}: {owner}: tensorMap {key!r} maps to an empty name")
    return problems


def validate(pipelines: Iterable[Pipeline]) -> list[str]:
    """Problems of each pipeline, plus names used twice across them."""
    problems: list[str] = []
    names: set[str] = set()
    for p in pipelines:
        if p.name in names:
            problems.append(f"{p.where('metadata', 'name')}: pipeline {p.name!r} is defined twice")
        names.add(p.name)
        problems += pipeline_problems(p)
    return problems


def first_problem(problems: list[str]) -> str:
    """The first of ``problems`` on one line, with how many more ``flowcause validate``
    lists (for commands that stop at a spec that does not validate)."""
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more problem{'s' * (more != 1)}: flowcause validate "
                          "lists them)" if more else "")
