"""Scale-out and crash safety on a real Kafka broker: `flowcause serve` workers in one group."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engine.kafka import partition_of
from engine.lineage import Lineage, new_span_id, new_trace_id
from engine.record import Record
from engine.tensors import Tensor
from engine.topics import Topics
from tests.kafka_steps import PIPELINE
from tracing.store import TraceStore

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4
REQUESTS = 10_000


def start_worker(bootstrap: str, prefix: str, spec: Path, log: Path,
                 tracing: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "flowcause"
    return subprocess.Popen(
        [str(exe), "serve", str(spec), "--models", str(ROOT / "tests" / "kafka_steps.py"),
         "--bootstrap", bootstrap,
         "--group", f"{prefix}-workers", "--partitions", str(PARTITIONS), "--prefix", prefix,
         *tracing],
        cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def wait_ready(log: Path, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count("serving ") < len(procs):
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise TimeoutError(f"workers did not start:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.2)


async def send_requests(bootstrap: str, topics: Topics, n: int, first: int = 0) -> list[str]:
    """Requests ``first`` to ``first + n - 1``; their ids."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    ids = []
    try:
        acks = []
        for i in range(first, first + n):
            rid = f"req-{i:05d}"
            ids.append(rid)
            lin = Lineage(rid, new_trace_id(), new_span_id(), "kscale", "inputs")
            value, headers = Record(lin, (Tensor.from_array("x", np.array([float(i)])),)).encode()
            p = partition_of(rid, PARTITIONS)
            acks.append(await producer.send(topics.pipeline("kscale", "inputs"), value,
                                            key=f"{p}.kscale.{rid}".encode(), partition=p,
                                            headers=headers))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return ids


class Answers:
    """Reads the pipeline's outputs and the errors topic; de-duplicates by record id."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.topics = topics
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                         enable_auto_commit=False)
        self.outputs: dict[str, Record] = {}
        self.errors: dict[str, Record] = {}
        self.duplicates = 0

    async def start(self) -> None:
        await self.consumer.start()
        tps = [TopicPartition(t, p) for t in (self.topics.pipeline("kscale", "outputs"),
                                              self.topics.errors) for p in range(PARTITIONS)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def poll(self) -> None:
        batches = await self.consumer.getmany(timeout_ms=200)
        for messages in batches.values():
            for msg in messages:
                record = Record.decode(msg.value, list(msg.headers))
                seen = self.errors if record.kind == "error" else self.outputs
                rid = record.lineage.request_id
                if rid in seen:
                    assert seen[rid].lineage.record_id == record.lineage.record_id
                    self.duplicates += 1
                else:
                    seen[rid] = record

    async def until(self, ids: list[str], timeout: float, procs: list[Any]) -> None:
        deadline = time.monotonic() + timeout
        wanted = set(ids)
        while wanted - self.outputs.keys() - self.errors.keys():
            if time.monotonic() > deadline:
                missing = wanted - self.outputs.keys() - self.errors.keys()
                raise AssertionError(f"{len(missing)} requests unanswered, e.g. {sorted(missing)[:5]}")
            for p in procs:
                assert p.poll() is None, "a worker died"
            await self.poll()


def expected_y(rid: str) -> float:
    x = float(int(rid.split("-")[1]))
    return x + x * x + x


@pytest.fixture
def deployment(kafka_bootstrap: str, tmp_path: Path) -> tuple[str, Topics, Path, Path]:
    prefix = f"k{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "kscale.yaml"
    spec.write_text(PIPELINE)
    return kafka_bootstrap, Topics(prefix=prefix), spec, tmp_path / "workers.log"


def stop_all(procs: list[subprocess.Popen[bytes]]) -> str:
    """SIGTERM to every worker, SIGKILL to one still running after a minute; how each ended
    (for an assertion's message)."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    ends = []
    for p in procs:
        try:
            ends.append(f"pid {p.pid}: exit code {p.wait(timeout=60)}")
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            ends.append(f"pid {p.pid}: still running a minute after SIGTERM, killed")
    return "; ".join(ends)


def test_two_workers_share_a_four_partition_pipeline(deployment: Any) -> None:
    """Both record into one trace store, one of them from a tracing process."""
    bootstrap, topics, spec, log = deployment
    store = log.parent / "store"
    tracing = [("--trace-store", str(store)), ("--trace-store", str(store), "--trace-process")]

    async def main() -> None:
        procs = [start_worker(bootstrap, topics.prefix, spec, log, t) for t in tracing]
        try:
            await wait_ready(log, procs)
            answers = Answers(bootstrap, topics)
            await answers.start()
            ids = await send_requests(bootstrap, topics, REQUESTS)
            await answers.until(ids, 240, procs)
            await asyncio.sleep(1)
            await answers.poll()
            await answers.consumer.stop()
        finally:
            ends = stop_all(procs)
        assert not answers.errors
        assert answers.duplicates == 0, "no restart, so every request answered exactly once"
        assert set(answers.outputs) == set(ids)
        for rid, record in answers.outputs.items():
            assert record.tensors[0].data.tolist() == [expected_y(rid)]
        text = log.read_text()
        consumed = [int(line.split("'consumed': ")[1].split(",")[0])
                    for line in text.splitlines() if line.startswith("stopped:")]
        assert len(consumed) == 2 and all(c > 0 for c in consumed), f"{ends}\n{text[-2000:]}"
        print(f"records consumed per worker: {consumed}")
        frame = TraceStore(store).frame("kscale")  # both workers stopped cleanly: all there
        assert sorted(frame.index) == sorted(ids)
        assert (frame["kscale.outputs.y"] == [expected_y(rid) for rid in frame.index]).all()
        assert set(frame.filter(like=".status").stack()) == {"ok"}

    asyncio.run(main())


def test_kill_9_mid_stream_loses_nothing(deployment: Any) -> None:
    bootstrap, topics, spec, log = deployment

    async def main() -> None:
        procs = [start_worker(bootstrap, topics.prefix, spec, log) for _ in range(2)]
        try:
            await wait_ready(log, procs)
            answers = Answers(bootstrap, topics)
            await answers.start()
            # Half the requests, then the other half while a worker is killed: the kill lands
            # mid-stream however fast the workers are.
            half = REQUESTS // 2
            ids = await send_requests(bootstrap, topics, half)
            while len(answers.outputs) < half // 2:
                await answers.poll()
            answered_at_kill = len(answers.outputs)
            second = asyncio.create_task(send_requests(bootstrap, topics, half, first=half))
            await asyncio.sleep(0.3)
            os.killpg(procs[0].pid, signal.SIGKILL)  # kill -9 in the middle
            procs[0].wait(timeout=10)
            ids += await second
            procs[0] = start_worker(bootstrap, topics.prefix, spec, log)
            await answers.until(ids, 300, procs)
            await asyncio.sleep(2)
            await answers.poll()
            await answers.consumer.stop()
        finally:
            stop_all(procs)
        assert set(answers.outputs) | set(answers.errors) == set(ids)
        assert not answers.errors
        for rid, record in answers.outputs.items():
            assert record.tensors[0].data.tolist() == [expected_y(rid)]
        print(f"killed after {answered_at_kill} answers; duplicates seen and removed: "
              f"{answers.duplicates}")

    asyncio.run(main())
