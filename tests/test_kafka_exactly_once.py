"""``KafkaTransport(exactly_once=True)`` on a real broker: transactions per consumed batch."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.engine import Engine
from engine.kafka import KafkaTransport
from engine.record import Record
from engine.spec import load_pipelines
from engine.tensors import Tensor
from engine.topics import Topics
from tests.kafka_steps import PIPELINE, STEPS

pytestmark = pytest.mark.kafka
PARTITIONS = 2
REQUESTS = 200


async def read_all(bootstrap: str, topic: str, isolation: str
                   ) -> tuple[list[Record], dict[TopicPartition, int], int]:
    """Every record on ``topic`` as a reader with ``isolation`` sees it, per partition the
    offset after its last record, and the sum of the end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                isolation_level=isolation, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Record] = []
        after_last: dict[TopicPartition, int] = {}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                records += [Record.decode(m.value, m.headers) for m in messages]
                after_last[tp] = messages[-1].offset + 1
        return records, after_last, sum(ends.values())
    finally:
        await consumer.stop()


def test_exactly_once_answers_each_request_once_from_committed_transactions(
        kafka_bootstrap: str) -> None:
    async def main() -> None:
        topics = Topics(prefix=f"eos{uuid.uuid4().hex[:8]}")
        transport = KafkaTransport(kafka_bootstrap, group_id=f"{topics.prefix}-engine",
                                   partitions=PARTITIONS, exactly_once=True)
        engine = Engine(load_pipelines(PIPELINE), STEPS, transport=transport, topics=topics)
        async with engine:
            results = await asyncio.gather(*(
                engine.infer("kscale", (Tensor.from_array("x", np.array([float(i)])),),
                             request_id=f"req-{i:04d}", timeout=60)
                for i in range(REQUESTS)))
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
        for i, r in enumerate(results):
            assert r.request_id == f"req-{i:04d}"
            assert r.outputs[0].data.tolist() == [i + i * i + i]

        out = topics.pipeline("kscale", "outputs")
        committed, _, end = await read_all(kafka_bootstrap, out, "read_committed")
        ids = sorted(r.lineage.request_id for r in committed)
        assert ids == [f"req-{i:04d}" for i in range(REQUESTS)], "each answer exactly once"
        # Each transaction ends with a commit marker that takes an offset of its own.
        assert end > len(committed)
        assert not transport.stats["poison"] and transport.stats["consumed"] >= 3 * REQUESTS

        # The consumed offsets went into the same transactions: the group has read it all.
        inputs, after_last, _ = await read_all(kafka_bootstrap, topics.pipeline("kscale", "inputs"),
                                               "read_committed")
        assert len(inputs) == REQUESTS
        group = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=transport.group_id,
                                 enable_auto_commit=False)
        await group.start()
        try:
            assert {tp: await group.committed(tp) for tp in after_last} == after_last
        finally:
            await group.stop()

    asyncio.run(main())
