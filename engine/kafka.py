"""The Apache Kafka transport (aiokafka): the same processors, records moved through a broker.

- Every topic of a deployment has the same partition count; a request's records all go to
  partition ``crc32(request id) % partitions``, so joins are co-partitioned and any number
  of engine processes in one consumer group (range assignment) share the work. The record
  key is ``<partition>.<pipeline>.<request id>``; headers carry the lineage.
- Producing: a record is encoded once (binary framing, see :mod:`engine.record`) straight
  into an aiokafka batch of its topic-partition (one C call, no coroutine or future per
  record); a sender task submits whole batches (``send_batch``). The work loop never waits
  for the broker: it processes the next poll while the last one's batches are sent and
  acknowledged.
- At-least-once: offsets are committed only after the outputs of the consumed records were
  acknowledged by the broker, and never past a record that still waits in a join or a
  batch. A committer task commits, in order and at most every ``commit_interval_ms``, the
  newest offsets whose outputs are all acknowledged; if producing fails for good, nothing
  after it is committed and the worker stops consuming. Redelivered records carry the same
  deterministic record ids; processors drop what they already decided (``redelivers``),
  and consumers of results deduplicate by record id.
- ``exactly_once=True`` wraps each consumed batch in a Kafka transaction (outputs and
  offsets commit together; consumers read committed data only). It costs a transaction
  round trip per batch, which the work loop waits for.
- A record that cannot be decoded (a null value included), or one too large to produce,
  goes to the errors topic with the reason; the consumer moves on. Error and absence
  records too large are cut, not refused by the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
import zlib
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.producer.message_accumulator import BatchBuilder

from engine.lineage import Lineage, new_span_id, new_trace_id
from engine.record import (
    ERROR_TEXT_LIMIT,
    REFUSED_SUFFIX,
    Record,
    bounded_error,
    failure_records,
)
from engine.transport import Handler, Host

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORD_BYTES = 1_000_000
# A batch being built closes at this size (a single larger record still goes, alone); the
# broker's default message.max.bytes (1 MiB) bounds it.
BATCH_BYTES = 512 * 1024

STOP_FLUSH_S = 30.0  # how long stop() waits for the broker to acknowledge what is left
# How long stop() lets the poll in hand finish (steps running as tasks included); a poll
# that takes longer is abandoned uncommitted, so its records are read again.
STOP_WAIT_S = 10.0

Acks = list["asyncio.Future[None]"]

# Kafka's rule for topic names: at most 249 of ASCII alphanumerics, '.', '_' and '-'.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


class TopicSetupError(KafkaError):
    """The deployment's topics cannot be used: an invalid name, a partition count that does
    not match ``partitions``, a topic the broker refused to create."""


def partition_of(request_id: str, partitions: int) -> int:
    return zlib.crc32(request_id.encode()) % partitions


async def _acknowledged(acks: Iterable[asyncio.Future[None]]) -> None:
    """Wait for acknowledgements; raise the first failure. Unlike ``gather``, a waiter
    cancelled (the commit loop, at stop) leaves the acknowledgements themselves alone, so
    the next waiter still sees them."""
    acks = list(acks)
    if acks:
        await asyncio.wait(acks)
        for ack in acks:
            ack.result()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, transport: KafkaTransport) -> None:
        self.transport = transport

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.transport._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.transport._on_assigned(set(assigned))


class _Batch:
    """Records for one topic-partition in publish order; ``acked`` resolves once the broker
    acknowledged all of them (or holds the error that stopped them)."""

    __slots__ = ("topic", "partition", "builder", "acked", "mark")

    def __init__(self, topic: str, partition: int, builder: BatchBuilder) -> None:
        self.topic = topic
        self.partition = partition
        self.builder = builder
        self.acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.mark = -1  # the last poll whose outputs went into this batch

    def settle(self, ack: asyncio.Future[Any]) -> None:
        if self.acked.done():
            return
        if ack.cancelled():
            self.acked.set_exception(asyncio.CancelledError("produce cancelled"))
        elif (exc := ack.exception()) is not None:
            log.error("producing %d records to %s[%d] failed: %r", self.builder.record_count(),
                      self.topic, self.partition, exc)
            self.acked.set_exception(exc)
        else:
            self.acked.set_result(None)


class KafkaTransport:
    """Moves records through Kafka. ``group_id`` names the deployment: processes sharing it
    share the work.

    ``step_inputs``: also write each step's joined inputs to ``model.<step>.inputs`` (the
    Seldon layout, for readers outside the engine; a 3-step chain then writes 7 records per
    request instead of 4); otherwise that topic is written only when a step of the
    deployment reads it.
    ``max_batch`` bounds the records read per poll; ``commit_interval_ms`` how often
    acknowledged offsets are committed (less often means fewer commit requests and, after a
    crash, more records read again and de-duplicated).
    """

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
        max_batch: int = 1000,
        commit_interval_ms: int = 100,
        step_inputs: bool = False,
        stop_wait_s: float = STOP_WAIT_S,
        worker_id: str | None = None,
        transaction_timeout_ms: int = 60000,
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.partitions = partitions
        self.exactly_once = exactly_once
        self.max_record_bytes = max_record_bytes
        self.client_id = client_id or f"flowcause-{uuid.uuid4().hex[:8]}"
        self.poll_ms = poll_ms
        self.max_batch = max_batch
        self.commit_interval_ms = commit_interval_ms
        self.step_inputs = step_inputs
        self.stop_wait_s = stop_wait_s
        # Exactly-once: the transactional id is ``<group>-<worker id>``. A stable worker id
        # (a restarted worker takes its predecessor's) fences the predecessor at once: its
        # open transaction is aborted when the new producer starts. Without one, a random id
        # leaves a killed worker's transaction open until ``transaction_timeout_ms`` passes,
        # and read_committed readers of its partitions wait that long.
        self.worker_id = worker_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self._topics: list[str] = []
        self._host: Host | None = None
        self._work: dict[str, list[Handler]] = defaultdict(list)
        self._broadcast: dict[str, list[Handler]] = defaultdict(list)
        self._wanted: dict[str, bool] = {}
        # Batches not yet submitted, in the order they were opened (so per partition in
        # publish order), the one still open per topic-partition, and how many records
        # they hold; submitted ones until acknowledged.
        self._unsent: deque[_Batch] = deque()
        self._open: dict[tuple[str, int], _Batch] = {}
        self._unsent_records = 0
        self._in_flight: set[asyncio.Future[None]] = set()
        # Acknowledgements of the batches that received outputs since the last poll.
        self._mark = 0
        self._touched: Acks = []
        self._producer: AIOKafkaProducer | None = None
        self._work_consumer: AIOKafkaConsumer | None = None
        self._result_consumer: AIOKafkaConsumer | None = None
        self._work_task: asyncio.Task[None] | None = None
        self._helpers: list[asyncio.Task[None]] = []  # sender, committer, results reader
        self._errors_topic: str | None = None
        self._control_topics: dict[str, str] = {}
        self._lock = asyncio.Lock()  # one batch (or one rebalance) at a time
        self._send_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._send_due = asyncio.Event()
        self._commit_due = asyncio.Event()
        self._stopping = False
        self._last: dict[TopicPartition, int] = {}
        # Per processed poll: its outputs' acknowledgements and the offsets they make safe.
        self._commits: deque[tuple[Acks, dict[TopicPartition, int]]] = deque()
        self._queued: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self.stats = {"consumed": 0, "produced": 0, "poison": 0, "oversized": 0}

    # -- Transport protocol ----------------------------------------------------------------
    def prepare(self, topics: Iterable[str], host: Host) -> None:
        self._topics = sorted(set(topics))
        self._host = host
        self._errors_topic = next((t for t in self._topics if t.endswith(".errors.errors")), None)
        # pipeline -> its control topic (<prefix>.<namespace>.pipeline.<name>.control)
        self._control_topics = {t.split(".")[-2]: t for t in self._topics
                                if t.endswith(".control") and t.split(".")[-3] == "pipeline"}

    def subscribe(self, topic: str, handler: Handler, shared: bool = True) -> None:
        (self._work if shared else self._broadcast)[topic].append(handler)

    def wants(self, topic: str) -> bool:
        wanted = self._wanted.get(topic)
        if wanted is None:
            # Only a step's inputs topic is ever skipped: the step runs in this process, so
            # the record is for outside readers (``step_inputs``) or a step of ours reading it.
            head, _, port = topic.rpartition(".")
            step_inputs = port == "inputs" and head.rpartition(".")[0].endswith(".model")
            wanted = self._wanted[topic] = (not step_inputs or self.step_inputs
                                            or topic in self._work or topic in self._broadcast)
        return wanted

    def publish(self, topic: str, record: Record) -> None:
        value = record.encode_value()
        lin = record.lineage
        if len(value) > self.max_record_bytes:  # every kind: the broker would refuse it
            self.stats["oversized"] += 1
            if record.kind == "data":
                self._oversized(topic, record, len(value))
                return
            # an error or absence notice: its text is what is large, and it must still go
            record = Record(lin, kind=record.kind, error=bounded_error(
                record.error or "", min(ERROR_TEXT_LIMIT, self.max_record_bytes // 8)))
            value = record.encode_value()
        partition = partition_of(lin.request_id, self.partitions)
        key = f"{partition}.{lin.pipeline}.{lin.request_id}".encode()
        headers = lin.to_headers()
        batch = self._open.get((topic, partition))
        if batch is None or batch.builder.append(timestamp=None, key=key, value=value,
                                                 headers=headers) is None:
            assert self._producer is not None, "publish before start"
            batch = self._open[(topic, partition)] = _Batch(topic, partition,
                                                            self._producer.create_batch())
            self._unsent.append(batch)
            batch.builder.append(timestamp=None, key=key, value=value, headers=headers)
        if batch.mark != self._mark:
            batch.mark = self._mark
            self._touched.append(batch.acked)
        self._unsent_records += 1
        self._send_due.set()

    def _oversized(self, topic: str, record: Record, size: int) -> None:
        """A node's output too large to produce is that node's failure, as if its step had
        raised: an error record (origin ``<node>.errors``) and, in the record's place, an
        absence notice on its pipeline's control topic, so that joins and the output stage
        downstream decide at once, as on the embedded bus when a step fails."""
        lin = record.lineage
        reason = (f"record for {topic} is {size} bytes, over the {self.max_record_bytes}-byte "
                  f"limit; dropped")
        control = self._control_topics.get(lin.pipeline)
        if self._errors_topic is None or control is None:
            log.error("%s (no errors or control topic)", reason)
            return
        error, notice = failure_records(lin, lin.step or lin.origin, lin.origin, reason)
        self.publish(self._errors_topic, error)
        self.publish(control, notice)

    def _publish_error(self, lineage: Lineage, reason: str) -> None:
        if self._errors_topic is None:
            log.error("%s (no errors topic)", reason)
            return
        error = lineage.child(lineage.pipeline, f"{lineage.step or lineage.origin}{REFUSED_SUFFIX}",
                              lineage.span_id, (lineage.record_id,), lineage.generation)
        self.publish(self._errors_topic, Record(error, kind="error", error=reason))

    # -- life cycle ----------------------------------------------------------------------
    async def _create_topics(self) -> None:
        """Create the missing topics; every topic, old or new, must have ``partitions``
        partitions (co-partitioning), else :class:`TopicSetupError`."""
        bad = [t for t in self._topics if not _TOPIC_NAME.fullmatch(t)]
        if bad:
            raise TopicSetupError(
                f"invalid Kafka topic name {bad[0]!r}: a topic name is 1 to 249 of ASCII "
                f"letters, digits, '.', '_' and '-' (check the topic prefix and namespace)")
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            new = [NewTopic(t, self.partitions, 1) for t in self._topics if t not in existing]
            raced = []
            if new:
                response = await admin.create_topics(new)
                for topic, code, message, *_ in response.topic_errors:
                    if code == TopicAlreadyExistsError.errno:  # another worker created it meanwhile
                        raced.append(topic)
                    elif code:
                        raise TopicSetupError(f"cannot create topic {topic!r}: "
                                              f"{for_code(code).__name__}: {message}")
            old = [t for t in self._topics if t in existing or t in raced]
            wrong = []
            for info in await admin.describe_topics(old) if old else ():
                count = len(info["partitions"])
                if info["error_code"] == 0 and count != self.partitions:
                    wrong.append(f"{info['topic']} ({count})")
            if wrong:
                raise TopicSetupError(
                    f"{len(wrong)} existing topic(s) do not have {self.partitions} partitions, "
                    f"as this worker was told (every topic of a deployment needs the same "
                    f"count): {', '.join(sorted(wrong)[:5])}{' ...' if len(wrong) > 5 else ''}; "
                    f"start the worker with the topics' partition count or use new topics")
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    async def start(self) -> None:
        try:
            await self._start_clients()
        except BaseException:
            # a failed start leaves nothing running: stop the clients it did start
            for task in (self._work_task, *self._helpers):
                if task is not None:
                    task.cancel()
            await self._stop_clients()
            raise

    async def _stop_clients(self) -> None:
        for client in (self._work_consumer, self._result_consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    async def _start_clients(self) -> None:
        await self._create_topics()
        txn = ({"transactional_id": f"{self.group_id}-{self.worker_id or self.client_id}",
                "transaction_timeout_ms": self.transaction_timeout_ms}
               if self.exactly_once else {})
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, client_id=self.client_id, acks="all",
            enable_idempotence=True, max_request_size=self.max_record_bytes + 65536,
            max_batch_size=BATCH_BYTES, **txn,
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
        if self._work:
            self._work_consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, client_id=self.client_id,
                group_id=self.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
                isolation_level=isolation, partition_assignment_strategy=(RangePartitionAssignor,),
                max_poll_records=self.max_batch, session_timeout_ms=10000,
                heartbeat_interval_ms=1000,
            )
            self._work_consumer.subscribe(sorted(self._work), listener=_Rebalance(self))
            await self._work_consumer.start()
        self._start_tasks()

    def _start_tasks(self) -> None:
        """The loops, once the clients are there."""
        if self._result_consumer is not None:
            self._helpers.append(asyncio.create_task(self._results_loop()))
        if self._work_consumer is not None:
            self._work_task = asyncio.create_task(self._work_loop())
        if not (self._work_consumer and self.exactly_once):  # there, only transactions send
            self._helpers.append(asyncio.create_task(self._send_loop()))
        if self._work_consumer is not None and not self.exactly_once:
            self._helpers.append(asyncio.create_task(self._commit_loop()))

    async def stop(self) -> None:
        # The work loop finishes the poll in hand (its outputs built, its offsets queued).
        self._stopping = True
        if self._work_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._work_task),
                                       self.stop_wait_s + self.poll_ms / 1000)
        tasks = [t for t in (self._work_task, *self._helpers) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._work_task = None
        self._helpers.clear()
        with contextlib.suppress(Exception):  # the producer's own timeouts bound it, and ours
            await asyncio.wait_for(self._finish(), STOP_FLUSH_S)
        await self._stop_clients()

    async def wait_failure(self) -> BaseException:
        """Wait until the transport's loops end while it is not being stopped (a loop that
        raised, a produce that failed for good); returns what ended them. A worker process
        waits on this besides its stop signal: a transport that stopped working must stop
        the process."""
        tasks = [t for t in (self._work_task, *self._helpers) if t is not None]
        if not tasks:
            await asyncio.Event().wait()  # nothing to fail
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        task = done.pop()
        if task.cancelled():
            return RuntimeError("a Kafka transport task was cancelled")
        return task.exception() or RuntimeError("a Kafka transport task ended")

    async def _finish(self) -> None:
        """Send what is left and commit what that makes safe."""
        await self._flush()
        if self._work_consumer is not None and not self.exactly_once:
            await self._commit_acknowledged(everything=True)

    async def drain(self) -> None:
        await self._flush()

    # -- producing -----------------------------------------------------------------------
    async def _submit(self) -> None:
        """Hand the batches built so far to the producer (they are then sent and acked)."""
        assert self._producer is not None
        async with self._send_lock:
            while self._unsent:
                batch = self._unsent[0]
                tp = (batch.topic, batch.partition)
                if self._open.get(tp) is batch:
                    del self._open[tp]
                batch.builder.close()
                try:
                    # Waits while the partition's previous batch is still queued (backpressure).
                    ack = await self._producer.send_batch(batch.builder, batch.topic,
                                                          partition=batch.partition)
                except asyncio.CancelledError:
                    raise  # not submitted: it stays first in line for the next call
                except Exception as exc:  # noqa: BLE001 - recorded on the batch, seen by waiters
                    ack = asyncio.get_running_loop().create_future()
                    ack.set_exception(exc)
                self._unsent.popleft()
                count = batch.builder.record_count()
                self._unsent_records -= count
                self.stats["produced"] += count
                self._in_flight.add(batch.acked)
                batch.acked.add_done_callback(self._in_flight.discard)
                ack.add_done_callback(batch.settle)

    async def _send_loop(self) -> None:
        while True:
            await self._send_due.wait()
            self._send_due.clear()
            if self.exactly_once:  # a client-only process: a transaction of its own
                await self._flush()
            else:
                await self._submit()

    async def _flush(self) -> None:
        """Send everything published so far and wait until the broker acknowledged it."""
        if not self.exactly_once:
            await self._submit()
            await _acknowledged(self._in_flight)
            return
        if not self._unsent:
            return
        assert self._producer is not None
        async with self._lock:  # a transaction of its own, never inside a poll's
            await self._producer.begin_transaction()
            await self._submit()
            await self._producer.commit_transaction()

    def _take_touched(self) -> Acks:
        """Acknowledgements covering every output since the last call; starts a new poll."""
        touched, self._touched = self._touched, []
        self._mark += 1
        return touched

    # -- consuming -----------------------------------------------------------------------
    def _decode(self, msg: Any) -> Record | None:
        try:
            record = Record.decode(msg.value, msg.headers or ())
        except Exception as exc:  # noqa: BLE001 - whatever it is, the record is poison
            self._poison(msg, exc)
            return None
        record.source = (msg.topic, msg.partition, msg.offset)
        return record

    def _poison(self, msg: Any, exc: Exception) -> None:
        self.stats["poison"] += 1
        reason = f"undecodable record on {msg.topic}[{msg.partition}]@{msg.offset}: {exc}"
        log.warning(reason)
        lineage = Lineage(f"poison-{msg.topic}-{msg.partition}-{msg.offset}", new_trace_id(),
                          new_span_id(), "unknown", "poison")
        self._publish_error(lineage, reason)

    def _deliver(self, batches: dict[TopicPartition, list[Any]]) -> None:
        decode = Record.decode
        for tp, messages in batches.items():
            topic, partition = tp.topic, tp.partition
            handlers = self._work.get(topic, ())
            for msg in messages:
                try:
                    record = decode(msg.value, msg.headers or ())
                except Exception as exc:  # noqa: BLE001 - a null value, bad headers: all poison
                    self._poison(msg, exc)
                    continue
                record.source = (topic, partition, msg.offset)
                for handler in handlers:
                    try:
                        handler(record)
                    except Exception:  # a handler bug must not strand the records behind it
                        log.exception("delivery of %r failed", record)
            self._last[tp] = messages[-1].offset
            self.stats["consumed"] += len(messages)

    async def _work_loop(self) -> None:
        consumer = self._work_consumer
        assert consumer is not None
        while not self._stopping:
            batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_batch)
            for helper in self._helpers:
                if helper.done():  # outputs were lost: stop rather than run uncommitted
                    helper.result()
                    raise RuntimeError("a Kafka transport task ended")
            if self.exactly_once:
                async with self._lock:
                    await self._transact(batches)
                continue
            if self._unsent_records > 4 * self.max_batch:
                await self._submit()  # the broker is behind: let it catch up first
            async with self._lock:
                self._deliver(batches)
                await self._run_tasks()
                offsets = self._committable()
                acks = self._take_touched()
                if acks or offsets != self._queued:
                    self._commits.append((acks, offsets))
                    self._queued = offsets
                    self._commit_due.set()

    async def _transact(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Exactly-once: one transaction holds a poll's outputs and its consumed offsets."""
        producer = self._producer
        assert producer is not None
        if not batches and not self._unsent:
            return
        await producer.begin_transaction()
        self._deliver(batches)
        await self._run_tasks()
        await self._submit()
        offsets = self._committable()
        if offsets:
            await producer.send_offsets_to_transaction(offsets, self.group_id)
        await producer.commit_transaction()
        self._take_touched()

    async def _run_tasks(self) -> None:
        """Let steps that run as tasks (async, threaded, batched) finish and publish."""
        assert self._host is not None
        while tasks := self._host.running_tasks():
            await asyncio.gather(*tasks, return_exceptions=True)

    def _committable(self) -> dict[TopicPartition, int]:
        """Per partition: the next offset to read, but never past a record still held."""
        held: dict[TopicPartition, int] = {}
        assert self._host is not None
        for record in self._host.held_records():
            if record.source is not None:
                tp = TopicPartition(record.source[0], record.source[1])
                held[tp] = min(held.get(tp, record.source[2]), record.source[2])
        return {tp: held.get(tp, last + 1) for tp, last in self._last.items()}

    async def _commit_loop(self) -> None:
        while True:
            await self._commit_due.wait()
            self._commit_due.clear()
            await self._commit_acknowledged()
            await asyncio.sleep(self.commit_interval_ms / 1000)

    async def _commit_acknowledged(self, everything: bool = False) -> None:
        """Commit the newest queued offsets whose outputs, and all before, are acknowledged:
        at least the oldest queued (waiting for it), or ``everything`` queued.

        A produce that failed for good raises here, so nothing past it is ever committed."""
        consumer = self._work_consumer
        assert consumer is not None
        async with self._commit_lock:
            offsets: dict[TopicPartition, int] = {}
            while self._commits:
                acks, snapshot = self._commits[0]
                if everything or not offsets or all(ack.done() for ack in acks):
                    await _acknowledged(acks)
                else:
                    break  # commit the acknowledged part now, the rest next time
                self._commits.popleft()
                offsets = snapshot
            if offsets and offsets != self._committed:
                try:
                    await consumer.commit(offsets)
                except (CommitFailedError, IllegalStateError) as exc:  # rebalancing: re-read later
                    log.warning("offset commit skipped: %s", exc)
                else:
                    self._committed = offsets

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            if self.exactly_once:
                await self._transact({})
            else:
                await self._run_tasks()
                self._commits.append((self._take_touched(), self._committable()))
                with contextlib.suppress(Exception):
                    await self._submit()
                    await self._commit_acknowledged(everything=True)
            for tp in revoked:
                self._last.pop(tp, None)
            self._queued = {}

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
                    if record is None:
                        continue
                    for handler in self._broadcast.get(msg.topic, ()):
                        try:
                            handler(record)
                        except Exception:  # one bad result must not stop the others
                            log.exception("delivery of %r failed", record)
