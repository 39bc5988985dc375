"""``flowcause traces PATH``: what a trace store holds."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pandas as pd
import pyarrow as pa

from engine.cli import request_id
from tracing.files import not_a_store
from tracing.store import TraceStore


def _when(stamp: pd.Timestamp | None) -> str:
    return stamp.isoformat() if stamp is not None else "-"


def print_summary(store: TraceStore) -> None:
    summaries = store.summary()
    if not summaries:
        print(f"{store.root}: no committed batches")
    for s in summaries:
        print(f"pipeline {s.pipeline}: {s.requests} request{'' if s.requests == 1 else 's'}, "
              f"{_when(s.first)} .. {_when(s.last)}, "
              f"{s.batches} batch{'' if s.batches == 1 else 'es'}")
        for step, counts in s.status.items():
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            latency = s.latency_ms.get(step)
            median = f"median {latency:.3f} ms" if latency is not None else "never ran"
            print(f"  {step:<32} {statuses:<40} {median}")


def print_request(store: TraceStore, request_id: str) -> int:
    records = store.records(request_id)
    if records.empty:
        print(f"flowcause traces: no records for request {request_id!r}", file=sys.stderr)
        return 1
    for r in records.to_dict("records"):
        where = r["node"] if r["kind"] == "step" else f"<{r['kind']}>"
        line = f"{_when(r['time'])}  {r['pipeline']}.{where}  {r['status']}"
        if not pd.isna(r["latency_ms"]):
            line += f"  {r['latency_ms']:.3f} ms"
        print(line)
        for port in ("inputs", "outputs"):
            for name, view in r[port].items():
                shown = view["data"].tolist() if view["data"] is not None else \
                    {k: view[k] for k in ("mean", "std", "min", "max", "hash") if view.get(k) is not None}
                print(f"      {port[:-1]} {name} {view['datatype']}{view['shape']}: {shown}")
        if isinstance(r["error"], str):
            print(f"      error: {r['error']}")
    return 0


def cmd_traces(args: argparse.Namespace) -> int:
    try:
        store = TraceStore(args.path)
    except FileNotFoundError as exc:
        print(f"flowcause traces: {exc}", file=sys.stderr)
        return 2
    problem = not_a_store(store.root)
    if problem:
        print(f"flowcause traces: {problem}", file=sys.stderr)
        return 2
    try:
        if args.request is not None:
            return print_request(store, args.request)
        print_summary(store)
    except pa.ArrowException as exc:  # a batch file that is no Parquet (truncated, overwritten):
        # the message names it; an unreadable one is an OSError, which flowcause reports too
        print(f"flowcause traces: {exc}", file=sys.stderr)
        return 2
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("traces", help="summarise a trace store (or show one request)")
    p.add_argument("path", metavar="PATH", help="trace store directory")
    p.add_argument("--request", metavar="ID", type=request_id,
                   help="show every recorded node of this request")
    p.set_defaults(func=cmd_traces)
