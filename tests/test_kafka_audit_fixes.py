"""Fixes of the Kafka transport audit, each checked against the real broker (or the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engine.engine import Engine
from engine.kafka import KafkaTransport
from engine.lineage import Lineage
from engine.record import Record
from engine.spec import load_pipelines
from engine.tensors import Tensor
from engine.topics import Topics
from tests.kafka_steps import PIPELINE, STEPS

ROOT = Path(__file__).resolve().parent.parent
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def x(i: float) -> tuple[Tensor, ...]:
    return (Tensor.from_array("x", np.array([float(i)])),)


def fresh_topics(name: str) -> Topics:
    return Topics(prefix=f"fix{name}{uuid.uuid4().hex[:8]}")


def one_partition(bootstrap: str, name: str) -> tuple[Topics, KafkaTransport]:
    """Topics of their own, and a transport on one partition in a group of their own."""
    topics = fresh_topics(name)
    return topics, KafkaTransport(bootstrap, group_id=topics.prefix, partitions=1)


async def committed(bootstrap: str, group: str, tps: list[TopicPartition]
                    ) -> dict[str, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp.topic: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


async def end_offset(bootstrap: str, tp: TopicPartition) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


# -- finding 3: a null value (tombstone) is poison, not the end of a loop -----------------------

def test_tombstones_are_poison_and_the_worker_carries_on(kafka_bootstrap: str) -> None:
    async def main() -> None:
        topics, transport = one_partition(kafka_bootstrap, "tomb")
        async with Engine(load_pipelines(PIPELINE), STEPS, transport=transport,
                          topics=topics) as engine:
            assert (await engine.infer("kscale", x(1), timeout=20)).ok
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            lin = Lineage("tomb-1", "1" * 32, "2" * 16, "kscale", "inputs")
            # one on a work topic (the work loop), one on the errors topic (the results loop)
            for topic in (topics.pipeline("kscale", "inputs"), topics.errors):
                await producer.send_and_wait(topic, value=None, key=b"k", partition=0,
                                             headers=lin.to_headers())
            await producer.stop()
            result = await engine.infer("kscale", x(2), timeout=10)
            assert result.ok and result.outputs[0].data.tolist() == [2 + 4 + 2]
            for _ in range(50):
                if transport.stats["poison"] >= 2:
                    break
                await asyncio.sleep(0.1)
            assert transport.stats["poison"] == 2
            assert transport._work_task is not None and not transport._work_task.done()
            assert not any(h.done() for h in transport._helpers)

    asyncio.run(main())


def test_record_decode_rejects_a_null_value_with_value_error() -> None:
    lin = Lineage("r", "1" * 32, "2" * 16, "p", "inputs")
    with pytest.raises(ValueError, match="null value"):
        Record.decode(None, lin.to_headers())


# -- finding 1: a batched join holds every record it consumed ---------------------------------

BATCH_JOIN = PIPELINE.replace(
    "      inputs: [features.outputs.f, kscale.inputs.x]\n",
    "      inputs: [features.outputs.f, kscale.inputs.x]\n"
    "      joinWindowMs: 4000\n"
    "      batch:\n        size: 10\n        windowMs: 3000\n")


def test_batched_join_commits_neither_joined_record_while_the_run_waits(
        kafka_bootstrap: str) -> None:
    async def main() -> None:
        topics, transport = one_partition(kafka_bootstrap, "bj")
        tps = [TopicPartition(topics.pipeline("kscale", "inputs"), 0),
               TopicPartition(topics.model("features", "outputs"), 0)]
        async with Engine(load_pipelines(BATCH_JOIN), STEPS, transport=transport,
                          topics=topics) as engine:
            future = engine.expect("req-1", "kscale")
            engine.submit(engine.make_request("kscale", x(1), request_id="req-1"))
            for _ in range(40):  # joined, waiting in the batch (windowMs 3000)
                await asyncio.sleep(0.1)
                if any(p.batcher and p.batcher.pending for p in engine.processors):
                    break
            held = {r.source[0] for r in engine.held_records() if r.source}
            assert held == {tp.topic for tp in tps}
            await asyncio.sleep(0.5)  # several commit intervals
            offsets = await committed(kafka_bootstrap, topics.prefix, tps)
            assert all(o is None or o == 0 for o in offsets.values()), offsets
            # the batch runs (the step's shapes make it an error answer: either ends the wait)
            assert (await asyncio.wait_for(future, 10)).request_id == "req-1"

    asyncio.run(main())


# -- finding 2: a graceful stop never commits a request its running step did not answer --------

SLOW = """\
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: slowp
spec:
  steps:
    - name: slow
  output:
    steps: [slow]
"""


def slow_step(seconds: float):  # noqa: ANN201 - an async step
    async def slow(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        await asyncio.sleep(seconds)
        return {"y": inputs["x"] + 1}
    return slow


async def step_started(engine: Engine) -> None:
    """Wait (up to 5 s) until a step of ``engine`` runs as a task."""
    for _ in range(100):
        if engine.running_tasks():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no step started within 5 s")


def test_stop_lets_a_running_async_step_finish_before_committing(kafka_bootstrap: str) -> None:
    async def main() -> None:
        topics, transport = one_partition(kafka_bootstrap, "stopa")
        engine = Engine(load_pipelines(SLOW), {"slow": slow_step(1.0)}, transport=transport,
                        topics=topics)
        await engine.start()
        engine.submit(engine.make_request("slowp", x(1), request_id="req-1"))
        await step_started(engine)
        await engine.stop()
        inputs = TopicPartition(topics.pipeline("slowp", "inputs"), 0)
        outputs = TopicPartition(topics.model("slow", "outputs"), 0)
        done = await committed(kafka_bootstrap, topics.prefix, [inputs])
        answered = await end_offset(kafka_bootstrap, outputs)
        # never committed past a request whose step produced nothing
        assert answered == 1 or not done[inputs.topic], (answered, done)
        assert answered == 1  # here the poll in hand finished: the step's output is out

    asyncio.run(main())


def test_stop_leaves_an_abandoned_step_uncommitted_and_it_is_redelivered(
        kafka_bootstrap: str) -> None:
    async def main() -> None:
        topics = fresh_topics("stopb")
        spec = load_pipelines(SLOW)
        transport = KafkaTransport(kafka_bootstrap, group_id=topics.prefix, partitions=1,
                                   stop_wait_s=0.2)
        engine = Engine(spec, {"slow": slow_step(3.0)}, transport=transport, topics=topics)
        await engine.start()
        engine.submit(engine.make_request("slowp", x(1), request_id="req-1"))
        await step_started(engine)
        await engine.stop()  # gives up on the step after 0.2 s
        inputs = TopicPartition(topics.pipeline("slowp", "inputs"), 0)
        assert not (await committed(kafka_bootstrap, topics.prefix, [inputs]))[inputs.topic]
        second = KafkaTransport(kafka_bootstrap, group_id=topics.prefix, partitions=1)
        async with Engine(spec, {"slow": slow_step(0.0)}, transport=second,
                          topics=topics) as engine2:
            result = await asyncio.wait_for(engine2.expect("req-1", "slowp"), 15)
            assert result.ok and result.outputs[0].data.tolist() == [2.0]

    asyncio.run(main())


# -- finding 4: error texts are bounded, and every kind of record is size-checked ---------------

BIG = 2_000_000


def big_error_steps() -> dict[str, object]:
    def model(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if inputs["x"][0] == 2:
            raise ValueError("x" * BIG)
        return STEPS["model"](inputs)  # type: ignore[operator]
    return {**STEPS, "model": model}


def test_a_huge_step_error_is_truncated_on_the_embedded_bus() -> None:
    async def main() -> None:
        async with Engine(load_pipelines(PIPELINE), big_error_steps()) as engine:
            result = await engine.infer("kscale", x(2), timeout=10)
        assert result.error is not None and len(result.error) < 5000
        assert result.error.endswith(f"... [truncated: {BIG + 47} characters in all]")

    asyncio.run(main())


def test_a_huge_step_error_does_not_stop_the_kafka_worker(kafka_bootstrap: str) -> None:
    async def main() -> None:
        topics, transport = one_partition(kafka_bootstrap, "bigerr")
        async with Engine(load_pipelines(PIPELINE), big_error_steps(), transport=transport,
                          topics=topics) as engine:
            failed = await engine.infer("kscale", x(2), timeout=10)
            assert failed.error is not None and "truncated" in failed.error
            assert len(failed.error) < 5000
            # an error record published as is (not through a step) is cut by the transport
            lin = Lineage("huge-1", "1" * 32, "2" * 16, "kscale", "model.errors")
            transport.publish(topics.errors, Record(lin, kind="error", error="y" * BIG))
            later = await engine.infer("kscale", x(3), timeout=10)
            assert later.ok and later.outputs[0].data.tolist() == [3 + 9 + 3]
            assert transport.stats["oversized"] == 1
            assert not any(h.done() for h in transport._helpers)

    asyncio.run(main())


# -- finding 9: `serve` fails with one line, and a failed start leaves no client running --------

def serve_args(tmp_path: Path, bootstrap: str, *extra: str) -> list[str]:
    spec = tmp_path / "kscale.yaml"
    spec.write_text(PIPELINE)
    return ["serve", str(spec), "--models", str(ROOT / "tests" / "kafka_steps.py"),
            "--bootstrap", bootstrap, *extra]


def test_serve_reports_an_unreachable_broker_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    assert main(serve_args(tmp_path, "127.0.0.1:1", "--partitions", "1")) == 2
    err = capsys.readouterr().err
    assert "flowcause: Kafka at 127.0.0.1:1: KafkaConnectionError" in err
    assert "Traceback" not in err


def test_serve_rejects_an_invalid_topic_prefix_before_starting_any_client(
        kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    assert main(serve_args(tmp_path, kafka_bootstrap, "--prefix", "bad prefix")) == 2
    err = capsys.readouterr().err
    assert "invalid Kafka topic name 'bad prefix." in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_serve_rejects_zero_partitions(tmp_path: Path) -> None:
    from engine.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(serve_args(tmp_path, "127.0.0.1:1", "--partitions", "0"))
    assert exit_.value.code == 2
    with pytest.raises(ValueError, match="at least 1"):
        KafkaTransport("127.0.0.1:1", partitions=0)


def test_a_failed_start_stops_the_clients_it_started(
        kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.errors import KafkaConnectionError

    async def refuse(self: AIOKafkaConsumer) -> None:
        raise KafkaConnectionError("injected: the consumer cannot start")

    monkeypatch.setattr(AIOKafkaConsumer, "start", refuse)

    async def main() -> None:
        topics, transport = one_partition(kafka_bootstrap, "failstart")
        engine = Engine(load_pipelines(PIPELINE), STEPS, transport=transport, topics=topics)
        with pytest.raises(KafkaConnectionError):
            await engine.start()
        assert transport._producer is not None and transport._producer._closed

    asyncio.run(main())


# -- finding 5: a worker whose transport died stops, non-zero ------------------------------------

BOOM_STEPS = """\
import asyncio
import contextlib

from engine.kafka import KafkaTransport
from tests.kafka_steps import STEPS


async def _boom(self):
    await asyncio.sleep(0.5)
    raise RuntimeError("injected work loop failure")


KafkaTransport._work_loop = _boom
"""


def test_serve_exits_non_zero_when_its_transport_dies(kafka_bootstrap: str,
                                                       tmp_path: Path) -> None:
    models = tmp_path / "boom_steps.py"
    models.write_text(BOOM_STEPS)
    prefix = f"fixboom{uuid.uuid4().hex[:8]}"
    args = serve_args(tmp_path, kafka_bootstrap, "--partitions", "1", "--prefix", prefix,
                      "--group", prefix)
    args[args.index("--models") + 1] = str(models)
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"serve kept running with a dead transport (exit {proc.returncode} on "
                    f"SIGTERM)")
    assert proc.returncode == 1, (out, err)
    assert "serving kscale" in out
    assert "flowcause: the Kafka transport stopped working: RuntimeError: injected" in err


# -- finding 10: `kafka_broker.py run` with a command that does not exist -----------------------

def test_broker_script_run_reports_a_missing_command(kafka_bootstrap: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "kafka_broker.py"), "--state",
                           str(tmp_path / "state.json"), "run", "--", "/nonexistent/cmd"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FLOWCAUSE_KAFKA_BOOTSTRAP": kafka_bootstrap})
    assert proc.returncode == 2
    assert "error: cannot run '/nonexistent/cmd': No such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_broker_script_run_reports_a_missing_command_after_starting_a_broker(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOWCAUSE_KAFKA_BOOTSTRAP"}
    state = tmp_path / "state.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "kafka_broker.py"), "--state",
                           str(state), "run", "--", "/nonexistent/cmd"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "error: cannot run '/nonexistent/cmd': No such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not state.exists()  # and the broker it started was stopped


# -- finding 8: existing topics with another partition count ------------------------------------

def test_existing_topics_with_another_partition_count_are_refused(kafka_bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from engine.kafka import TopicSetupError

    async def main() -> None:
        topics = fresh_topics("parts")
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(topics.pipeline("kscale", "inputs"), 1, 1)])
        await admin.close()
        transport = KafkaTransport(kafka_bootstrap, group_id=topics.prefix, partitions=2)
        engine = Engine(load_pipelines(PIPELINE), STEPS, transport=transport, topics=topics)
        with pytest.raises(TopicSetupError, match="do not have 2 partitions") as err:
            await asyncio.wait_for(engine.start(), 15)
        assert f"{topics.pipeline('kscale', 'inputs')} (1)" in str(err.value)
        # the topics it created have 2, so a worker told 1 is refused too, naming them all
        other = KafkaTransport(kafka_bootstrap, group_id=topics.prefix, partitions=1)
        engine = Engine(load_pipelines(PIPELINE), STEPS, transport=other, topics=topics)
        with pytest.raises(TopicSetupError, match="do not have 1 partitions"):
            await asyncio.wait_for(engine.start(), 15)

    asyncio.run(main())


# -- finding 6: a reused request id is answered with an error, not dropped in silence ----------

def oip(request_id: str, value: float) -> dict[str, object]:
    return {"id": request_id,
            "inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [value]}]}


def test_a_reused_request_id_gets_an_error_answer_on_kafka(kafka_bootstrap: str) -> None:
    async def main() -> None:
        topics, transport = one_partition(kafka_bootstrap, "reuse")
        async with Engine(load_pipelines(PIPELINE), STEPS, transport=transport,
                          topics=topics) as engine:
            first = await engine.infer("kscale", oip("42", 1.0), timeout=15)
            assert first.ok and first.outputs[0].data.tolist() == [3.0]
            again = await engine.infer("kscale", oip("42", 2.0), timeout=8)
            assert again.error is not None
            assert "request id '42' was already used by another request" in again.error
            other = await engine.infer("kscale", oip("43", 2.0), timeout=8)
            assert other.ok and other.outputs[0].data.tolist() == [8.0]

    asyncio.run(main())


# -- finding 7: a restarted exactly-once worker with a stable id fences the dead one -----------

def test_a_stable_worker_id_aborts_the_dead_workers_open_transaction(
        kafka_bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def main() -> None:
        topics = fresh_topics("eosid")
        group = f"{topics.prefix}-engine"
        outputs = topics.pipeline("kscale", "outputs")
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(outputs, 1, 1)])
        await admin.close()
        # worker w0 "died" inside a transaction: begun, written to, never ended
        dead = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                transactional_id=f"{group}-w0")
        await dead.start()
        try:
            await dead.begin_transaction()
            await dead.send_and_wait(outputs, b"half", partition=0)
            # w0 restarts: its producer fences the old one and its transaction is aborted, so
            # read_committed readers (the engine's results reader) are not held up
            transport = KafkaTransport(kafka_bootstrap, group_id=group, partitions=1,
                                       exactly_once=True, worker_id="w0")
            async with Engine(load_pipelines(PIPELINE), STEPS, transport=transport,
                              topics=topics) as engine:
                result = await engine.infer("kscale", x(1), timeout=15)
                assert result.ok and result.outputs[0].data.tolist() == [3.0]
        finally:
            with contextlib.suppress(Exception):
                await dead.stop()

    asyncio.run(main())
