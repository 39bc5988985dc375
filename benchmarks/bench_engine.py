"""Engine throughput on the embedded bus against a bare asyncio-queue relay, in one process.

The engine runs a 3-step chain (``s1 -> s2 -> s3``, each step passes its tensor on) and does
all of its work per request: pipeline input record, per-step join/projection, the step's
inputs and outputs records with fresh lineage (span id, parents), and the pipeline output
join and result future. The baseline relays the same request messages through three stages
connected by ``asyncio.Queue``, each with a future that the last stage resolves (the caller
gets every answer, as from the engine), and does nothing else. Both are measured alternately, several
rounds, and the best round of each is compared.

Memory: 100,000 requests are sent and all answered; ``tracemalloc`` reports the peak, and a
second run of 100,000 shows whether memory is retained afterwards (it must not grow).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
import tracemalloc

import numpy as np
from _args import positive_int

from engine.engine import Engine
from engine.spec import load_pipelines
from engine.tensors import Tensor

CHAIN = {
    "metadata": {"name": "chain"},
    "spec": {
        "steps": [
            {"name": "s1"},
            {"name": "s2", "inputs": ["s1"]},
            {"name": "s3", "inputs": ["s2"]},
        ],
        "output": {"steps": ["s3"]},
    },
}


def passthrough(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": inputs["x"]}


def payloads(n: int) -> list[tuple[Tensor, ...]]:
    data = np.arange(4, dtype=np.float32)
    return [(Tensor("x", "FP32", data),) for _ in range(n)]


async def run_engine(engine: Engine, requests: list[tuple[Tensor, ...]]) -> float:
    start = time.perf_counter()
    futures = []
    for tensors in requests:
        record = engine.make_request("chain", tensors)
        futures.append(engine.expect(record.lineage.request_id, "chain"))
        engine.submit(record)
    results = await asyncio.gather(*futures)
    elapsed = time.perf_counter() - start
    assert all(r.ok and len(r.outputs) == 1 for r in results)
    return len(requests) / elapsed


Message = tuple[tuple[Tensor, ...], "asyncio.Future[tuple[Tensor, ...]]"] | None


async def run_relay(requests: list[tuple[Tensor, ...]]) -> float:
    """Each request travels with a future through three queue stages; the last stage answers
    it. The caller sends everything, then awaits every answer, as with the engine."""
    loop = asyncio.get_running_loop()
    queues: list[asyncio.Queue[Message]] = [asyncio.Queue() for _ in range(4)]

    async def stage(q_in: asyncio.Queue[Message], q_out: asyncio.Queue[Message]) -> None:
        while (item := await q_in.get()) is not None:
            await q_out.put(item)
        await q_out.put(None)

    async def answer(q: asyncio.Queue[Message]) -> None:
        while (item := await q.get()) is not None:
            item[1].set_result(item[0])

    start = time.perf_counter()
    stages = [asyncio.create_task(stage(queues[i], queues[i + 1])) for i in range(3)]
    answering = asyncio.create_task(answer(queues[3]))
    futures = []
    for tensors in requests:
        future: asyncio.Future[tuple[Tensor, ...]] = loop.create_future()
        futures.append(future)
        await queues[0].put((tensors, future))
    await queues[0].put(None)
    results = await asyncio.gather(*futures)
    await asyncio.gather(answering, *stages)
    elapsed = time.perf_counter() - start
    assert len(results) == len(requests)
    return len(requests) / elapsed


async def memory(engine: Engine, n: int) -> tuple[float, float]:
    """(peak MiB during n requests, MiB still held after they are done)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    await run_engine(engine, payloads(n))
    # The loop keeps its last handle (the wake-up holding gather's results) until it runs the
    # next one: let it turn over so "held afterwards" counts only what the engine keeps.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (peak - base) / 2**20, (current - base) / 2**20


TARGET_RATIO = 0.35  # engine / relay requests per second, best rounds


async def main(n: int, rounds: int, mem_n: int) -> None:
    engine = Engine(load_pipelines(CHAIN), {"s1": passthrough, "s2": passthrough,
                                            "s3": passthrough})
    async with engine:
        requests = payloads(n)
        await run_engine(engine, requests[:1000])  # warm-up
        eng_best = relay_best = 0.0
        for r in range(rounds):
            eng = await run_engine(engine, requests)
            rel = await run_relay(requests)
            eng_best, relay_best = max(eng_best, eng), max(relay_best, rel)
            print(f"round {r + 1}: engine {eng:10,.0f} req/s   relay {rel:10,.0f} req/s")
        print()
        print(f"{time.strftime('%Y-%m-%d')}: 3-step chain, {n:,} requests, best of {rounds} "
              f"rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"  bare asyncio-queue relay : {relay_best:10,.0f} requests/s")
        print(f"  flowcause embedded engine: {eng_best:10,.0f} requests/s")
        ratio = eng_best / relay_best
        print(f"  ratio engine / relay     : {ratio:10.2f}   (target >= {TARGET_RATIO}): "
              f"{'ok' if ratio >= TARGET_RATIO else 'MISSED'}")
        peak1, held1 = await memory(engine, mem_n)
        peak2, held2 = await memory(engine, mem_n)
        print(f"memory, {mem_n:,} requests in flight-and-done (tracemalloc):")
        print(f"  run 1: peak {peak1:7.1f} MiB, held afterwards {held1:6.2f} MiB")
        print(f"  run 2: peak {peak2:7.1f} MiB, held afterwards {held2:6.2f} MiB")
        print("  growth between runs: "
              f"{held2 - held1:+.2f} MiB (pending joins: "
              f"{sum(len(p.table) for p in engine.processors)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=positive_int, default=100_000)
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--memory-requests", type=positive_int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds, args.memory_requests))
