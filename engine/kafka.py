"""The Apache Kafka transport (aiokafka): the same processors, records moved through a broker.

- Every topic of a deployment has the same partition count; a request's records all go to
  partition ``crc32(request id) % partitions``, so joins are co-partitioned and any number
  of engine processes in one consumer group (range assignment) share the work. The record
  key is ``<partition>.<pipeline>.<request id>``; headers carry the lineage.
- At-least-once: offsets are committed only after the outputs of the consumed records were
  acknowledged by the broker, and never past a record that still waits in a join or a
  batch. Redelivered records carry the same deterministic record ids; processors drop
  what they already decided (``redelivers``), and consumers of results deduplicate by
  record id.
- ``exactly_once=True`` wraps each consumed batch in a Kafka transaction (outputs and
  offsets commit together; consumers read committed data only). It costs a transaction
  round trip per batch.
- A record that cannot be decoded, or one too large to produce, goes to the errors topic
  with the reason; the consumer moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import TopicAlreadyExistsError

from engine.lineage import Lineage, new_span_id, new_trace_id
from engine.record import Record
from engine.transport import Handler, Host

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORD_BYTES = 1_000_000


def partition_of(request_id: str, partitions: int) -> int:
    return zlib.crc32(request_id.encode()) % partitions


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, transport: KafkaTransport) -> None:
        self.transport = transport

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.transport._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.transport._on_assigned(set(assigned))


class KafkaTransport:
    """Moves records through Kafka. ``group_id`` names the deployment: processes sharing it
    share the work."""

    redelivers = True

    def __init__(
        self,
        bootstrap: str,
        group_id: str = "flowcause",
        partitions: int = 1,
        exactly_once: bool = False,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        client_id: str | None = None,
        poll_ms: int = 20,
    ) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.partitions = partitions
        self.exactly_once = exactly_once
        self.max_record_bytes = max_record_bytes
        self.client_id = client_id or f"flowcause-{uuid.uuid4().hex[:8]}"
        self.poll_ms = poll_ms
        self._topics: list[str] = []
        self._host: Host | None = None
        self._work: dict[str, list[Handler]] = defaultdict(list)
        self._broadcast: dict[str, list[Handler]] = defaultdict(list)
        self._outbox: list[tuple[str, bytes, bytes, int, list[tuple[str, bytes]]]] = []
        self._producer: AIOKafkaProducer | None = None
        self._work_consumer: AIOKafkaConsumer | None = None
        self._result_consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._errors_topic: str | None = None
        self._lock = asyncio.Lock()  # one batch (or one rebalance) at a time
        self._last: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._commit: asyncio.Future[None] | None = None
        self.stats = {"consumed": 0, "produced": 0, "poison": 0, "oversized": 0}

    # -- Transport protocol ----------------------------------------------------------------
    def prepare(self, topics: Iterable[str], host: Host) -> None:
        self._topics = sorted(set(topics))
        self._host = host
        self._errors_topic = next((t for t in self._topics if t.endswith(".errors.errors")), None)

    def subscribe(self, topic: str, handler: Handler, shared: bool = True) -> None:
        (self._work if shared else self._broadcast)[topic].append(handler)

    def wants(self, topic: str) -> bool:
        return True

    def publish(self, topic: str, record: Record) -> None:
        value, headers = record.encode()
        lin = record.lineage
        if len(value) > self.max_record_bytes and record.kind == "data":
            self.stats["oversized"] += 1
            self._publish_error(lin, f"record for {topic} is {len(value)} bytes, over the "
                                     f"{self.max_record_bytes}-byte limit; dropped")
            return
        partition = partition_of(lin.request_id, self.partitions)
        key = f"{partition}.{lin.pipeline}.{lin.request_id}".encode()
        self._outbox.append((topic, value, key, partition, headers))

    def _publish_error(self, lineage: Lineage, reason: str) -> None:
        if self._errors_topic is None:
            log.error("%s (no errors topic)", reason)
            return
        error = lineage.child(lineage.pipeline, f"{lineage.step or lineage.origin}.errors",
                              lineage.span_id, (lineage.record_id,), lineage.generation)
        self.publish(self._errors_topic, Record(error, kind="error", error=reason))

    # -- life cycle ----------------------------------------------------------------------
    async def _create_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [NewTopic(t, self.partitions, 1) for t in self._topics if t not in existing]
            if new:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
        finally:
            await admin.close()

    async def start(self) -> None:
        await self._create_topics()
        txn = {"transactional_id": f"{self.group_id}-{self.client_id}"} if self.exactly_once else {}
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, client_id=self.client_id, acks="all",
            enable_idempotence=True, max_request_size=self.max_record_bytes + 65536,
            linger_ms=1, **txn,
        )
        await self._producer.start()
        isolation = "read_committed" if self.exactly_once else "read_uncommitted"
        if self._broadcast:
            self._result_consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, client_id=self.client_id, group_id=None,
                enable_auto_commit=False, isolation_level=isolation,
            )
            await self._result_consumer.start()
            tps = [TopicPartition(t, p) for t in self._broadcast for p in range(self.partitions)]
            self._result_consumer.assign(tps)
            await self._result_consumer.seek_to_end(*tps)
            self._tasks.append(asyncio.create_task(self._results_loop()))
        if self._work:
            self._work_consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, client_id=self.client_id,
                group_id=self.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
                isolation_level=isolation, partition_assignment_strategy=(RangePartitionAssignor,),
                max_poll_records=500, session_timeout_ms=10000, heartbeat_interval_ms=1000,
            )
            self._work_consumer.subscribe(sorted(self._work), listener=_Rebalance(self))
            await self._work_consumer.start()
            self._tasks.append(asyncio.create_task(self._work_loop()))
        else:
            self._tasks.append(asyncio.create_task(self._flush_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self._flush()
        for client in (self._work_consumer, self._result_consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    async def drain(self) -> None:
        await self._flush()

    # -- moving records ------------------------------------------------------------------
    async def _flush(self) -> None:
        """Send the outbox and wait until the broker acknowledged all of it."""
        assert self._producer is not None
        while self._outbox:
            batch, self._outbox = self._outbox, []
            acks = [await self._producer.send(t, v, key=k, partition=p, headers=h)
                    for t, v, k, p, h in batch]
            await asyncio.gather(*acks)
            self.stats["produced"] += len(batch)

    def _decode(self, msg: Any) -> Record | None:
        try:
            record = Record.decode(msg.value, list(msg.headers or ()))
        except ValueError as exc:
            self.stats["poison"] += 1
            reason = (f"undecodable record on {msg.topic}[{msg.partition}]@{msg.offset}: {exc}")
            log.warning(reason)
            lineage = Lineage(f"poison-{msg.topic}-{msg.partition}-{msg.offset}", new_trace_id(),
                              new_span_id(), "unknown", "poison")
            self._publish_error(lineage, reason)
            return None
        record.source = (msg.topic, msg.partition, msg.offset)
        return record

    async def _work_loop(self) -> None:
        consumer = self._work_consumer
        assert consumer is not None
        while True:
            batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=500)
            async with self._lock:
                if self.exactly_once and (batches or self._outbox):
                    await self._producer.begin_transaction()  # type: ignore[union-attr]
                for tp, messages in batches.items():
                    for msg in messages:
                        self.stats["consumed"] += 1
                        self._last[tp] = msg.offset
                        record = self._decode(msg)
                        if record is not None:
                            for handler in self._work.get(msg.topic, ()):
                                handler(record)
                await self._settle()
                offsets = self._committable()
                if self.exactly_once:
                    if self._producer.transaction_state.is_in_transaction():  # type: ignore[union-attr]
                        if offsets:
                            await self._producer.send_offsets_to_transaction(  # type: ignore[union-attr]
                                offsets, self.group_id)
                        await self._producer.commit_transaction()  # type: ignore[union-attr]
                elif offsets and offsets != self._committed:
                    # The outputs of these offsets are acknowledged, so committing them may
                    # overlap with the next batch; one commit in flight at a time.
                    if self._commit is not None:
                        await self._commit
                    self._committed = offsets
                    self._commit = asyncio.ensure_future(consumer.commit(offsets))

    async def _settle(self) -> None:
        """Produce the outbox; let steps that run as tasks finish and produce theirs too."""
        assert self._host is not None
        await self._flush()
        while tasks := self._host.running_tasks():
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._flush()

    def _committable(self) -> dict[TopicPartition, int]:
        """Per partition: the next offset to read, but never past a record still held."""
        held: dict[TopicPartition, int] = {}
        assert self._host is not None
        for record in self._host.held_records():
            if record.source is not None:
                tp = TopicPartition(record.source[0], record.source[1])
                held[tp] = min(held.get(tp, record.source[2]), record.source[2])
        return {tp: held.get(tp, last + 1) for tp, last in self._last.items()}

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            if self._commit is not None:
                with contextlib.suppress(Exception):
                    await self._commit
            await self._settle()
            offsets = {tp: off for tp, off in self._committable().items() if tp in revoked}
            if offsets and not self.exactly_once:
                with contextlib.suppress(Exception):
                    await self._work_consumer.commit(offsets)  # type: ignore[union-attr]
            for tp in revoked:
                self._last.pop(tp, None)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        mine = {tp.partition for tp in assigned}
        assert self._host is not None
        # Join state of requests now owned by another process is dropped: it re-reads them.
        self._host.forget_requests(lambda rid: partition_of(rid, self.partitions) in mine)

    async def _results_loop(self) -> None:
        consumer = self._result_consumer
        assert consumer is not None
        while True:
            batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=1000)
            for messages in batches.values():
                for msg in messages:
                    record = self._decode(msg)
                    if record is not None:
                        for handler in self._broadcast.get(msg.topic, ()):
                            handler(record)
            if self._outbox and not self._work:
                await self._flush()

    async def _flush_loop(self) -> None:
        """A client-only process (no work subscriptions) still sends what it publishes."""
        while True:
            await asyncio.sleep(self.poll_ms / 1000)
            await self._flush()
