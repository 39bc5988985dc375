"""The real Kafka broker (scripts/kafka_broker.py) against the client the engine uses, aiokafka.

What the Kafka transport relies on, one test each: topics with N partitions from the admin
client, produce with headers to an explicit partition, a consumer group with manual commits,
two consumers of one group rebalancing, and a transactional consume-transform-produce loop
(``send_offsets_to_transaction``) with an aborted transaction invisible to read_committed.
Plus the broker script's own lifecycle (a second, short-lived broker) and its errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import CommitFailedError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "kafka_broker.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kafka_broker", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("kafka_broker", module)
    spec.loader.exec_module(module)
    return module


async def create_topics(bootstrap: str, partitions: dict[str, int], **configs: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resp = await admin.create_topics(
            [NewTopic(name, n, 1, topic_configs=dict(configs)) for name, n in partitions.items()],
            timeout_ms=10_000,
        )
        errors = {t[0]: t[1] for t in resp.topic_errors if t[1] != 0}
        assert not errors, f"create_topics errors: {errors}"
        deadline = time.monotonic() + 15  # until every partition has a leader in the metadata
        while True:
            described = await admin.describe_topics(list(partitions))
            if all(len(t["partitions"]) == partitions[t["topic"]] and t["error_code"] == 0
                   and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
                break
            assert time.monotonic() < deadline, f"topics without leaders: {described}"
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0,
                   tick: Callable[[], Awaitable[object]] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        if tick is not None:
            await tick()
        else:
            await asyncio.sleep(0.1)


# ----------------------------------------------------------------------------- the broker script


def test_wire_probe_sees_one_registered_broker(kafka_bootstrap: str) -> None:
    kb = load_script()
    seen = kb.probe_wire(kafka_bootstrap)
    assert len(seen["brokers"]) == 1
    assert seen["controller_id"] == seen["brokers"][0]["node_id"]
    assert seen["cluster_id"]
    assert 4 <= seen["metadata_version"] <= 8


def test_script_up_status_down_lifecycle(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A second broker from the (already cached) jars: up, status, up again, down, status."""
    state = tmp_path / "broker.json"

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(SCRIPT), "--state", str(state), *args],
                              capture_output=True, text=True, timeout=180)

    up = script("up")
    assert up.returncode == 0, up.stderr
    st = json.loads(state.read_text())
    assert up.stdout.strip() == f"export FLOWCAUSE_KAFKA_BOOTSTRAP={st['bootstrap']}"
    assert st["bootstrap"] != kafka_bootstrap
    workdir, pid = Path(st["workdir"]), st["pid"]
    try:
        assert workdir.is_dir() and Path(st["log"]).is_file()
        status = script("status")
        assert (status.returncode, status.stdout.strip()) == (0, st["bootstrap"])
        again = script("up")  # idempotent: reports the running broker, starts no second one
        assert again.returncode == 0 and json.loads(state.read_text())["pid"] == pid
        assert "already running" in again.stderr
    finally:
        down = script("down")
    assert down.returncode == 0, down.stderr
    assert not state.exists() and not workdir.exists()
    assert not load_script().is_alive(pid, st["start_time"])
    gone = script("status")
    assert gone.returncode == 1 and gone.stdout == ""
    assert script("down").returncode == 0  # nothing to stop is not an error


def test_script_reports_a_busy_port(kafka_bootstrap: str, tmp_path: Path) -> None:
    port = int(kafka_bootstrap.rsplit(":", 1)[1])
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--state", str(tmp_path / "b.json"), "up", "--port", str(port)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert f"port 127.0.0.1:{port} is busy" in out.stderr


def test_broker_death_shows_the_log_tail(tmp_path: Path) -> None:
    kb = load_script()
    log = tmp_path / "broker.log"
    log.write_text("starting\nERROR something broke (kafka.Kafka)\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens: the probe fails, then the dead process is seen
    with pytest.raises(kb.BrokerDied) as err:
        kb.wait_ready(proc, f"127.0.0.1:{port}", log, time.monotonic() + 5)
    assert "exited with code 3" in str(err.value)
    assert "ERROR something broke" in str(err.value)


# ----------------------------------------------------------------------------- aiokafka


def test_admin_creates_topics_with_partitions(
    kafka_bootstrap: str, unique_topic: Callable[[str], str]
) -> None:
    three, five = unique_topic("three"), unique_topic("five")

    async def main() -> None:
        await create_topics(kafka_bootstrap, {three: 3, five: 5})
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            assert {three, five} <= set(await admin.list_topics())
            described = {t["topic"]: t for t in await admin.describe_topics([three, five])}
            assert {n: len(t["partitions"]) for n, t in described.items()} == {three: 3, five: 5}
            assert all(t["error_code"] == 0 for t in described.values())

            resp = await admin.create_partitions({three: NewPartitions(total_count=6)})
            assert all(e[1] == 0 for e in resp.topic_errors), resp.topic_errors

            async def grown() -> bool:
                (t,) = await admin.describe_topics([three])
                return len(t["partitions"]) == 6

            deadline = time.monotonic() + 15
            while not await grown():
                assert time.monotonic() < deadline, "create_partitions did not show up"
                await asyncio.sleep(0.2)

            resp = await admin.delete_topics([five])
            assert all(e[1] == 0 for e in resp.topic_error_codes), resp.topic_error_codes
        finally:
            await admin.close()

    asyncio.run(main())


def test_produce_with_headers_to_an_explicit_partition(
    kafka_bootstrap: str, unique_topic: Callable[[str], str]
) -> None:
    topic = unique_topic("headers")
    headers = [("flowcause-trace", b"\x01\x02trace"), ("content-type", b"application/x-npy"),
               ("empty", b"")]

    async def main() -> None:
        await create_topics(kafka_bootstrap, {topic: 3})
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            meta = await producer.send_and_wait(topic, b"payload-0", key=b"k0", partition=2,
                                                headers=headers, timestamp_ms=1_700_000_000_000)
            batch = [await producer.send(topic, f"payload-{i}".encode(), key=b"k", partition=2,
                                         headers=[("seq", str(i).encode())]) for i in range(1, 6)]
            metas = await asyncio.gather(*batch)
        finally:
            await producer.stop()
        assert (meta.topic, meta.partition, meta.offset) == (topic, 2, 0)
        assert [m.offset for m in metas] == [1, 2, 3, 4, 5]

        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(3)]
            ends = await consumer.end_offsets(tps)
            assert {tp.partition: off for tp, off in ends.items()} == {0: 0, 1: 0, 2: 6}
            consumer.assign([tps[2]])
            await consumer.seek_to_beginning(tps[2])
            got: list[ConsumerRecord[bytes, bytes]] = []
            deadline = time.monotonic() + 20
            while len(got) < 6:
                assert time.monotonic() < deadline, f"only {len(got)} of 6 records came back"
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(msgs)
        finally:
            await consumer.stop()
        first = got[0]
        assert (first.partition, first.offset, first.key, first.value) == (2, 0, b"k0", b"payload-0")
        assert first.timestamp == 1_700_000_000_000
        assert list(first.headers) == headers
        assert [m.value for m in got] == [f"payload-{i}".encode() for i in range(6)]
        assert [list(m.headers) for m in got[1:]] == [[("seq", str(i).encode())] for i in range(1, 6)]

    asyncio.run(main())


def test_consumer_group_manual_commit_resumes_where_committed(
    kafka_bootstrap: str, unique_topic: Callable[[str], str]
) -> None:
    topic = unique_topic("commit")
    group = f"{topic}-group"
    tp = TopicPartition(topic, 0)

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_poll_records=4)

    async def take(c: AIOKafkaConsumer, n: int) -> list[int]:
        offsets: list[int] = []
        deadline = time.monotonic() + 30
        while len(offsets) < n:
            assert time.monotonic() < deadline, f"only {len(offsets)} of {n} records"
            for msgs in (await c.getmany(timeout_ms=500, max_records=n - len(offsets))).values():
                offsets.extend(m.offset for m in msgs)
        return offsets

    async def main() -> None:
        await create_topics(kafka_bootstrap, {topic: 1})
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(10):
                await producer.send(topic, f"m{i}".encode(), partition=0)
            await producer.flush()
        finally:
            await producer.stop()

        first = consumer()
        await first.start()
        try:
            assert await take(first, 4) == [0, 1, 2, 3]
            assert await first.committed(tp) is None  # nothing committed automatically
            await first.commit({tp: OffsetAndMetadata(4, "after m3")})
            assert await first.committed(tp) == 4
        finally:
            await first.stop()

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
            assert offsets[tp].offset == 4 and offsets[tp].metadata == "after m3"
        finally:
            await admin.close()

        second = consumer()
        await second.start()
        try:
            assert await take(second, 6) == [4, 5, 6, 7, 8, 9]
            await second.commit()  # commit the consumed position
            assert await second.committed(tp) == 10
        finally:
            await second.stop()

    asyncio.run(main())


def test_two_consumers_in_one_group_rebalance(
    kafka_bootstrap: str, unique_topic: Callable[[str], str]
) -> None:
    topic = unique_topic("rebalance")
    group = f"{topic}-group"
    partitions = 4

    class Recorder(ConsumerRebalanceListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.assigned: list[set[int]] = []
            self.revoked: list[set[int]] = []

        async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
            self.revoked.append({tp.partition for tp in revoked})

        async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
            self.assigned.append({tp.partition for tp in assigned})

    def member() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                heartbeat_interval_ms=300, session_timeout_ms=10_000)

    def owned(c: AIOKafkaConsumer) -> set[int]:
        return {tp.partition for tp in c.assignment()}

    async def main() -> None:
        await create_topics(kafka_bootstrap, {topic: partitions})
        received: dict[str, list[tuple[int, bytes]]] = {"c1": [], "c2": []}
        c1, c2 = member(), member()
        r1, r2 = Recorder(), Recorder()

        async def pump(name: str, c: AIOKafkaConsumer) -> None:
            for tp, msgs in (await c.getmany(timeout_ms=100)).items():
                assert tp in c.assignment()
                received[name].extend((m.partition, m.value) for m in msgs)
            if received[name]:
                # a rebalance may get in between: then the partition's next owner resumes
                with contextlib.suppress(CommitFailedError):
                    await c.commit()

        async def pump_both() -> None:
            await asyncio.gather(pump("c1", c1), pump("c2", c2))

        await c1.start()
        c1.subscribe([topic], listener=r1)
        try:
            await wait_for(lambda: owned(c1) == set(range(partitions)), "c1 to own every partition",
                           tick=lambda: pump("c1", c1))
            await c2.start()
            c2.subscribe([topic], listener=r2)
            try:
                await wait_for(
                    lambda: len(owned(c1)) == len(owned(c2)) == 2 and owned(c1) | owned(c2) == {0, 1, 2, 3},
                    "the group to split 4 partitions 2 + 2", tick=pump_both,
                )
                assert r1.revoked and r1.revoked[-1] == set(range(partitions))  # eager protocol
                assert r2.assigned[-1] == owned(c2)

                producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
                await producer.start()
                try:
                    for i in range(40):
                        await producer.send(topic, f"v{i}".encode(), partition=i % partitions)
                    await producer.flush()
                finally:
                    await producer.stop()
                await wait_for(lambda: len(received["c1"]) + len(received["c2"]) >= 40,
                               "40 records between the two members", tick=pump_both)
                for name, c in (("c1", c1), ("c2", c2)):
                    assert {p for p, _ in received[name]} == owned(c), name
                values = sorted(v for lst in received.values() for _, v in lst)
                assert values == sorted(f"v{i}".encode() for i in range(40))  # each exactly once
            finally:
                await c2.stop()  # leaves the group: c1 takes everything back
            await wait_for(lambda: owned(c1) == set(range(partitions)), "c1 to take all 4 back",
                           tick=lambda: pump("c1", c1))
            assert len(r1.assigned) >= 3  # all -> half -> all
        finally:
            await c1.stop()

    asyncio.run(main())


def test_transactional_consume_transform_produce_is_exactly_once(
    kafka_bootstrap: str, unique_topic: Callable[[str], str]
) -> None:
    src, dst = unique_topic("tx-in"), unique_topic("tx-out")
    group = f"{src}-group"
    n = 30

    async def read_all(isolation: str) -> list[bytes]:
        c = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None,
                             enable_auto_commit=False, isolation_level=isolation)
        await c.start()
        try:
            tps = [TopicPartition(dst, p) for p in range(2)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            ends = await c.end_offsets(tps)  # read_committed: the last stable offsets
            out: list[bytes] = []
            deadline = time.monotonic() + 20
            while [tp for tp in tps if await c.position(tp) < ends[tp]]:
                assert time.monotonic() < deadline, f"could not read {dst} to its end"
                for msgs in (await c.getmany(timeout_ms=300)).values():
                    out.extend(m.value for m in msgs)
            return out
        finally:
            await c.stop()

    async def main() -> None:
        await create_topics(kafka_bootstrap, {src: 2, dst: 2})
        plain = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await plain.start()
        try:
            for i in range(n):
                await plain.send(src, f"{i}".encode(), partition=i % 2)
            await plain.flush()
        finally:
            await plain.stop()

        consumer = AIOKafkaConsumer(src, bootstrap_servers=kafka_bootstrap, group_id=group,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    isolation_level="read_committed", max_poll_records=7)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{dst}-tx",
                                    enable_idempotence=True, acks="all")
        await consumer.start()
        await producer.start()
        aborted = 0
        done: set[bytes] = set()
        try:
            deadline = time.monotonic() + 60
            while len(done) < n:
                assert time.monotonic() < deadline, f"transformed only {len(done)} of {n}"
                batches = await consumer.getmany(timeout_ms=500)
                if not batches:
                    continue
                await producer.begin_transaction()
                offsets = {}
                for tp, msgs in batches.items():
                    for m in msgs:
                        await producer.send(dst, b"out-" + m.value, partition=m.partition)
                    offsets[tp] = msgs[-1].offset + 1
                await producer.send_offsets_to_transaction(offsets, group)
                if aborted == 0:  # the first attempt "crashes": abort, rewind, redo
                    await producer.abort_transaction()
                    aborted = sum(len(m) for m in batches.values())
                    for tp in batches:
                        committed = await consumer.committed(tp)
                        consumer.seek(tp, committed or 0)
                    continue
                await producer.commit_transaction()
                done.update(m.value for msgs in batches.values() for m in msgs)
            # the offsets went in with the outputs; they become visible to OffsetFetch once the
            # coordinator has written the commit markers, a moment after commit_transaction
            for tp in (TopicPartition(src, 0), TopicPartition(src, 1)):
                deadline = time.monotonic() + 15
                while (committed := await consumer.committed(tp)) != n // 2:
                    assert time.monotonic() < deadline, f"{tp} committed {committed}, not {n // 2}"
                    await asyncio.sleep(0.1)
        finally:
            await producer.stop()
            await consumer.stop()

        committed_view = await read_all("read_committed")
        assert sorted(committed_view) == sorted(f"out-{i}".encode() for i in range(n))
        uncommitted_view = await read_all("read_uncommitted")  # aborted records are in the log
        assert aborted > 0 and len(uncommitted_view) == n + aborted

    asyncio.run(main())
