"""Topic names, identical on the embedded bus and on Kafka (Seldon Core v2 layout)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """``<prefix>.<namespace>.<model|pipeline>.<name>.<inputs|outputs>`` and the errors topic.

    ``control`` topics (``<prefix>.<namespace>.pipeline.<name>.control``) are flowcause's own:
    they carry absence notices (a step that did not run for a request) so that joins waiting
    for that step resolve at once instead of timing out.
    """

    prefix: str = "seldon"
    namespace: str = "default"

    def model(self, step: str, port: str) -> str:
        return f"{self.prefix}.{self.namespace}.model.{step}.{port}"

    def pipeline(self, name: str, port: str) -> str:
        return f"{self.prefix}.{self.namespace}.pipeline.{name}.{port}"

    def control(self, pipeline: str) -> str:
        return f"{self.prefix}.{self.namespace}.pipeline.{pipeline}.control"

    @property
    def errors(self) -> str:
        return f"{self.prefix}.{self.namespace}.errors.errors"
