"""Kafka transport throughput and per-hop latency against raw aiokafka relays, same broker.

Each side moves the same request messages through four hops (consume, produce):

- raw relays: four consume→produce stages ``in → h1 → h2 → h3 → out``, each with its own
  consumer group and producer (acks=all, idempotent), forwarding the bytes (key, value,
  headers) undecoded, at least once: a poll's offsets are committed once its outputs are
  acknowledged, in the background while the next poll is relayed. ``relay (send)``
  produces each message with ``producer.send`` (linger 1 ms), the way aiokafka documents
  it — the baseline the targets refer to; ``relay (batch)`` builds one batch per partition
  (``create_batch``/``send_batch``), the produce technique the engine itself uses, so it
  shows what is left of the engine's cost once the client's per-message overhead is gone.
- flowcause: the 3-step chain ``s1 → s2 → s3`` (identity steps) on the Kafka transport,
  one engine process, ``pipeline.inputs → s1.outputs → s2.outputs → s3.outputs →
  pipeline.outputs``: decoding, joins, lineage, the step call and encoding on every hop.
  ``+ step inputs`` also writes each step's inputs to ``model.<step>.inputs``.

Throughput: ``--requests`` sent at once (the system saturated), requests / (first send →
last answer read). Latency is measured separately at a fixed moderate rate (``--rate``)
that every side sustains, since under saturation it measures queueing, not the system:
per hop, the difference of the CreateTime stamps of a request's records on consecutive
topics (stamped when handed to the producer); end to end, from the request's stamp to its
answer reaching the reader. The load generator and the reader run in the benchmark's
process, beside the side under test, the same for every side. Rounds alternate the sides;
figures are medians over rounds; the engine-against-relay figures are printed per round
(neighbouring runs share the machine's load), as their median (which the targets judge),
and from the sides' medians (which need not agree with it: different rounds). The broker
comes from ``FLOWCAUSE_KAFKA_BOOTSTRAP`` (``make bench-kafka`` starts one with
``scripts/kafka_broker.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from _args import positive_float, positive_int
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.engine import Engine
from engine.kafka import BATCH_BYTES, KafkaTransport, partition_of
from engine.lineage import H_REQUEST_ID, Lineage, new_span_id, new_trace_id
from engine.record import Record
from engine.spec import load_pipelines
from engine.tensors import Tensor
from engine.topics import Topics

PARTITIONS = 4
HOPS = 4
TARGET_RATIO = 0.7  # engine / relay (send) requests per second
TARGET_ADDED_MS = 5.0  # engine's per-hop p50 - relay (send)'s
CHAIN = {
    "metadata": {"name": "chain"},
    "spec": {
        "steps": [{"name": "s1"}, {"name": "s2", "inputs": ["s1"]}, {"name": "s3", "inputs": ["s2"]}],
        "output": {"steps": ["s3"]},
    },
}
Message = tuple[str, bytes, list[tuple[str, bytes]]]
# A side under test, started with a topic prefix: its topic path, how to stop it, and the
# tasks whose end means it died.
Started = tuple[list[str], Callable[[], Awaitable[None]], list["asyncio.Task[None]"]]
Side = Callable[[str], Awaitable[Started]]


def passthrough(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": inputs["x"]}


def request(i: int) -> Message:
    rid = f"r{i:07d}"
    lin = Lineage(rid, new_trace_id(), new_span_id(), "chain", "inputs")
    value, headers = Record(lin, (Tensor.from_array("x", np.arange(4, dtype=np.float32)),)).encode()
    return rid, value, headers


@dataclass
class Run:
    """One side's run: requests/s (saturated) or per-hop and end-to-end latencies (ms)."""

    rate: float = 0.0
    cpu_us: float = 0.0  # this process's CPU time per request
    hops: list[list[int]] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)


async def create(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()


async def send(bootstrap: str, topic: str, messages: list[Message], rate: float | None) -> float:
    """All at once (``rate`` None) or paced at ``rate`` per second; returns the start."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5 if rate is None else 0)
    await producer.start()
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    t0 = loop.time()
    acks = []
    for i, (rid, value, headers) in enumerate(messages):
        if rate is not None and i * 1.0 / rate > loop.time() - t0:
            await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        p = partition_of(rid, PARTITIONS)
        acks.append(await producer.send(topic, value, key=rid.encode(), partition=p,
                                        headers=headers))
    await asyncio.gather(*acks)
    await producer.stop()
    return start


async def reader(bootstrap: str, topic: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer, tps


async def answers(bootstrap: str, topic: str, n: int, received: dict[bytes, float]) -> float:
    """Read ``n`` distinct answers into ``received`` (request id -> wall clock ms)."""
    consumer, _ = await reader(bootstrap, topic)
    while len(received) < n:
        for messages in (await consumer.getmany(timeout_ms=100)).values():
            now = time.time() * 1000
            for m in messages:
                received.setdefault(dict(m.headers)[H_REQUEST_ID], now)
    done = time.perf_counter()
    await consumer.stop()
    return done


async def timestamps(bootstrap: str, topic: str) -> dict[bytes, int]:
    consumer, tps = await reader(bootstrap, topic)
    ends = await consumer.end_offsets(tps)
    out: dict[bytes, int] = {}
    while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
        for messages in (await consumer.getmany(timeout_ms=100)).values():
            for m in messages:
                out[dict(m.headers)[H_REQUEST_ID]] = m.timestamp
    await consumer.stop()
    return out


async def latencies(bootstrap: str, path: list[str], received: dict[bytes, float]) -> Run:
    stamps = [await timestamps(bootstrap, t) for t in path]
    hops = [[b[k] - a[k] for k in b if k in a] for a, b in zip(stamps, stamps[1:], strict=False)]
    return Run(hops=hops, e2e=[at - stamps[0][k] for k, at in received.items()])


async def measure(bootstrap: str, side: Side, n: int, rate: float | None) -> Run:
    """Start a side, send ``n`` requests (at ``rate`` or all at once), wait for every answer."""
    prefix = f"b{uuid.uuid4().hex[:8]}"
    path, stop, watch = await side(prefix)
    received: dict[bytes, float] = {}
    try:
        done = asyncio.create_task(answers(bootstrap, path[-1], n, received))
        messages = [request(i) for i in range(n)]
        cpu = time.process_time()
        start = await send(bootstrap, path[0], messages, rate)
        await asyncio.wait([done, *watch], return_when=asyncio.FIRST_COMPLETED)
        for task in watch:
            if task.done():
                done.cancel()
                task.result()  # a side that died raises here instead of hanging the benchmark
                raise RuntimeError(f"{task.get_name()} ended")
        end = await done
        cpu = time.process_time() - cpu
    finally:
        await stop()
    if rate is not None:
        return await latencies(bootstrap, path, received)
    return Run(rate=n / (end - start), cpu_us=cpu / n * 1e6)


def relay(bootstrap: str, batch: bool) -> Side:
    async def start(prefix: str) -> Started:
        path = [f"{prefix}.{s}" for s in ("in", "h1", "h2", "h3", "out")]
        await create(bootstrap, path)
        stages = [asyncio.create_task(relay_stage(bootstrap, a, b, batch))
                  for a, b in zip(path, path[1:], strict=False)]
        await asyncio.sleep(2)  # the groups join

        async def stop() -> None:
            for s in stages:
                s.cancel()
            await asyncio.gather(*stages, return_exceptions=True)
        return path, stop, stages
    return start


async def relay_stage(bootstrap: str, src: str, dst: str, batch: bool) -> None:
    """Consume ``src``, produce the same bytes to ``dst``; commit once they are acknowledged,
    in the background while the next poll is relayed (one commit in flight)."""
    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=f"{src}-relay",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_poll_records=1000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=1, max_batch_size=BATCH_BYTES if batch else 16384)
    await consumer.start()
    await producer.start()

    async def commit(acks: list[Any], offsets: dict[TopicPartition, int]) -> None:
        await asyncio.gather(*acks)
        await consumer.commit(offsets)

    committing: asyncio.Future[None] | None = None
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=20, max_records=1000)
            if not batches:
                continue
            acks = await (produce_batches if batch else produce_each)(producer, dst, batches)
            if committing is not None:
                await committing
            committing = asyncio.ensure_future(
                commit(acks, {tp: ms[-1].offset + 1 for tp, ms in batches.items()}))
    finally:
        if committing is not None:
            committing.cancel()
        await consumer.stop()
        await producer.stop()


async def produce_each(producer: AIOKafkaProducer, dst: str,
                       batches: dict[TopicPartition, list[Any]]) -> list[Any]:
    return [await producer.send(dst, m.value, key=m.key, partition=m.partition,
                                headers=list(m.headers))
            for messages in batches.values() for m in messages]


async def produce_batches(producer: AIOKafkaProducer, dst: str,
                          batches: dict[TopicPartition, list[Any]]) -> list[Any]:
    acks = []
    for tp, messages in batches.items():
        builder = producer.create_batch()
        for m in messages:
            headers = list(m.headers)
            if builder.append(timestamp=None, key=m.key, value=m.value, headers=headers) is None:
                acks.append(await producer.send_batch(builder, dst, partition=tp.partition))
                builder = producer.create_batch()
                builder.append(timestamp=None, key=m.key, value=m.value, headers=headers)
        builder.close()
        acks.append(await producer.send_batch(builder, dst, partition=tp.partition))
    return acks


def engine(bootstrap: str, step_inputs: bool) -> Side:
    async def start(prefix: str) -> Started:
        topics = Topics(prefix=prefix)
        transport = KafkaTransport(bootstrap, group_id=f"{prefix}-g", partitions=PARTITIONS,
                                   step_inputs=step_inputs)
        eng = Engine(load_pipelines(CHAIN), {"s1": passthrough, "s2": passthrough,
                                             "s3": passthrough},
                     transport=transport, topics=topics, results=False)
        path = [topics.pipeline("chain", "inputs"),
                *(topics.model(s, "outputs") for s in ("s1", "s2", "s3")),
                topics.pipeline("chain", "outputs")]
        await eng.start()
        await asyncio.sleep(2)  # the group joins
        return path, eng.stop, [t for t in (transport._work_task,) if t is not None]
    return start


def pct(values: list[Any], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def main(args: argparse.Namespace) -> None:
    bootstrap = os.environ.get("FLOWCAUSE_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit("set FLOWCAUSE_KAFKA_BOOTSTRAP (make bench-kafka starts a broker)")
    sides = {"relay (send)": relay(bootstrap, batch=False), "relay (batch)": relay(bootstrap, True),
             "flowcause engine": engine(bootstrap, step_inputs=False),
             "+ step inputs": engine(bootstrap, step_inputs=True)}
    runs: dict[str, list[Run]] = {name: [] for name in sides}
    lat: dict[str, list[Run]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name, side in sides.items():
            runs[name].append(await measure(bootstrap, side, args.requests, None))
            lat[name].append(await measure(bootstrap, side, args.latency_requests, args.rate))
            print(f"  round {r + 1} {name:16s}: {runs[name][-1].rate:7,.0f} requests/s saturated; "
                  f"at {args.rate:,.0f}/s per-hop p50 {pct(_all(lat[name][-1]), 50):5.1f} ms",
                  flush=True)
    med = statistics.median
    print(f"\n{time.strftime('%Y-%m-%d')}: {HOPS} hops on Kafka ({PARTITIONS} partitions), "
          f"broker {bootstrap}, {args.rounds} rounds, medians over rounds; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"throughput: {args.requests:,} requests sent at once (saturated)")
    for name in sides:
        print(f"  {name:16s}: {med(r.rate for r in runs[name]):7,.0f} requests/s "
              f"(best {max(r.rate for r in runs[name]):7,.0f})   "
              f"CPU of this process {med(r.cpu_us for r in runs[name]):4.0f} us/request")
    print(f"latency: {args.latency_requests:,} requests at a fixed {args.rate:,.0f} requests/s, "
          "a load every side sustains (saturated, latency would be queueing)")
    p50 = {name: [pct(_all(run), 50) for run in lat[name]] for name in sides}
    for name in sides:
        print(f"  {name:16s}: per hop p50 {med(p50[name]):5.1f} ms  "
              f"p99 {med(pct(_all(run), 99) for run in lat[name]):5.1f} ms   "
              f"end to end p50 {med(pct(run.e2e, 50) for run in lat[name]):5.1f} ms  "
              f"p99 {med(pct(run.e2e, 99) for run in lat[name]):5.1f} ms")
    eng = lat["flowcause engine"]
    for i in range(HOPS):
        print(f"    engine hop {i + 1}: p50 {med(pct(run.hops[i], 50) for run in eng):5.1f} ms  "
              f"p99 {med(pct(run.hops[i], 99) for run in eng):5.1f} ms")
    print("engine against each relay: per round (the two sides measured back to back, under "
          "the same load), the\nmedian of those per-round figures (what the targets judge), "
          "and the same figure from the medians above\n(they differ when the load changes "
          "between rounds)")
    for relay_name, label in (("relay (send)", "target"), ("relay (batch)", "reference")):
        eng_rates = [r.rate for r in runs["flowcause engine"]]
        relay_rates = [r.rate for r in runs[relay_name]]
        ratios = [e / r for e, r in zip(eng_rates, relay_rates, strict=True)]
        added = [e - r for e, r in zip(p50["flowcause engine"], p50[relay_name], strict=True)]
        ratio, plus = med(ratios), med(added)
        verdicts = ((f" (target >= {TARGET_RATIO}): {'ok' if ratio >= TARGET_RATIO else 'MISSED'}",
                     f" (target <= {TARGET_ADDED_MS:g} ms): "
                     f"{'ok' if plus <= TARGET_ADDED_MS else 'MISSED'}")
                    if label == "target" else ("", ""))
        print(f"  vs {relay_name} ({label}):\n"
              f"    throughput engine / relay: per round "
              f"{', '.join(f'{v:.2f}' for v in ratios)}; median of rounds {ratio:.2f}"
              f"{verdicts[0]}; ratio of the medians {med(eng_rates) / med(relay_rates):.2f}\n"
              f"    per-hop p50 engine - relay: per round "
              f"{', '.join(f'{v:+.1f}' for v in added)} ms; median of rounds {plus:+.1f} ms"
              f"{verdicts[1]}; difference of the medians "
              f"{med(p50['flowcause engine']) - med(p50[relay_name]):+.1f} ms")


def _all(run: Run) -> list[int]:
    return [v for hop in run.hops for v in hop]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=positive_int, default=20_000, help="for throughput")
    parser.add_argument("--rate", type=positive_float, default=500.0, help="requests/s for latency")
    parser.add_argument("--latency-requests", type=positive_int, default=2000)
    parser.add_argument("--rounds", type=positive_int, default=3)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # leader elections of new topics
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
