"""One request's lineage as plain rows: every node it passed, with tensors and timings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tracing.store import TraceStore

SHOWN_VALUES = 8  # a tensor with more elements is shown by its summaries


def describe_tensor(name: str, view: Mapping[str, Any]) -> str:
    """``name DTYPE[shape] = values`` (or its summary statistics), for humans."""
    head = f"{name} {view['datatype']}{list(view['shape'])}"
    data = view.get("data")
    if data is not None and data.size <= SHOWN_VALUES:
        values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                  for v in np.asarray(data).reshape(-1).tolist()]
        return f"{head} = {values[0] if len(values) == 1 else values}"
    stats = ", ".join(f"{k} {view[k]:.4g}" for k in ("mean", "std", "min", "max") if k in view)
    return f"{head}: {stats or 'hash ' + str(view.get('hash'))}"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def lineage_rows(records: pd.DataFrame) -> list[dict[str, Any]]:
    """:meth:`TraceStore.records` output as JSON-ready rows, in the order nodes decided."""
    rows = []
    for r in records.to_dict("records"):
        latency = r["latency_ms"]
        rows.append({
            "pipeline": r["pipeline"],
            "node": r["node"] if r["kind"] == "step" else f"<{r['kind']}>",
            "generation": int(r["generation"]),
            "status": r["status"],
            "time": r["time"].isoformat() if not pd.isna(r["time"]) else None,
            "latency_ms": None if pd.isna(latency) else float(latency),
            "batch_size": None if pd.isna(r["batch_size"]) else int(r["batch_size"]),
            "inputs": [describe_tensor(k, v) for k, v in r["inputs"].items()],
            "outputs": [describe_tensor(k, v) for k, v in r["outputs"].items()],
            "error": _text(r["error"]),
            "record_id": _text(r["record_id"]),
            "parents": list(r["parents"]) if r["parents"] is not None else [],
            "trace_id": _text(r["trace_id"]),
        })
    return rows


def lineage(store: TraceStore, request_id: str) -> list[dict[str, Any]]:
    return lineage_rows(store.records(request_id))


def node_notes(rows: list[dict[str, Any]], pipeline: str) -> dict[str, list[str]]:
    """The DAG note of each node of ``pipeline`` in :func:`lineage_rows` rows: the status
    (and latency) of one decision, picked as the frame picks it (docs/trace-store.md): the
    latest that was not a skip, else the latest skip. In a loop the trailing skips of the
    generations never reached must not hide the runs. Latest: the highest generation, then
    the one that finished last (the rows' order)."""
    shown: dict[str, tuple[tuple[bool, int, int], dict[str, Any]]] = {}
    for i, r in enumerate(rows):
        if r["pipeline"] != pipeline:
            continue
        node, rank = r["node"].strip("<>"), (r["status"] != "skipped", r["generation"], i)
        if node not in shown or rank > shown[node][0]:
            shown[node] = (rank, r)
    return {node: [r["status"] + ("" if r["latency_ms"] is None else f", {r['latency_ms']:.3g} ms")]
            for node, (_, r) in shown.items()}
