"""The reference grammar of Seldon Core v2 pipelines.

``step``, ``step.outputs``, ``step.outputs.T``, ``step.inputs[.T]``, ``PIPELINE[.inputs[.T]]``,
``PIPELINE.outputs[.T]`` and ``PIPELINE.step.S[.(inputs|outputs)[.T]]``. A bare step means
its outputs; a bare pipeline name means its inputs inside that pipeline, but in another
pipeline's ``spec.input`` its outputs (as does a bare ``PIPELINE.step.S``): Seldon expands
external inputs so (``updateExternalInputSteps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from engine.spec import Pipeline

Port = Literal["inputs", "outputs"]
PORTS = ("inputs", "outputs")


class RefError(ValueError):
    """A reference that does not parse or names nothing that exists."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A resolved reference: a port of a step (``step`` set) or of a pipeline."""

    pipeline: str
    step: str | None
    port: Port
    tensor: str | None = None

    @property
    def origin(self) -> str:
        """The lineage origin of records on this port (``step.port`` or ``port``)."""
        return f"{self.step}.{self.port}" if self.step else self.port

    def with_tensor(self, tensor: str) -> Ref:
        return Ref(self.pipeline, self.step, self.port, tensor)

    def whole(self) -> Ref:
        return Ref(self.pipeline, self.step, self.port)

    def __str__(self) -> str:
        base = (
            f"{self.pipeline}.step.{self.step}.{self.port}"
            if self.step
            else f"{self.pipeline}.{self.port}"
        )
        return f"{base}.{self.tensor}" if self.tensor else base


def parse_ref(text: str, pipeline: Pipeline, external: bool = False) -> Ref:
    """Resolve ``text`` as written in ``pipeline``.

    With ``external`` (``spec.input.externalInputs/externalTriggers``) the first segment names
    another pipeline; otherwise it names this pipeline or one of its steps.
    """
    if not isinstance(text, str) or not text.strip():
        raise RefError("empty reference")
    parts = text.split(".")
    if any(not p for p in parts):
        raise RefError(f"bad reference form {text!r}: empty segment")
    step_names = {s.name for s in pipeline.steps}
    head = parts[0]
    if external or head == pipeline.name:
        return _pipeline_ref(text, parts, external)
    if head not in step_names:
        raise RefError(f"reference {text!r} names a step that does not exist: {head!r}")
    return _port_ref(text, pipeline.name, head, parts[1:], default="outputs")


def _pipeline_ref(text: str, parts: list[str], external: bool) -> Ref:
    name, rest = parts[0], parts[1:]
    if rest[:1] == ["step"]:
        if len(rest) < 2:
            raise RefError(f"bad reference form {text!r}: 'step' needs a step name")
        return _port_ref(text, name, rest[1], rest[2:], default="outputs" if external else None)
    return _port_ref(text, name, None, rest, default="outputs" if external else "inputs")


def _port_ref(
    text: str, pipeline: str, step: str | None, rest: list[str], default: Port | None
) -> Ref:
    if not rest:
        if default is None:
            raise RefError(f"bad reference form {text!r}: expected inputs or outputs")
        return Ref(pipeline, step, default)
    if rest[0] not in PORTS:
        raise RefError(
            f"bad reference form {text!r}: expected 'inputs' or 'outputs' after "
            f"{step or pipeline!r}, got {rest[0]!r}"
        )
    if len(rest) > 2:
        raise RefError(f"bad reference form {text!r}: too many segments")
    port: Port = "inputs" if rest[0] == "inputs" else "outputs"
    return Ref(pipeline, step, port, rest[1] if len(rest) == 2 else None)
