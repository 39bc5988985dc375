"""The wide view of one pipeline's traces: one row per request, one column per node.

Columns are named with the pipeline spec's own reference grammar (docs/trace-store.md):

- ``time``: when the request's record reached the pipeline's inputs topic (UTC);
- ``<pipeline>.inputs.<tensor>`` and ``<pipeline>.outputs.<tensor>``: the pipeline's input
  and output tensors;
- per step, in the order the steps first decided: ``<step>.ran`` (1.0/0.0),
  ``<step>.status`` (ok/error/timeout/skipped; missing (NaN) when no decision was recorded),
  ``<step>.latency_ms``, then ``<step>.outputs.<tensor>`` for each output tensor.

A size-1 tensor is one column holding its value (float; booleans 1.0/0.0; BYTES: the
string); a larger numeric tensor is six columns ``<ref>.mean .std .min .max .l2
.nan_count``, a larger BYTES tensor one column ``<ref>.hash``. A tensor the node did not
produce for a request is missing (NaN). A size-1 tensor whose datatype varies between
requests (a number for some, BYTES for others) is one object column holding each.

A request id sent again as a new request (another trace id; a redelivery keeps its trace)
is one row: the run whose input arrived last, its arrival time, decisions and tensors
(``records()`` keeps every run).

Each node shows one decision per request, whole (status, latency and tensors of that decision
only): the latest one that was not a skip (ok, error or timeout), else the latest skip. In a
loop a node decides many times (a step in the loop once per pass, then skips for the
generations that never come; a step after the loop once per pass it is fed), and the trailing
skips must not hide the last run. "Latest" is the highest generation, then the decision that
finished last (where one generation was decided twice: a request traced by two workers,
after a Kafka rebalance; a step after a loop), then the later batch file, then the later row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VECTOR_STATS = ("mean", "std", "min", "max", "l2", "nan_count")
RAN = ("ok", "error")


DECISION = ["request_id", "kind", "node"]


def _latest_runs(nodes: pd.DataFrame) -> np.ndarray:
    """Which rows of ``nodes`` belong to their request's latest run: where a request id was
    sent again as a new request (another trace id; a redelivery keeps its trace), the rows
    of the trace whose input arrived last, else all of them."""
    inputs = nodes[nodes["kind"] == "inputs"]
    if not (inputs.groupby("request_id")["trace_id"].nunique() > 1).any():
        return np.ones(len(nodes), bool)
    latest = inputs.sort_values("time", kind="stable").drop_duplicates("request_id", keep="last")
    trace = nodes["request_id"].map(latest.set_index("request_id")["trace_id"])
    return (nodes["trace_id"].eq(trace) | trace.isna()).to_numpy()


def _decisions(nodes: pd.DataFrame, current: np.ndarray) -> pd.DataFrame:
    """The node row that counts per (request, kind, node) among the ``current`` rows (see
    the module docstring), with ``_node``: its position in ``nodes``."""
    nodes = nodes.assign(_decided=nodes["status"].ne("skipped"),
                         _node=np.arange(len(nodes)))[current]
    order = ["_decided", "generation", "finished", *(["file"] if "file" in nodes else []),
             "_node"]
    return (nodes.sort_values(order, kind="stable", na_position="first")
            .drop_duplicates(DECISION, keep="last").drop(columns=["_decided"]))


def tensor_owners(nodes: pd.DataFrame, tensors: pd.DataFrame, batch: list[str]) -> np.ndarray:
    """For each row of ``tensors``, the position in ``nodes`` of the decision that made it,
    or -1 where that cannot be told (``batch``: the columns naming a batch group, ``file``
    among them where the reader gives it, in both tables). The frame and
    :meth:`tracing.store.TraceStore.records` both tell owners with it.

    A tensor row names its request, node, generation and batch file, not its node row. A
    skip has no tensors; a step's outputs are its ``ok`` decisions', its inputs those of the
    decisions that started (it ran: ``ok``, or ``error`` raised by its code); a pipeline
    record's tensors (direction: its port) are the record's. The recorder writes a batch's
    tensor rows in the order of their node rows, so within a batch group and direction one
    such decision owns them all; where there are several (a step in or after a loop, fed once
    per pass), each run's names are distinct and the ``k``-th owns the ``k``-th slice when
    every one made the same names; otherwise none does (left out, not guessed).
    """
    if not len(tensors) or not len(nodes):
        return np.full(len(tensors), -1, np.int64)
    is_step = nodes["kind"].eq("step")
    started = nodes["status"].ne("skipped") & nodes["started"].notna()
    keyed = nodes[batch].assign(_node=np.arange(len(nodes)))
    owner = pd.concat([keyed[is_step & nodes["status"].eq("ok")].assign(direction="outputs"),
                       keyed[is_step & started].assign(direction="inputs"),
                       keyed[~is_step].assign(direction=nodes.loc[~is_step, "kind"])])
    groups = owner.groupby([*batch, "direction"], sort=False, dropna=False)
    owner = owner.assign(run=groups.cumcount(), runs=groups["_node"].transform("size"))
    t = tensors[[*batch, "direction", "name"]].assign(_row=np.arange(len(tensors)))
    names = t.groupby([*batch, "direction"], sort=False, dropna=False)["name"]
    t = t.assign(_rank=names.cumcount(), _size=names.transform("size"),
                 _width=names.transform("nunique"))
    m = t.merge(owner, on=[*batch, "direction"], how="inner")
    own = (m["runs"] == 1) | ((m["_size"] == m["runs"] * m["_width"])
                              & (m["_rank"] // m["_width"] == m["run"]))
    out = np.full(len(tensors), -1, np.int64)
    out[m.loc[own, "_row"].to_numpy()] = m.loc[own, "_node"].to_numpy()
    return out


def _tensor_columns(pipeline: str, nodes: pd.DataFrame, tensors: pd.DataFrame,
                    decisions: pd.DataFrame, batch: list[str]
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """(numeric columns, string columns, column names per owning step) of the tensor rows
    of ``decisions`` (rows of ``nodes``) but a step's inputs.

    The owner of a pipeline's own inputs/outputs is "". Columns keep the order of the
    tensors in their records, a vector's statistics next to each other.
    """
    t = tensors[~((tensors["kind"] == "step") & (tensors["direction"] == "inputs"))]
    t = t[np.isin(tensor_owners(nodes, t, batch), decisions["_node"].to_numpy())]
    t = t.drop_duplicates(["request_id", "kind", "node", "direction", "name"], keep="last")
    is_step = t["kind"] == "step"
    t = t.assign(owner=t["node"].where(is_step, ""),
                 ref=t["node"].where(is_step, pipeline) + "." + t["direction"] + "." + t["name"])
    is_bytes = t["datatype"] == "BYTES"
    single = t["size"] == 1
    vectors = t[~single & ~is_bytes]
    numbers = pd.concat([
        t.loc[single & ~is_bytes, ["request_id", "ref", "value"]],
        *(vectors[["request_id", "ref", stat]].rename(columns={stat: "value"})
          .assign(ref=vectors["ref"] + "." + stat) for stat in VECTOR_STATS),
    ]).astype({"value": "float64"})
    hashed = t[~single & is_bytes]
    texts = pd.concat([
        t.loc[single & is_bytes, ["request_id", "ref", "text"]],
        hashed[["request_id", "ref", "hash"]].rename(columns={"hash": "text"})
        .assign(ref=hashed["ref"] + ".hash"),
    ])
    forms = {
        "scalar": set(t.loc[single, "ref"]),
        "vector": set(vectors["ref"]),
        "hashed": set(hashed["ref"]),
    }
    by_owner: dict[str, list[str]] = {}
    for owner, ref in t[["owner", "ref"]].drop_duplicates("ref").itertuples(index=False):
        names = by_owner.setdefault(owner, [])
        if ref in forms["scalar"]:
            names.append(ref)
        if ref in forms["vector"]:
            names.extend(f"{ref}.{stat}" for stat in VECTOR_STATS)
        if ref in forms["hashed"]:
            names.append(f"{ref}.hash")
    return (numbers.pivot(index="request_id", columns="ref", values="value"),
            texts.pivot(index="request_id", columns="ref", values="text"), by_owner)


def _column(numbers: pd.DataFrame, texts: pd.DataFrame, ref: str) -> pd.Series:
    """Column ``ref``: float64 numbers, or str texts, or, where a size-1 tensor was a number
    for some requests and BYTES for others, an object column holding each."""
    if ref not in texts:
        return numbers[ref]
    if ref not in numbers:
        return texts[ref]
    return numbers[ref].astype(object).where(numbers[ref].notna(), texts[ref])


def wide_frame(pipeline: str, nodes: pd.DataFrame, tensors: pd.DataFrame,
               start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """The frame of ``pipeline`` for requests that arrived in ``[start, end)``.

    ``nodes`` and ``tensors`` are rows of the store's two tables for this pipeline; they may
    hold other requests too.
    """
    current = _latest_runs(nodes)
    arrivals = nodes.loc[current & (nodes["kind"] == "inputs").to_numpy()].groupby(
        "request_id")["time"].min()
    if start is not None:
        arrivals = arrivals[arrivals >= start]
    if end is not None:
        arrivals = arrivals[arrivals < end]
    arrivals = arrivals.sort_values(kind="stable")
    index = arrivals.index
    out: dict[str, pd.Series] = {"time": arrivals}

    # a batch group: what one batch file (``file``: its position in commit order, when the
    # reader gives it) holds of a node in one generation
    batch = [*DECISION, "generation", *(["file"] if "file" in nodes and "file" in tensors else [])]
    held = nodes["request_id"].isin(index).to_numpy()
    nodes, current = nodes[held], current[held]
    decisions = _decisions(nodes, current)
    steps = decisions[decisions["kind"] == "step"]
    order = steps.groupby("node")["finished"].min().sort_values(kind="stable").index
    status = steps.pivot(index="request_id", columns="node", values="status").reindex(index)
    latency = steps.pivot(index="request_id", columns="node", values="latency_ms").reindex(index)

    numbers, texts, by_owner = _tensor_columns(pipeline, nodes,
                                               tensors[tensors["request_id"].isin(index)],
                                               decisions, batch)
    numbers, texts = numbers.reindex(index), texts.reindex(index)

    def tensor_columns(owner: str, prefix: str) -> None:
        for ref in by_owner.get(owner, ()):
            if ref.startswith(prefix):
                out[ref] = _column(numbers, texts, ref)

    tensor_columns("", f"{pipeline}.inputs.")
    for step in order:
        out[f"{step}.ran"] = status[step].isin(RAN).astype("float64")
        out[f"{step}.status"] = status[step]
        out[f"{step}.latency_ms"] = latency[step].astype("float64")
        tensor_columns(step, f"{step}.outputs.")
    tensor_columns("", f"{pipeline}.outputs.")
    frame = pd.DataFrame(out, index=index)
    frame.index.name = "request_id"
    return frame
