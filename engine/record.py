"""Records: what moves on a topic — tensors (or an error, or an absence notice) plus lineage."""

from __future__ import annotations

import json
from typing import Any

from engine.lineage import Lineage
from engine.tensors import Tensor, TensorError


class Record:
    """One message on a topic.

    ``kind`` is ``data`` (tensors), ``error`` (``error`` holds the message, on the errors
    topic) or ``absent`` (a control notice: the origin produced nothing for this request and
    generation, ``error`` holds the reason ``skipped`` or ``error: ...``).
    """

    __slots__ = ("lineage", "tensors", "kind", "error", "source")

    def __init__(
        self,
        lineage: Lineage,
        tensors: tuple[Tensor, ...] = (),
        kind: str = "data",
        error: str | None = None,
    ) -> None:
        self.lineage = lineage
        self.tensors = tensors
        self.kind = kind
        self.error = error
        # Where a transport read it from (Kafka: (topic, partition, offset)); None in memory.
        self.source: tuple[str, int, int] | None = None

    def tensor(self, name: str) -> Tensor | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.tensors:
            out["tensors"] = [t.to_json() for t in self.tensors]
        if self.error is not None:
            out["error"] = self.error
        return out

    def encode(self) -> tuple[bytes, list[tuple[str, bytes]]]:
        """Value bytes and Kafka headers."""
        return json.dumps(self.to_json(), separators=(",", ":")).encode(), self.lineage.to_headers()

    @classmethod
    def decode(cls, value: bytes, headers: list[tuple[str, bytes]]) -> Record:
        """Inverse of :meth:`encode`; ValueError (incl. TensorError) when undecodable."""
        lineage = Lineage.from_headers(headers)
        try:
            body = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"record value is not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("kind") not in ("data", "error", "absent"):
            raise ValueError("record value lacks a valid 'kind'")
        try:
            tensors = tuple(Tensor.from_json(t) for t in body.get("tensors", []))
        except TensorError as exc:
            raise ValueError(str(exc)) from None
        return cls(lineage, tensors, body["kind"], body.get("error"))

    def __repr__(self) -> str:
        what = ", ".join(t.name for t in self.tensors) if self.kind == "data" else self.error
        return f"Record({self.kind}, {self.lineage.record_id}, {what})"
