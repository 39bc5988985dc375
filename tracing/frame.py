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
produce for a request is missing (NaN). With cycles, the latest generation of each node
counts; where one generation was decided twice (a request traced by two workers, after a
Kafka rebalance) the decision that finished last (then: the later batch file, the later row)
counts, with its own tensors only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VECTOR_STATS = ("mean", "std", "min", "max", "l2", "nan_count")
RAN = ("ok", "error")


DECISION = ["request_id", "kind", "node"]


def _decisions(nodes: pd.DataFrame) -> pd.DataFrame:
    """The node row that counts per (request, kind, node): the latest generation, and within
    it the decision that finished last, then the one in the later batch file (``file``, the
    batch's position in commit order, when the reader gives it), then the later row."""
    order = ["generation", "finished", *(["file"] if "file" in nodes else []), "_row"]
    return (nodes.assign(_row=np.arange(len(nodes)))
            .sort_values(order, kind="stable", na_position="first")
            .drop_duplicates(DECISION, keep="last").drop(columns="_row"))


def _tensor_columns(pipeline: str, tensors: pd.DataFrame, decisions: pd.DataFrame
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """(numeric columns, string columns, column names per owning step) of the tensor rows.

    The owner of a pipeline's own inputs/outputs is "". Columns keep the order of the
    tensors in their records, a vector's statistics next to each other.
    """
    t = tensors[~((tensors["kind"] == "step") & (tensors["direction"] == "inputs"))]
    # only the tensors of the decision that counts (not another generation's, nor another
    # worker's run of the same generation)
    keys = [*DECISION, "generation", *(["file"] if "file" in t and "file" in decisions else [])]
    t = t.merge(decisions[keys], on=keys, how="inner")
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


def wide_frame(pipeline: str, nodes: pd.DataFrame, tensors: pd.DataFrame,
               start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """The frame of ``pipeline`` for requests that arrived in ``[start, end)``.

    ``nodes`` and ``tensors`` are rows of the store's two tables for this pipeline; they may
    hold other requests too.
    """
    arrivals = nodes.loc[nodes["kind"] == "inputs"].groupby("request_id")["time"].min()
    if start is not None:
        arrivals = arrivals[arrivals >= start]
    if end is not None:
        arrivals = arrivals[arrivals < end]
    arrivals = arrivals.sort_values(kind="stable")
    index = arrivals.index
    out: dict[str, pd.Series] = {"time": arrivals}

    decisions = _decisions(nodes[nodes["request_id"].isin(index)])
    steps = decisions[decisions["kind"] == "step"]
    order = steps.groupby("node")["finished"].min().sort_values(kind="stable").index
    status = steps.pivot(index="request_id", columns="node", values="status").reindex(index)
    latency = steps.pivot(index="request_id", columns="node", values="latency_ms").reindex(index)

    numbers, texts, by_owner = _tensor_columns(pipeline,
                                               tensors[tensors["request_id"].isin(index)],
                                               decisions)
    numbers, texts = numbers.reindex(index), texts.reindex(index)

    def tensor_columns(owner: str, prefix: str) -> None:
        for ref in by_owner.get(owner, ()):
            if ref.startswith(prefix):
                out[ref] = numbers[ref] if ref in numbers else texts[ref]

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
