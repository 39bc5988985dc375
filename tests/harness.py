"""Runs conformance cases on a transport and shows what crossed its topics."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from engine.embedded import EmbeddedBus
from engine.engine import Engine
from engine.record import Record
from engine.spec import load_pipelines
from engine.topics import Topics


def transports() -> list[Any]:
    """The transports every conformance case runs on, as fixture params: Kafka's carry the
    ``kafka`` marker (the broker is asked for inside the harness, so conftest cannot see it
    among the test's fixtures), so that ``-m "not kafka"`` leaves them out."""
    return ["embedded", pytest.param("kafka", marks=pytest.mark.kafka)]


class Harness:
    """One test's engine on one transport, plus a log of every record on its topics (unless
    it runs the default configuration, ``observe=False``)."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, observe: bool = True) -> None:
        """``observe=False``: the engine's default configuration, which nothing else reads —
        no tap on the embedded bus, ``step_inputs=False`` on Kafka and no topic reader — so a
        step whose inputs topic no step reads takes the short path in ``StepProcessor.fire``.
        Results are then seen only through the engine (``infer``); the topic log is closed."""
        self.kind = kind
        self.request = request
        self.observe = observe
        self._log: dict[str, list[Record]] = defaultdict(list)
        self._reader: Any = None

    def _tap(self, topic: str, record: Record) -> None:
        self._log[topic].append(record)

    @contextlib.asynccontextmanager
    async def engine(self, case: Mapping[str, Any], steps: Mapping[str, Any]
                     ) -> AsyncIterator[Engine]:
        pipelines = load_pipelines(case["pipelines"])
        if self.kind == "embedded":
            bus = EmbeddedBus()
            if self.observe:
                bus.tap(self._tap)
            async with Engine(pipelines, steps, transport=bus, models=case.get("models")) as eng:
                self._check_configuration(case, eng)
                yield eng
            return
        from engine.kafka import KafkaTransport

        bootstrap = self.request.getfixturevalue("kafka_bootstrap")
        topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}")
        # Observed, it reads every topic, like the embedded bus's tap: so steps' inputs are
        # written too. Otherwise the transport's default (step_inputs=False).
        transport = KafkaTransport(bootstrap, group_id=f"{topics.prefix}-engine", partitions=2,
                                   step_inputs=self.observe)
        engine = Engine(pipelines, steps, transport=transport, topics=topics,
                        models=case.get("models"))
        async with engine:
            self._check_configuration(case, engine)
            if not self.observe:
                yield engine
                return
            self._reader = TopicReader(bootstrap, transport._topics, transport.partitions,
                                       self._tap)
            await self._reader.start()
            try:
                yield engine
            finally:
                await self._reader.stop()

    def _check_configuration(self, case: Mapping[str, Any], eng: Engine) -> None:
        """Unobserved, the transport must leave some step's inputs topic unwritten: else no
        step takes the short path and the default-path run would test nothing new."""
        if self.observe:
            return
        steps = {s["name"] for p in case["pipelines"] for s in p["spec"]["steps"]}
        short = [s for s in steps if not eng.transport.wants(eng.topics.model(s, "inputs"))]
        assert short, (f"default configuration on {self.kind}: every step's inputs topic is "
                       "written, so no step takes the short path of StepProcessor.fire")

    def _observed(self) -> None:
        if not self.observe:
            raise RuntimeError("this harness runs the default configuration (observe=False): "
                               "it keeps no topic log; check results through the engine")

    async def settle(self) -> None:
        """Wait until what was published so far can be seen in the topic log."""
        self._observed()
        if self._reader is not None:
            await self._reader.catch_up()

    def records(self, topic: str, request_id: str) -> list[Record]:
        self._observed()
        return [r for r in self._log.get(topic, ()) if r.lineage.request_id == request_id]

    def all_records(self, request_id: str) -> list[Record]:
        self._observed()
        return [r for rs in self._log.values() for r in rs if r.lineage.request_id == request_id]


class TopicReader:
    """Reads every partition of the given Kafka topics from the start into a callback."""

    def __init__(self, bootstrap: str, topics: list[str], partitions: int, sink: Any) -> None:
        from aiokafka import AIOKafkaConsumer

        self.topics = topics
        self.partitions = partitions
        self.sink = sink
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                         enable_auto_commit=False)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import TopicPartition

        await self.consumer.start()
        tps = [TopicPartition(t, p) for t in self.topics for p in range(self.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=20)
            for messages in batches.values():
                for msg in messages:
                    self.sink(msg.topic, Record.decode(msg.value, list(msg.headers)))

    async def catch_up(self, timeout: float = 10.0) -> None:
        await asyncio.sleep(0.3)  # let the engine's last outputs reach the broker
        tps = list(self.consumer.assignment())
        ends = await self.consumer.end_offsets(tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while [tp for tp, end in ends.items() if await self.consumer.position(tp) < end]:
            if loop.time() > deadline:
                raise TimeoutError("topic log did not catch up")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()
