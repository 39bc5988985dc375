"""Seldon Core v2 ``Pipeline`` specs: loading YAML unmodified into typed models.

Only ``yaml.safe_load`` reads the data. Line numbers for error messages come from a second,
equally safe pass (``yaml.compose``) that maps each path in the document to its line.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_JOIN_WINDOW_MS = 60_000
API_VERSION = "mlops.seldon.io/v1alpha1"
KIND = "Pipeline"

YamlPath = tuple[str | int, ...]


class JoinType(StrEnum):
    INNER = "inner"
    OUTER = "outer"
    ANY = "any"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class Batch(_Model):
    size: int | None = Field(default=None, ge=1)
    window_ms: int | None = Field(default=None, alias="windowMs", ge=0)


class Step(_Model):
    name: str
    inputs: list[str] = Field(default_factory=list)
    tensor_map: dict[str, str] = Field(default_factory=dict, alias="tensorMap")
    inputs_join_type: JoinType = Field(default=JoinType.INNER, alias="inputsJoinType")
    triggers: list[str] = Field(default_factory=list)
    triggers_join_type: JoinType = Field(default=JoinType.INNER, alias="triggersJoinType")
    join_window_ms: int | None = Field(default=None, alias="joinWindowMs", ge=0)
    batch: Batch | None = None


class PipelineInput(_Model):
    external_inputs: list[str] = Field(default_factory=list, alias="externalInputs")
    external_triggers: list[str] = Field(default_factory=list, alias="externalTriggers")
    join_type: JoinType = Field(default=JoinType.INNER, alias="joinType")
    triggers_join_type: JoinType = Field(default=JoinType.INNER, alias="triggersJoinType")
    tensor_map: dict[str, str] = Field(default_factory=dict, alias="tensorMap")
    join_window_ms: int | None = Field(default=None, alias="joinWindowMs", ge=0)


class PipelineOutput(_Model):
    steps: list[str] = Field(default_factory=list)
    steps_join: JoinType = Field(default=JoinType.INNER, alias="stepsJoin")
    tensor_map: dict[str, str] = Field(default_factory=dict, alias="tensorMap")
    join_window_ms: int | None = Field(default=None, alias="joinWindowMs", ge=0)


class PipelineBody(_Model):
    steps: list[Step] = Field(default_factory=list)
    input: PipelineInput | None = None
    output: PipelineOutput | None = None
    allow_cycles: bool = Field(default=False, alias="allowCycles")
    max_step_revisits: int | None = Field(default=None, alias="maxStepRevisits", ge=0)
    data_flow: dict[str, Any] | None = Field(default=None, alias="dataflow")


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    namespace: str | None = None


class Source(BaseModel):
    """Where a pipeline came from, to point error messages at a file and line."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    file: str | None = None
    lines: dict[YamlPath, int] = Field(default_factory=dict)

    def where(self, *path: str | int) -> str:
        """``file:line`` for the deepest known prefix of ``path`` (or just the file)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return f"{self.file or '<spec>'}:{line}"
        return self.file or "<spec>"


class Pipeline(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)
    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: Metadata
    spec: PipelineBody
    source: Source = Field(default_factory=Source, exclude=True)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def steps(self) -> list[Step]:
        return self.spec.steps

    @property
    def input(self) -> PipelineInput | None:
        return self.spec.input

    @property
    def output(self) -> PipelineOutput | None:
        return self.spec.output

    def step(self, name: str) -> Step:
        for step in self.spec.steps:
            if step.name == name:
                return step
        raise KeyError(f"pipeline {self.name!r} has no step {name!r}")

    def where(self, *path: str | int) -> str:
        return self.source.where(*path)


class SpecError(ValueError):
    """A pipeline document that cannot be turned into a :class:`Pipeline` (one line per
    problem)."""

    def one_line(self) -> str:
        """The problems on one line, ``; ``-separated."""
        return "; ".join(line.strip() for line in str(self).splitlines() if line.strip())


def _line_index(node: yaml.Node, path: YamlPath, out: dict[YamlPath, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                out[(*path, key.value)] = key.start_mark.line + 1
                _line_index(value, (*path, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def _from_document(doc: Any, source: Source) -> Pipeline:
    where = source.where()
    if not isinstance(doc, dict):
        raise SpecError(f"{where}: a pipeline document must be a mapping, got {type(doc).__name__}")
    api_version = doc.get("apiVersion", API_VERSION)
    kind = doc.get("kind", KIND)
    if api_version != API_VERSION or kind != KIND:
        raise SpecError(
            f"{where}: expected apiVersion {API_VERSION} kind {KIND}, got {api_version} {kind}"
        )
    metadata = doc.get("metadata")
    name = metadata.get("name", "<unnamed>") if isinstance(metadata, dict) else "<unnamed>"
    try:
        return Pipeline.model_validate({**doc, "source": source})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            problems.append(
                f"{source.where(*loc)}: pipeline {name!r}: "
                f"{'.'.join(str(p) for p in loc)}: {err['msg']}"
            )
        raise SpecError("\n".join(problems)) from None


def _yaml_problem(file: str, exc: yaml.YAMLError) -> str:
    """One line, ``file:line:column: invalid YAML: problem (context)``, not PyYAML's
    several lines naming ``<unicode string>``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return f"{file}: invalid YAML: {' '.join(str(exc).split())}"
    context = getattr(exc, "context", None)
    return (f"{file}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}"
            f"{f' ({context})' if context else ''}")


def parse_pipelines(text: str, file: str | None = None) -> list[Pipeline]:
    """Parse every ``Pipeline`` document in a YAML string (``---``-separated)."""
    try:
        docs = list(yaml.safe_load_all(text))
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise SpecError(_yaml_problem(file or "<spec>", exc)) from None
    pipelines = []
    docs_and_nodes = [(d, n) for d, n in zip(docs, nodes, strict=True) if d is not None]
    if not docs_and_nodes:
        raise SpecError(f"{file or '<spec>'}: holds no Pipeline document (it is empty)")
    for doc, node in docs_and_nodes:
        lines: dict[YamlPath, int] = {}
        _line_index(node, (), lines)
        pipelines.append(_from_document(doc, Source(file=file, lines=lines)))
    return pipelines


def load_pipelines(source: str | Path | dict[str, Any] | Iterable[Any]) -> list[Pipeline]:
    """Load pipelines from a file path, a YAML string, a mapping or a list of mappings."""
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read pipeline file {path}: {exc.strerror}") from None
        return parse_pipelines(text, file=str(path))
    if isinstance(source, str):
        return parse_pipelines(source)
    if isinstance(source, dict):
        return [_from_document(source, Source())]
    return [p if isinstance(p, Pipeline) else _from_document(p, Source()) for p in source]
