"""Durability: a clean exit keeps everything, kill -9 while writing leaves a readable store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from tracing.files import committed
from tracing.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]

# Sends insurance claims through the engine with a trace store attached; never calls close().
WRITER = """
import asyncio, sys
import pandas as pd
from engine.engine import Engine
from engine.spec import load_pipelines
from scenarios.steps.insurance_claims import STEPS, request_tensors
from tracing.collector import Collector
from tracing.recorder import StoreRecorder

store, count = sys.argv[1], int(sys.argv[2])
claims = pd.read_csv("../shared/reference/insurance-claims/insurance_claims.csv").to_dict("records")
collector = Collector([StoreRecorder(store)], flush_seconds=0.01, batch_events=250)

async def main():
    async with Engine(load_pipelines("scenarios/pipelines/insurance_claims.yaml"), STEPS,
                      observers=[collector]) as engine:
        sent = 0
        while count == 0 or sent < count:
            batch = [claims[(sent + i) % len(claims)] for i in range(50)]
            await asyncio.gather(*(engine.infer("insurance_claims", request_tensors(c),
                                                request_id=f"{sent + i}")
                                   for i, c in enumerate(batch)))
            sent += len(batch)
            await asyncio.sleep(0.001)  # let the writer thread in

asyncio.run(main())
"""


def start_writer(store: Path, count: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(store), str(count)], cwd=ROOT,
                            stderr=subprocess.PIPE)


def test_normal_exit_without_close_loses_nothing(tmp_path: Path) -> None:
    writer = start_writer(tmp_path, 300)
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err.decode()
    frame = TraceStore(tmp_path).frame("insurance_claims")
    assert sorted(frame.index, key=int) == [str(i) for i in range(300)]
    assert frame["insurance_claims.outputs.payout"].notna().all()


def kill_9_once_committed(writer: subprocess.Popen[bytes], store: Path, batches: int = 3) -> None:
    """``kill -9`` the writing process once the store holds ``batches`` committed batches."""
    try:
        deadline = time.monotonic() + 60
        while len(committed(store, ["insurance_claims"])) < batches:
            assert writer.poll() is None, writer.stderr.read().decode() if writer.stderr else ""
            assert time.monotonic() < deadline, "the writer committed nothing"
            time.sleep(0.01)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()


def test_kill_9_while_writing_leaves_a_readable_store(tmp_path: Path) -> None:
    writer = start_writer(tmp_path, 0)
    kill_9_once_committed(writer, tmp_path)
    assert writer.returncode == -signal.SIGKILL
    files = committed(tmp_path, ["insurance_claims"])
    for nodes, tensors in files:  # every committed file is whole
        assert pq.read_table(nodes).num_rows > 0
        assert pq.read_table(tensors).num_rows > 0
    frame = TraceStore(tmp_path).frame("insurance_claims")
    assert len(frame) >= 50
    # a request whose output was recorded is complete up to its output
    done = frame[frame["insurance_claims.outputs.payout"].notna()]
    assert len(done) > 0
    assert (done["calculate_claim_value.status"] == "ok").all()
    assert (done["calculate_claim_value.outputs.claim_value"]
            == 1.05 * done["insurance_claims.inputs.total_claim_amount"]).all()
