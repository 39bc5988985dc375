"""What tracing costs the embedded engine: throughput with tracing off, spans only, and spans
plus the tensor trace store, in the engine's process and in a tracing process of its own.

The workload is the insurance-claims pipeline (5 steps, two routers, trigger joins) on rows
of the reference ``insurance_claims.csv``. Spans go to an exporter that drops them, so span
building and batching are measured but not a network or OTLP encoding; the trace store is
written to a temporary directory. Each mode has its own
engine; rounds interleave the modes, and a round's time runs from the first request to the
last answer *and* the collector's flush and span export, so work that lags behind is paid
for in the round that caused it. The best round of each mode is compared, in requests per second of
wall-clock time and, as a reading that other load on the machine disturbs less, in requests
per second of this process's CPU time (all its threads: Parquet encoding and span export
included).

With ``--step-work-us N`` every step first spends N microseconds of CPU holding the GIL, a
stand-in for the model a real step runs (the reference steps are one multiplication each,
so by default the engine's own overhead is all there is to slow down): ``make
bench-tracing`` runs N = 0, 100 and 250 (four steps run per request: about 1 ms).

With ``--sampled R`` (0 < R < 1) requests get spans at trace-id ratio R
(``OTEL_TRACES_SAMPLER=traceidratio``); the store still records every request.

"Full recording costs <= 15 %" is read two ways, both printed: spans + store against spans
only (what recording tensors adds to a traced engine), and spans + store against tracing off
(everything tracing costs). ``spans+store/process`` builds the spans and writes the store in
a tracing process (``FLOWCAUSE_TRACE_PROCESS``); its CPU time is the engine's process plus
the tracing process (read from ``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from _args import non_negative_float, positive_int, ratio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from engine.engine import Engine
from engine.lineage import parent_or_sampled
from engine.spec import load_pipelines
from engine.tensors import Tensor
from scenarios.steps.insurance_claims import STEPS, request_tensors
from tracing.collector import Collector, Sink
from tracing.offload import ProcessSinks
from tracing.recorder import StoreRecorder
from tracing.sampling import sampler
from tracing.spans import SpanSink

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "scenarios" / "pipelines" / "insurance_claims.yaml"
CLAIMS = ROOT / ".." / "shared" / "reference" / "insurance-claims" / "insurance_claims.csv"
PIPELINE = "insurance_claims"
MODES = ("off", "spans", "spans+store", "spans+store/process")


class DropExporter(SpanExporter):
    """Counts the spans it is given, and drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def full_sinks(store: Path) -> list[Sink]:
    """Spans to a dropping exporter, and the store (built in the tracing process)."""
    return [SpanSink(DropExporter()), StoreRecorder(store)]


def collector(mode: str, store: Path, exporter: DropExporter) -> Collector | None:
    if mode == "off":
        return None
    if mode == "spans+store/process":
        return Collector([ProcessSinks(functools.partial(full_sinks, store))])
    sinks: list[Sink] = [SpanSink(exporter)]
    if mode == "spans+store":
        sinks.append(StoreRecorder(store))
    return Collector(sinks)


def child_cpu_seconds(observer: Collector | None) -> float:
    """CPU seconds used so far by the observer's tracing process (0 without one)."""
    for sink in observer.sinks if observer is not None else ():
        if isinstance(sink, ProcessSinks) and sink.pid is not None:
            fields = Path(f"/proc/{sink.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


async def run_round(engine: Engine, requests: list[tuple[Tensor, ...]],
                    observer: Collector | None) -> tuple[float, float]:
    """(requests per wall-clock second, requests per CPU second)."""
    start, cpu = time.perf_counter(), time.process_time() + child_cpu_seconds(observer)
    futures = []
    for tensors in requests:
        record = engine.make_request(PIPELINE, tensors)
        futures.append(engine.expect(record.lineage.request_id, PIPELINE))
        engine.submit(record)
    results = await asyncio.gather(*futures)
    if observer is not None:
        observer.flush()
        for sink in observer.sinks:
            if isinstance(sink, SpanSink):
                sink.wait_exported()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() + child_cpu_seconds(observer) - cpu
    assert all(r.ok for r in results)
    return len(requests) / elapsed, len(requests) / cpu


def with_work(steps: dict[str, Callable[..., Any]], work_us: float) -> dict[str, Callable[..., Any]]:
    """The steps, each first busy for ``work_us`` microseconds of CPU, holding the GIL as
    Python-level model code does: a stand-in for the inference a real step performs."""
    if not work_us:
        return steps

    def busy(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def step(inputs: Any) -> Any:
            until = time.perf_counter() + work_us / 1e6
            while time.perf_counter() < until:
                pass
            return fn(inputs)
        return step

    return {name: busy(fn) for name, fn in steps.items()}


async def main(n: int, rounds: int, work_us: float, sampled: float) -> None:
    claims = pd.read_csv(CLAIMS).to_dict("records")
    requests = [request_tensors(claims[i % len(claims)]) for i in range(n)]
    pipelines = load_pipelines(SPEC)
    steps = with_work(STEPS, work_us)
    exporters = {m: DropExporter() for m in MODES}
    best = {m: (0.0, 0.0) for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        observers = {m: collector(m, Path(tmp) / m, exporters[m]) for m in MODES}
        chosen = sampler("traceidratio", str(sampled)) if sampled < 1 else parent_or_sampled
        engines = {m: Engine(pipelines, steps, observers=[o] if o else [], sampler=chosen)
                   for m, o in observers.items()}
        for mode, engine in engines.items():
            await engine.start()
            await run_round(engine, requests[:1000], observers[mode])  # warm-up
        for r in range(rounds):
            line = []
            for mode in MODES:
                wall, cpu = await run_round(engines[mode], requests, observers[mode])
                best[mode] = (max(best[mode][0], wall), max(best[mode][1], cpu))
                line.append(f"{mode} {wall:7,.0f} ({cpu:7,.0f} cpu)")
            print(f"round {r + 1}: " + "   ".join(line) + "  requests/s")
        for mode, engine in engines.items():
            await engine.stop()
            if observers[mode] is not None:
                observers[mode].close()
        store_bytes = sum(f.stat().st_size for f in Path(tmp).rglob("*.parquet"))
    dropped = sum(s.dropped for o in observers.values() if o is not None for s in o.sinks
                  if isinstance(s, SpanSink))
    undelivered = sum(s.dropped for o in observers.values() if o is not None for s in o.sinks
                      if isinstance(s, ProcessSinks))
    print()
    work = f", each step busy {work_us:g} us first" if work_us else " (step code: arithmetic only)"
    if sampled < 1:
        work += f", spans for a ratio {sampled:g} of requests"
    print(f"insurance-claims pipeline (5 steps){work}, {n:,} requests per round, "
          f"best of {rounds} rounds")
    print(f"  {'mode':<20}  {'requests/s':>12}  {'per CPU-second':>14}")
    for mode in MODES:
        print(f"  {mode:<20}  {best[mode][0]:12,.0f}  {best[mode][1]:14,.0f}")
    print(f"  spans exported: {exporters['spans'].spans:,} (spans), "
          f"{exporters['spans+store'].spans:,} (spans+store); store: {store_bytes / 2**20:.1f} MiB")
    print(f"  spans dropped in this process (spans, spans+store): {dropped}; events not "
          f"delivered to the tracing process: {undelivered} (spans dropped inside it: not counted)")
    for i, clock in enumerate(("wall-clock", "CPU time")):
        off, spans, full, process = (best[m][i] for m in MODES)
        print(f"  {clock}: spans / off {spans / off:.3f};  spans+store / spans {full / spans:.3f}"
              f" (recording costs {1 - full / spans:.1%}, target <= 15 %);"
              f"  spans+store / off {full / off:.3f} (all tracing costs {1 - full / off:.1%});"
              f"  in a tracing process: spans+store / off {process / off:.3f}"
              f" (all tracing costs {1 - process / off:.1%})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=positive_int, default=20_000)
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--step-work-us", type=non_negative_float, default=0.0,
                        help="CPU time each step spends before its arithmetic, as a model would")
    parser.add_argument("--sampled", type=ratio, default=1.0,
                        help="ratio of requests that get spans, in (0, 1] (the store records all)")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds, args.step_work_us, args.sampled))
