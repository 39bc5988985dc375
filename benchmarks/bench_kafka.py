"""Kafka transport throughput and per-hop latency against a raw aiokafka relay, same broker.

Both move the same request messages through three stages:

- raw relay: three consume→produce loops (one consumer group each, aiokafka, no decoding),
  ``in → a → b → out``;
- flowcause: the 3-step chain ``s1 → s2 → s3`` on the Kafka transport (one engine process),
  ``pipeline.inputs → s1.outputs → s2.outputs → s3.outputs → pipeline.outputs``.

Throughput = requests / (first send → last answer). Per-hop latency = difference of the
broker-side CreateTime timestamps of a request's records on consecutive topics (the
producer stamps them when sending), matched by request id. The broker comes from
``FLOWCAUSE_KAFKA_BOOTSTRAP`` or is started with ``scripts/kafka_broker.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.engine import Engine
from engine.kafka import KafkaTransport, partition_of
from engine.lineage import Lineage, new_span_id, new_trace_id
from engine.record import Record
from engine.spec import load_pipelines
from engine.tensors import Tensor
from engine.topics import Topics

PARTITIONS = 4
CHAIN = {
    "metadata": {"name": "chain"},
    "spec": {
        "steps": [{"name": "s1"}, {"name": "s2", "inputs": ["s1"]}, {"name": "s3", "inputs": ["s2"]}],
        "output": {"steps": ["s3"]},
    },
}


def passthrough(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": inputs["x"]}


def request(i: int) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    rid = f"r{i:07d}"
    lin = Lineage(rid, new_trace_id(), new_span_id(), "chain", "inputs")
    value, headers = Record(lin, (Tensor.from_array("x", np.arange(4, dtype=np.float32)),)).encode()
    return rid, value, headers


async def create(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()


async def send_all(bootstrap: str, topic: str, n: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    start = time.perf_counter()
    acks = []
    for i in range(n):
        rid, value, headers = request(i)
        p = partition_of(rid, PARTITIONS)
        acks.append(await producer.send(topic, value, key=rid.encode(), partition=p,
                                        headers=headers))
    await asyncio.gather(*acks)
    await producer.stop()
    return start


async def wait_count(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    seen: set[bytes] = set()
    while len(seen) < n:
        for messages in (await consumer.getmany(timeout_ms=100)).values():
            seen.update(dict(m.headers)["flowcause-request-id"] for m in messages)
    done = time.perf_counter()
    await consumer.stop()
    return done


async def timestamps(bootstrap: str, topic: str) -> dict[bytes, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    out: dict[bytes, int] = {}
    while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
        for messages in (await consumer.getmany(timeout_ms=100)).values():
            for m in messages:
                out[dict(m.headers)["flowcause-request-id"]] = m.timestamp
    await consumer.stop()
    return out


async def hop_latencies(bootstrap: str, path: list[str]) -> list[list[int]]:
    stamps = [await timestamps(bootstrap, t) for t in path]
    hops: list[list[int]] = []
    for a, b in zip(stamps, stamps[1:], strict=False):
        hops.append([b[k] - a[k] for k in b if k in a])
    return hops


async def raw_relay(bootstrap: str, n: int) -> tuple[float, list[list[int]]]:
    prefix = f"raw{uuid.uuid4().hex[:6]}"
    path = [f"{prefix}.{s}" for s in ("in", "a", "b", "out")]
    await create(bootstrap, path)

    async def stage(src: str, dst: str) -> None:
        consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=f"{prefix}-{src}",
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks="all",
                                    enable_idempotence=True)
        await consumer.start()
        await producer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=20, max_records=500)
                acks = [await producer.send(dst, m.value, key=m.key, partition=m.partition,
                                            headers=list(m.headers))
                        for messages in batches.values() for m in messages]
                await asyncio.gather(*acks)
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()

    stages = [asyncio.create_task(stage(a, b)) for a, b in zip(path, path[1:], strict=False)]
    await asyncio.sleep(2)  # group joins
    done = asyncio.create_task(wait_count(bootstrap, path[-1], n))
    start = await send_all(bootstrap, path[0], n)
    await asyncio.wait([done, *stages], return_when=asyncio.FIRST_COMPLETED)
    for s in stages:
        if s.done():
            s.result()  # a stage that died raises here instead of hanging the benchmark
    end = await done
    for s in stages:
        s.cancel()
    await asyncio.gather(*stages, return_exceptions=True)
    return n / (end - start), await hop_latencies(bootstrap, path)


async def engine_chain(bootstrap: str, n: int) -> tuple[float, list[list[int]]]:
    topics = Topics(prefix=f"eng{uuid.uuid4().hex[:6]}")
    transport = KafkaTransport(bootstrap, group_id=f"{topics.prefix}-g", partitions=PARTITIONS)
    engine = Engine(load_pipelines(CHAIN), {"s1": passthrough, "s2": passthrough,
                                            "s3": passthrough},
                    transport=transport, topics=topics, results=False)
    path = [topics.pipeline("chain", "inputs"), *(topics.model(s, "outputs") for s in
                                                  ("s1", "s2", "s3")),
            topics.pipeline("chain", "outputs")]
    async with engine:
        await asyncio.sleep(2)
        done = asyncio.create_task(wait_count(bootstrap, path[-1], n))
        start = await send_all(bootstrap, path[0], n)
        end = await done
    return n / (end - start), await hop_latencies(bootstrap, path)


def pct(values: list[int], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def main(n: int) -> None:
    bootstrap = os.environ.get("FLOWCAUSE_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit("set FLOWCAUSE_KAFKA_BOOTSTRAP (make bench-kafka starts a broker)")
    raw_rate, raw_hops = await raw_relay(bootstrap, n)
    eng_rate, eng_hops = await engine_chain(bootstrap, n)
    raw_all = [v for h in raw_hops for v in h]
    eng_all = [v for h in eng_hops for v in h]
    print(f"{n:,} requests through 3 stages on Kafka ({PARTITIONS} partitions), broker {bootstrap}")
    print(f"  raw aiokafka relay : {raw_rate:9,.0f} requests/s  per-hop p50 {pct(raw_all, 50):6.1f} ms"
          f"  p99 {pct(raw_all, 99):6.1f} ms")
    print(f"  flowcause engine   : {eng_rate:9,.0f} requests/s  per-hop p50 {pct(eng_all, 50):6.1f} ms"
          f"  p99 {pct(eng_all, 99):6.1f} ms")
    for i, hop in enumerate(eng_hops):
        print(f"    engine hop {i + 1}: p50 {pct(hop, 50):6.1f} ms  p99 {pct(hop, 99):6.1f} ms")
    print(f"  throughput ratio engine / relay: {eng_rate / raw_rate:.2f}   (target >= 0.7)")
    added = statistics.median(eng_all) - statistics.median(raw_all)
    print(f"  p50 added latency per hop: {added:+.1f} ms   (target <= 5 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.requests))
