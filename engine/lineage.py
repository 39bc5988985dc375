"""Lineage carried by every record: who made it, for which request, from which records.

In memory a :class:`Lineage` is a small slotted object (the embedded bus passes it as is);
:meth:`Lineage.to_headers` / :meth:`Lineage.from_headers` turn it into Kafka-style
``(key, bytes)`` headers so the Kafka transport carries exactly the same information.

Record ids are deterministic: ``<request id>/<pipeline>/<origin>/<generation>``, where the
origin is ``<step>.inputs``, ``<step>.outputs``, ``inputs``, ``outputs`` or ``errors``.
Reprocessing a record after a crash therefore produces records with the same ids, which is
how duplicates are recognised downstream.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable, Mapping

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# Ids need uniqueness, not secrecy: a Mersenne generator seeded from the OS is ~20x cheaper
# per id than reading os.urandom every time.
_rand = random.Random(os.urandom(32)).getrandbits

H_REQUEST_ID = "flowcause-request-id"
H_TRACEPARENT = "traceparent"
H_PIPELINE = "flowcause-pipeline"
H_ORIGIN = "flowcause-origin"
H_GENERATION = "flowcause-generation"
H_PARENTS = "flowcause-parents"
H_VISITS = "flowcause-visits"


def new_request_id() -> str:
    return f"{_rand(128):032x}"


def new_trace_id() -> str:
    return f"{_rand(128):032x}"


def new_span_id() -> str:
    return f"{_rand(64):016x}"


def parse_traceparent(value: str) -> tuple[str, str]:
    """``(trace_id, span_id)`` of a W3C traceparent; ValueError when malformed."""
    match = _TRACEPARENT.match(value.strip().lower())
    if not match or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        raise ValueError(f"malformed W3C traceparent: {value!r}")
    return match.group(1), match.group(2)


class Lineage:
    """Who produced a record, for which request, and from which records."""

    __slots__ = (
        "request_id",
        "trace_id",
        "span_id",
        "pipeline",
        "origin",
        "generation",
        "parents",
        "visits",
    )

    def __init__(
        self,
        request_id: str,
        trace_id: str,
        span_id: str,
        pipeline: str,
        origin: str,
        generation: int = 0,
        parents: tuple[str, ...] = (),
        visits: Mapping[str, int] | None = None,
    ) -> None:
        self.request_id = request_id
        self.trace_id = trace_id
        self.span_id = span_id
        self.pipeline = pipeline
        self.origin = origin
        self.generation = generation
        self.parents = parents
        self.visits = visits

    @property
    def record_id(self) -> str:
        return f"{self.request_id}/{self.pipeline}/{self.origin}/{self.generation}"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"

    @property
    def step(self) -> str | None:
        """The producing step, or None for pipeline inputs/outputs and errors."""
        step, dot, _ = self.origin.rpartition(".")
        return step if dot else None

    def child(
        self,
        pipeline: str,
        origin: str,
        span_id: str,
        parents: tuple[str, ...],
        generation: int = 0,
        visits: Mapping[str, int] | None = None,
    ) -> Lineage:
        return Lineage(
            self.request_id, self.trace_id, span_id, pipeline, origin, generation, parents, visits
        )

    def to_headers(self) -> list[tuple[str, bytes]]:
        headers = [
            (H_REQUEST_ID, self.request_id.encode()),
            (H_TRACEPARENT, self.traceparent.encode()),
            (H_PIPELINE, self.pipeline.encode()),
            (H_ORIGIN, self.origin.encode()),
            (H_GENERATION, str(self.generation).encode()),
            (H_PARENTS, json.dumps(list(self.parents)).encode()),
        ]
        if self.visits:
            headers.append((H_VISITS, json.dumps(dict(self.visits)).encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes]]) -> Lineage:
        h = {k: v.decode() for k, v in headers}
        try:
            trace_id, span_id = parse_traceparent(h[H_TRACEPARENT])
            return cls(
                request_id=h[H_REQUEST_ID],
                trace_id=trace_id,
                span_id=span_id,
                pipeline=h[H_PIPELINE],
                origin=h[H_ORIGIN],
                generation=int(h.get(H_GENERATION, "0")),
                parents=tuple(json.loads(h.get(H_PARENTS, "[]"))),
                visits=json.loads(h[H_VISITS]) if H_VISITS in h else None,
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"record headers lack valid lineage: {exc}") from None

    def to_dict(self) -> dict[str, object]:
        return {
            "record_id": self.record_id,
            "request_id": self.request_id,
            "traceparent": self.traceparent,
            "pipeline": self.pipeline,
            "origin": self.origin,
            "step": self.step,
            "generation": self.generation,
            "parents": list(self.parents),
        }

    def __repr__(self) -> str:
        return f"Lineage({self.record_id}, parents={list(self.parents)})"
