"""Runs conformance cases on a transport and shows what crossed its topics."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from engine.embedded import EmbeddedBus
from engine.engine import Engine
from engine.record import Record
from engine.spec import load_pipelines


def transports() -> list[str]:
    """The transports every conformance case runs on."""
    return ["embedded"]


class Harness:
    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.request = request
        self._log: dict[str, list[Record]] = defaultdict(list)

    def _tap(self, topic: str, record: Record) -> None:
        self._log[topic].append(record)

    @contextlib.asynccontextmanager
    async def engine(self, case: Mapping[str, Any], steps: Mapping[str, Any]
                     ) -> AsyncIterator[Engine]:
        pipelines = load_pipelines(case["pipelines"])
        bus = EmbeddedBus()
        bus.tap(self._tap)
        engine = Engine(pipelines, steps, transport=bus, models=case.get("models"))
        async with engine:
            yield engine

    async def settle(self) -> None:
        """Wait until what was published so far can be seen in the topic log."""

    def records(self, topic: str, request_id: str) -> list[Record]:
        return [r for r in self._log.get(topic, ()) if r.lineage.request_id == request_id]

    def all_records(self, request_id: str) -> list[Record]:
        return [r for rs in self._log.values() for r in rs if r.lineage.request_id == request_id]
