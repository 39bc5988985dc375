"""Edges of the wide frame: a node that decided many times for one request (a loop, a step
after a loop, a run and a failure in one batch), and a tensor whose datatype varies between
requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.engine import Engine
from engine.lineage import Lineage
from engine.observe import StepEvent
from engine.record import Record
from engine.spec import load_pipelines
from engine.tensors import Tensor
from tests.loop_example import LOOP_STEPS, LOOP_YAML
from tracing.collector import Collector
from tracing.events import EventBatch, Item, PortEvent
from tracing.recorder import StoreRecorder
from tracing.store import TraceStore

T0 = 1_800_000_000 * 10**9
MS = 1_000_000

def tensor(name: str, value: float | str) -> Tensor:
    if isinstance(value, str):
        return Tensor(name, "BYTES", np.array([value], dtype=object))
    return Tensor(name, "FP64", np.array([value]))


def arrival(rid: str) -> PortEvent:
    return PortEvent(T0, "p", "inputs", Record(Lineage(rid, "a" * 32, "b" * 16, "p", "inputs"),
                                               (tensor("x", 2.0),)))


def decision(rid: str, status: str, outputs: dict[str, float | str], finished_ms: int,
             generation: int = 0, took_ms: int = 1) -> StepEvent:
    """Step ``s`` of pipeline ``p`` deciding ``status`` for ``rid``, as the engine reports it:
    a skip has no tensors and no times (the collector times it when it decides)."""
    lineage = Lineage(rid, "a" * 32, "b" * 16, "p", "s.outputs", generation)
    finished, started = T0 + finished_ms * MS, T0 + (finished_ms - took_ms) * MS
    if status == "skipped":
        return StepEvent("p", "s", status, lineage, ("b" * 16,), finished_ns=finished)
    return StepEvent("p", "s", status, lineage, ("b" * 16,), (tensor("x", 2.0),),
                     tuple(tensor(k, v) for k, v in outputs.items()), started, started,
                     finished)


def frame_of(path: Path, events: list[Item]) -> pd.DataFrame:
    """The frame of pipeline ``p`` with ``events`` committed as one batch."""
    recorder = StoreRecorder(path)
    recorder.consume(EventBatch.of(events))
    recorder.flush()
    return TraceStore(path).frame("p")


def loop_store(tmp_path: Path) -> TraceStore:
    """The docs' loop pipeline run from x = 0 as request "r", recorded into a store."""
    store = tmp_path / "store"

    async def run() -> None:
        with Collector([StoreRecorder(store)]) as observer:
            async with Engine(load_pipelines(LOOP_YAML), LOOP_STEPS,
                              observers=[observer]) as engine:
                result = await engine.infer("loop", [tensor("x", 0.0)], request_id="r",
                                            timeout=30)
                assert result.ok, result.error

    asyncio.run(run())
    return TraceStore(store)


def test_a_loop_shows_each_steps_last_run_not_its_trailing_skips(tmp_path: Path) -> None:
    """inc runs at generations 0-2 then skips 3-5; fin (after the loop, generation 0) skips,
    skips, runs, then skips three more times: the frame shows the runs, whole."""
    traces = loop_store(tmp_path)
    recorded = traces.records("r")
    assert recorded.loc[recorded["node"] == "fin", "status"].tolist().count("skipped") >= 2
    assert (recorded.loc[recorded["node"] == "inc", "status"] == "skipped").any()
    row = traces.frame("loop").loc["r"]
    for step in ("inc", "check", "fin"):
        assert row[f"{step}.status"] == "ok" and row[f"{step}.ran"] == 1.0, step
        assert row[f"{step}.latency_ms"] >= 0.0, step
    assert row["inc.outputs.v"] == 3.0
    assert row["check.outputs.done"] == 3.0
    assert "check.outputs.again" not in row  # the shown run of check routed to done
    assert row["fin.outputs.result"] == 300.0
    assert row["loop.outputs.result"] == 300.0


def test_of_several_runs_in_one_batch_the_last_one_shows_with_its_own_outputs(
        tmp_path: Path) -> None:
    """Three runs of one generation in one batch file, the second finishing last: its own
    output, not the last row's (rows are in report order, the runs told apart by it)."""
    frame = frame_of(tmp_path, [arrival("r"),
                                decision("r", "ok", {"y": 1.0}, finished_ms=10),
                                decision("r", "ok", {"y": 2.0}, finished_ms=30, took_ms=7),
                                decision("r", "ok", {"y": 3.0}, finished_ms=20)])
    assert frame.loc["r", "s.status"] == "ok"
    assert frame.loc["r", "s.latency_ms"] == pytest.approx(7.0)
    assert frame.loc["r", "s.outputs.y"] == 2.0


def test_runs_whose_outputs_cannot_be_told_apart_are_left_missing_not_mixed(
        tmp_path: Path) -> None:
    """Two runs in one batch file, the first making y and z, the last y only: the three rows
    could be split either way, so no output shows (never the first run's z)."""
    frame = frame_of(tmp_path, [arrival("r"),
                                decision("r", "ok", {"y": 1.0, "z": 5.0}, finished_ms=10),
                                decision("r", "ok", {"y": 2.0}, finished_ms=20)])
    assert frame.loc["r", "s.status"] == "ok"
    assert "s.outputs.z" not in frame and "s.outputs.y" not in frame


def test_a_failure_after_a_run_in_one_batch_shows_without_the_runs_outputs(
        tmp_path: Path) -> None:
    frame = frame_of(tmp_path, [arrival("r"), decision("r", "ok", {"y": 1.0}, finished_ms=10),
                                decision("r", "error", {}, finished_ms=20, took_ms=3)])
    assert frame.loc["r", "s.status"] == "error" and frame.loc["r", "s.ran"] == 1.0
    assert frame.loc["r", "s.latency_ms"] == pytest.approx(3.0)
    assert "s.outputs.y" not in frame


def test_a_timeout_is_not_hidden_by_a_later_generations_skip(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, [arrival("r"),
                                decision("r", "timeout", {}, finished_ms=10, generation=1),
                                decision("r", "skipped", {}, finished_ms=20, generation=2)])
    assert frame.loc["r", "s.status"] == "timeout" and frame.loc["r", "s.ran"] == 0.0


def test_a_step_that_only_skipped_shows_its_latest_skip(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, [arrival("r"),
                                decision("r", "skipped", {}, finished_ms=10, generation=0),
                                decision("r", "skipped", {}, finished_ms=20, generation=1)])
    assert frame.loc["r", "s.status"] == "skipped" and frame.loc["r", "s.ran"] == 0.0
    assert np.isnan(frame.loc["r", "s.latency_ms"])


def test_a_tensor_whose_datatype_varies_keeps_its_numbers_and_its_texts(tmp_path: Path) -> None:
    """v is FP64 in even requests and BYTES in odd ones (r4's step did not make it): one
    object column; n, always a number, stays float64; t, always text, stays str."""
    events: list[Item] = []
    for i in range(5):
        rid = f"r{i}"
        outputs: dict[str, float | str] = {"n": float(i), "t": f"t{i}"}
        if i < 4:
            outputs["v"] = float(i) if i % 2 == 0 else f"str{i}"
        events += [arrival(rid), decision(rid, "ok", outputs, finished_ms=10)]
    frame = frame_of(tmp_path, events)
    assert frame["s.outputs.v"].dtype == object
    assert frame["s.outputs.v"].iloc[:4].tolist() == [0.0, "str1", 2.0, "str3"]
    assert pd.isna(frame.loc["r4", "s.outputs.v"])
    assert frame["s.outputs.n"].dtype == np.float64
    assert pd.api.types.is_string_dtype(frame["s.outputs.t"])
    assert frame["s.outputs.t"].tolist() == [f"t{i}" for i in range(5)]


# -------------------------------------------------------------- records(): each decision's own tensors

def values(views: dict[str, dict[str, object]]) -> dict[str, object]:
    """A records() ``inputs``/``outputs`` cell as name -> the size-1 tensor's value."""
    return {name: view["data"].reshape(-1)[0] for name, view in views.items()}  # type: ignore[union-attr]


def test_records_give_each_decision_of_a_loop_its_own_tensors_and_a_skip_none(
        tmp_path: Path) -> None:
    """docs/trace-store.md: a skipped step consumed nothing. inc runs at generations 0-2 (x =
    0, 1, 2) then skips; fin (generation 0 throughout) skips while the loop goes round, runs
    once, then skips: only its run shows done and result, each pass of inc its own x and v."""
    recorded = loop_store(tmp_path).records("r")
    steps = recorded[recorded["kind"] == "step"]
    skips = steps[steps["status"] == "skipped"]
    assert len(skips[skips["node"] == "fin"]) >= 2
    for row in skips.itertuples():
        assert row.inputs == {} and row.outputs == {}, (row.node, row.generation)
    ran = steps[steps["status"] == "ok"].sort_values(["node", "generation"])
    seen = {(r.node, r.generation): (values(r.inputs), values(r.outputs))
            for r in ran.itertuples()}
    assert seen == {
        ("inc", 0): ({"x": 0.0}, {"v": 1.0}),
        ("inc", 1): ({"x": 1.0}, {"v": 2.0}),
        ("inc", 2): ({"x": 2.0}, {"v": 3.0}),
        ("check", 0): ({"v": 1.0}, {"again": 1.0}),
        ("check", 1): ({"v": 2.0}, {"again": 2.0}),
        ("check", 2): ({"v": 3.0}, {"done": 3.0}),
        ("fin", 0): ({"done": 3.0}, {"result": 300.0}),
    }
    ports = recorded[recorded["kind"] != "step"].set_index("kind")
    assert values(ports.loc["inputs", "inputs"]) == {"x": 0.0}
    assert values(ports.loc["outputs", "outputs"]) == {"result": 300.0}


def records_of(path: Path, events: list[Item]) -> pd.DataFrame:
    """records("r") with ``events`` committed as one batch."""
    recorder = StoreRecorder(path)
    recorder.consume(EventBatch.of(events))
    recorder.flush()
    return TraceStore(path).records("r")


def step_tensors(recorded: pd.DataFrame) -> list[tuple[str, dict[str, object], dict[str, object]]]:
    steps = recorded[recorded["kind"] == "step"]
    return [(r.status, values(r.inputs), values(r.outputs)) for r in steps.itertuples()]


def test_records_tell_several_runs_in_one_batch_apart_as_the_frame_does(tmp_path: Path) -> None:
    """Three runs of one generation in one batch file (the second finishing last), a skip and
    a failure: each run shows its own output, the skip nothing, the failure its inputs only."""
    recorded = records_of(tmp_path, [arrival("r"),
                                     decision("r", "ok", {"y": 1.0}, finished_ms=10),
                                     decision("r", "skipped", {}, finished_ms=15),
                                     decision("r", "ok", {"y": 2.0}, finished_ms=30, took_ms=7),
                                     decision("r", "ok", {"y": 3.0}, finished_ms=20),
                                     decision("r", "error", {}, finished_ms=40)])
    assert step_tensors(recorded) == [("ok", {"x": 2.0}, {"y": 1.0}),
                                      ("skipped", {}, {}),
                                      ("ok", {"x": 2.0}, {"y": 3.0}),
                                      ("ok", {"x": 2.0}, {"y": 2.0}),
                                      ("error", {"x": 2.0}, {})]


def test_records_leave_out_outputs_of_runs_that_cannot_be_told_apart(tmp_path: Path) -> None:
    """As in the frame: the first run made y and z, the second y only; the three output rows
    could be split either way, so neither run shows outputs (never the other run's)."""
    recorded = records_of(tmp_path, [arrival("r"),
                                     decision("r", "ok", {"y": 1.0, "z": 5.0}, finished_ms=10),
                                     decision("r", "ok", {"y": 2.0}, finished_ms=20)])
    assert step_tensors(recorded) == [("ok", {"x": 2.0}, {}), ("ok", {"x": 2.0}, {})]


# -------------------------------------------------------------- a request id sent again

def run_of(rid: str, trace: str, at_ms: int, ran: str, x: float) -> list[Item]:
    """One request of a router pipeline ``p``: step ``ran`` of ``a``/``b`` runs on input
    ``x``, the other is skipped, all of it in trace ``trace`` from ``at_ms`` on."""
    def lineage(origin: str) -> Lineage:
        return Lineage(rid, trace, "b" * 16, "p", origin)

    x_in = (tensor("x", x),)
    at = T0 + at_ms * MS
    events: list[Item] = [PortEvent(at, "p", "inputs", Record(lineage("inputs"), x_in))]
    for step in ("a", "b"):
        if step == ran:
            events.append(StepEvent("p", step, "ok", lineage(f"{step}.outputs"), ("b" * 16,),
                                    x_in, (tensor("y", 10 * x),), at + MS, at + MS, at + 2 * MS))
        else:
            events.append(StepEvent("p", step, "skipped", lineage(f"{step}.outputs"),
                                    ("b" * 16,), finished_ns=at + 2 * MS))
    return events


@pytest.mark.parametrize("batches", [1, 2])
def test_a_request_id_sent_again_shows_its_latest_run_whole(tmp_path: Path, batches: int) -> None:
    """The same id sent twice as two requests (two traces), in one batch file or two: the
    frame's row is the second run's (arrival, decisions, tensors), never a mix of both; the
    summary counts two requests, records() keeps both runs."""
    first, second = run_of("r", "a" * 32, 0, "a", 1.0), run_of("r", "c" * 32, 5_000, "b", 2.0)
    recorder = StoreRecorder(tmp_path)
    for events in ([first + second] if batches == 1 else [first, second]):
        recorder.consume(EventBatch.of(events))
        recorder.flush()
    store = TraceStore(tmp_path)
    frame = store.frame("p")
    assert list(frame.index) == ["r"]
    row = frame.loc["r"]
    assert row["time"] == pd.Timestamp(T0 + 5_000 * MS, tz="UTC")
    assert (row["a.status"], row["b.status"]) == ("skipped", "ok")
    assert (row["p.inputs.x"], row["b.outputs.y"]) == (2.0, 20.0)
    assert pd.isna(row.get("a.outputs.y"))  # the first run's: not shown
    assert store.frame("p", end=pd.Timestamp(T0 + 1_000 * MS, tz="UTC")).empty
    (summary,) = store.summary()
    assert summary.requests == 2
    assert set(store.records("r")["trace_id"]) == {"a" * 32, "c" * 32}


def test_a_redelivered_request_is_one_run(tmp_path: Path) -> None:
    """A redelivery keeps the request's trace: its input recorded twice is still one
    request, and what its first delivery decided stays in the frame."""
    run = run_of("r", "a" * 32, 0, "a", 1.0)
    again = [e._replace(time_ns=e.time_ns + 3_000 * MS) for e in run if isinstance(e, PortEvent)]
    frame = frame_of(tmp_path, [*run, *again])
    assert frame.loc["r", "time"] == pd.Timestamp(T0, tz="UTC")
    assert (frame.loc["r", "a.status"], frame.loc["r", "a.outputs.y"]) == ("ok", 10.0)
    (summary,) = TraceStore(tmp_path).summary()
    assert summary.requests == 1
