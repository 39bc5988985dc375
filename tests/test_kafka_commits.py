"""The Kafka transport's at-least-once bookkeeping, with stand-ins for the aiokafka clients.

The work loop does not wait for the broker, so what keeps it at-least-once is the order of
things: offsets are committed only after every output produced before them is
acknowledged, never past a record still held, and never after a produce failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import ConsumerRecord

from engine.kafka import BATCH_BYTES, KafkaTransport
from engine.lineage import Lineage
from engine.record import Record
from engine.tensors import Tensor

IN = TopicPartition("t.in", 0)


class Producer:
    """Batches are built for real; their acknowledgements are the test's to give."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[None]] = []
        self.records = 0

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(BATCH_BYTES, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int
                         ) -> asyncio.Future[None]:
        self.records += builder.record_count()
        self.acks.append(asyncio.get_running_loop().create_future())
        return self.acks[-1]

    async def stop(self) -> None:
        return None


class Consumer:
    def __init__(self) -> None:
        self.polls: list[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = []
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        if self.polls:
            return self.polls.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    async def stop(self) -> None:
        return None


class Host:
    def __init__(self) -> None:
        self.held: list[Record] = []

    def held_records(self) -> Iterator[Record]:
        return iter(self.held)

    def forget_requests(self, keep: Callable[[str], bool]) -> None:
        return None

    def running_tasks(self) -> list[asyncio.Task[Any]]:
        return []


def message(offset: int) -> ConsumerRecord[bytes, bytes]:
    lin = Lineage(f"r{offset}", "a" * 32, "b" * 16, "p", "inputs")
    value, headers = Record(lin, (Tensor.from_array("x", np.array([float(offset)])),)).encode()
    return ConsumerRecord(IN.topic, IN.partition, offset, 0, 0, None, value, None, 0, len(value),
                          tuple(headers))


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def transport(host: Host) -> tuple[KafkaTransport, Producer, Consumer, list[Record]]:
    """A transport relaying ``t.in`` to ``t.out``, on stand-in clients; returns what it read."""
    kafka = KafkaTransport("unused", partitions=1, commit_interval_ms=0, poll_ms=5)
    seen: list[Record] = []

    def relay(record: Record) -> None:
        seen.append(record)
        kafka.publish("t.out", record)

    kafka.subscribe(IN.topic, relay)
    kafka.prepare([IN.topic, "t.out", "t.errors.errors"], host)
    producer, consumer = Producer(), Consumer()
    kafka._producer, kafka._work_consumer = producer, consumer  # type: ignore[assignment]
    kafka._start_tasks()
    return kafka, producer, consumer, seen


def test_offsets_are_committed_only_once_the_outputs_are_acknowledged() -> None:
    async def main() -> None:
        kafka, producer, consumer, _ = transport(Host())
        consumer.polls.append({IN: [message(0), message(1), message(2)]})
        await until(lambda: producer.records == 3)
        consumer.polls.append({IN: [message(3)]})  # the loop goes on without waiting
        await until(lambda: producer.records == 4)
        await asyncio.sleep(0.05)
        assert consumer.commits == [], "nothing acknowledged, nothing committed"
        producer.acks[0].set_result(None)
        await asyncio.sleep(0.05)
        assert consumer.commits == [{IN: 3}], "the first poll's outputs only"
        producer.acks[1].set_result(None)
        await until(lambda: consumer.commits[-1] == {IN: 4})
        await kafka.stop()

    asyncio.run(main())


def test_a_held_record_keeps_its_offset_uncommitted() -> None:
    async def main() -> None:
        host = Host()
        kafka, producer, consumer, seen = transport(host)
        consumer.polls.append({IN: [message(0), message(1), message(2)]})
        await until(lambda: len(seen) == 3)
        host.held.append(seen[1])  # e.g. waiting in a join for its partner
        consumer.polls.append({IN: [message(3)]})
        await until(lambda: producer.records == 4)
        for ack in producer.acks:
            ack.set_result(None)
        await until(lambda: bool(consumer.commits) and consumer.commits[-1] == {IN: 1})
        await kafka.stop()

    asyncio.run(main())


def test_a_failed_produce_is_never_committed_and_stops_the_work() -> None:
    async def main() -> None:
        kafka, producer, consumer, _ = transport(Host())
        consumer.polls.append({IN: [message(0)]})
        await until(lambda: producer.records == 1)
        producer.acks[0].set_exception(KafkaTimeoutError())
        consumer.polls.append({IN: [message(1)]})
        work = kafka._work_task
        assert work is not None
        await until(work.done)
        assert isinstance(work.exception(), KafkaTimeoutError)
        for ack in producer.acks[1:]:  # the poll read meanwhile, if any, went out
            ack.set_result(None)
        await kafka.stop()
        assert consumer.commits == []

    asyncio.run(main())
