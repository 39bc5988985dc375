"""Lineage carried by every record: who made it, for which request, from which records.

In memory a :class:`Lineage` is a small slotted object (the embedded bus passes it as is);
:meth:`Lineage.to_headers` / :meth:`Lineage.from_headers` turn it into Kafka-style
``(key, bytes)`` headers so the Kafka transport carries exactly the same information.

The W3C ``traceparent``'s *sampled* flag travels with the lineage (:attr:`Lineage.sampled`):
a request's own lineage takes it from the client's traceparent, or from the engine's root
sampler when there is none, and every record made from it keeps it, so that one decision
holds for the whole request across steps, joins, chained pipelines and processes. The
client's W3C ``tracestate`` (vendors' entries) travels the same way, unchanged.

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
from collections.abc import Callable, Iterable, Mapping

# W3C Trace Context: version, trace id, parent id, flags; versions after 00 may add fields
# (OpenTelemetry's pattern, whose ``$`` also takes one final newline)
_TRACEPARENT = re.compile(
    r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$")
_TRACEPARENT_MAX = 512  # longer values are refused, as OpenTelemetry's propagator does
_TRACEPARENT_OURS = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_ODD = frozenset("13579bdf")  # the second hex digit of the flags, with the sampled bit set
_json_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
# Ids need uniqueness, not secrecy: a Mersenne generator seeded from the OS. Its getrandbits
# is ~10x cheaper than os.urandom, but per finished hex id only 1.1-1.4x (128 bits) and
# 1.7-1.8x (64 bits): formatting dominates (timeit, 2026-11-27, docs/engine.md). A forked
# process gets a copy of its state, so it is seeded again there: else parent and child would
# make the same ids.
_generator = random.Random(os.urandom(32))
_rand = _generator.getrandbits
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=lambda: _generator.seed(os.urandom(32)))

H_REQUEST_ID = "flowcause-request-id"
H_TRACEPARENT = "traceparent"
H_PIPELINE = "flowcause-pipeline"
H_ORIGIN = "flowcause-origin"
H_GENERATION = "flowcause-generation"
H_PARENTS = "flowcause-parents"
H_VISITS = "flowcause-visits"
H_TRACESTATE = "tracestate"
TRACESTATE_MAX = 512  # W3C: vendors' entries beyond this may be dropped; we drop a longer one


def new_request_id() -> str:
    return f"{_rand(128):032x}"


def new_trace_id() -> str:
    return f"{_rand(128):032x}"


def new_span_id() -> str:
    return f"{_rand(64):016x}"


def record_id_of(request_id: str, pipeline: str, origin: str, generation: int) -> str:
    """The id of the record with this lineage (see the module docstring)."""
    return f"{request_id}/{pipeline}/{origin}/{generation}"


def parse_traceparent(value: str) -> tuple[str, str, bool]:
    """``(trace_id, span_id, sampled)`` of a W3C traceparent; ValueError when malformed.

    Accepts what OpenTelemetry's W3C propagator accepts (version 00 exactly; a later version
    with fields after the flags, which are ignored; not version ff, nor all-zero ids), and
    upper-case hex digits too, read as lower case."""
    match = _TRACEPARENT.match(value.lower()) if len(value) <= _TRACEPARENT_MAX else None
    if (not match or match.group(1) == "ff" or (match.group(1) == "00" and match.group(5))
            or match.group(2) == _ZERO_TRACE or match.group(3) == _ZERO_SPAN):
        raise ValueError(f"malformed W3C traceparent: {value!r}")
    return match.group(2), match.group(3), match.group(4)[1] in _ODD


def parent_or_sampled(trace_id: str, parent_sampled: bool | None) -> bool:
    """The default root sampler: follow the client's traceparent, else sample (OpenTelemetry's
    ``parentbased_always_on``)."""
    return True if parent_sampled is None else parent_sampled


# (trace id, the client's sampled flag or None without a traceparent) -> sampled
Sampler = Callable[[str, bool | None], bool]


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
        "sampled",
        "tracestate",
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
        sampled: bool = True,
        tracestate: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.trace_id = trace_id
        self.span_id = span_id
        self.pipeline = pipeline
        self.origin = origin
        self.generation = generation
        self.parents = parents
        self.visits = visits
        self.sampled = sampled  # the W3C traceparent's sampled flag
        self.tracestate = tracestate  # the client's W3C tracestate, passed on as it came

    @property
    def record_id(self) -> str:
        return record_id_of(self.request_id, self.pipeline, self.origin, self.generation)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

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
            self.request_id, self.trace_id, span_id, pipeline, origin, generation, parents, visits,
            self.sampled, self.tracestate,
        )

    def to_headers(self) -> list[tuple[str, bytes]]:
        parents = self.parents
        headers = [
            (H_REQUEST_ID, self.request_id.encode()),
            (H_TRACEPARENT, self.traceparent.encode()),
            (H_PIPELINE, self.pipeline.encode()),
            (H_ORIGIN, self.origin.encode()),
            (H_GENERATION, b"0" if not self.generation else str(self.generation).encode()),
            # The JSON list json.dumps writes, without its per-call overhead (a hot path).
            (H_PARENTS, f"[{', '.join(map(_json_string, parents))}]".encode() if parents else b"[]"),
        ]
        if self.visits:
            headers.append((H_VISITS, json.dumps(dict(self.visits)).encode()))
        if self.tracestate:
            headers.append((H_TRACESTATE, self.tracestate.encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes]]) -> Lineage:
        h = dict(headers)
        try:
            traceparent = h[H_TRACEPARENT].decode()
            trace_id, span_id = traceparent[3:35], traceparent[36:52]
            if (_TRACEPARENT_OURS.fullmatch(traceparent) is None  # not as to_headers writes it
                    or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN):
                trace_id, span_id, sampled = parse_traceparent(traceparent)
            else:
                sampled = traceparent[54] in _ODD
            parents = h.get(H_PARENTS, b"[]")
            visits = h.get(H_VISITS)
            tracestate = h.get(H_TRACESTATE)
            generation = h.get(H_GENERATION, b"0")
            return cls(  # positional: several times cheaper than keywords, and this is hot
                h[H_REQUEST_ID].decode(), trace_id, span_id, h[H_PIPELINE].decode(),
                h[H_ORIGIN].decode(), 0 if generation == b"0" else int(generation),
                _parse_parents(parents), _parse_visits(visits) if visits is not None else None,
                sampled, tracestate.decode() if tracestate is not None else None,
            )
        except (KeyError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError included
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


def _parse_visits(raw: bytes) -> dict[str, int]:
    """The visits header (cycles): a JSON object of step name -> visits so far."""
    visits = json.loads(raw)
    if not isinstance(visits, dict) or not all(
            type(v) is int and v >= 0 for v in visits.values()):
        raise ValueError("flowcause-visits is not a JSON object of non-negative integers")
    return visits


def _parse_parents(raw: bytes) -> tuple[str, ...]:
    """The parents header; one parent without escapes (the usual case) skips the JSON parser."""
    if raw == b"[]":
        return ()
    inner = raw[2:-2]
    if raw[:2] == b'["' and raw[-2:] == b'"]' and b'"' not in inner and b"\\" not in inner:
        return (inner.decode(),)
    parents = json.loads(raw)
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ValueError("flowcause-parents is not a JSON list of strings")
    return tuple(parents)
