"""The trace store on the insurance-claims pipeline: its frame against the reference layout."""

from __future__ import annotations

import asyncio
import glob
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from engine.engine import Engine
from engine.spec import load_pipelines
from scenarios.steps.insurance_claims import STEPS, request_tensors
from tracing.collector import Collector
from tracing.files import committed
from tracing.layout import load_layout
from tracing.recorder import StoreRecorder
from tracing.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / ".." / "shared" / "reference" / "insurance-claims"
SPEC = REFERENCE / "insurance_claims.yaml"
PIPELINE = "insurance_claims"
# The reference datasets' columns, each standing for one reference of the pipeline.
LAYOUT = load_layout(ROOT / "causal" / "layouts" / "insurance_claims.yaml")


def claims() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "insurance_claims.csv")


def expected_layout(claim: dict[str, Any]) -> dict[str, float]:
    """The published behaviour, written out independently of the step code."""
    amount = float(claim["total_claim_amount"])
    value = 1.05 * amount
    high = value >= 60000
    complex_claim = not high and amount > 5000 and (
        claim["auto_year"] < 2000
        or (claim["witnesses"] == 0 and claim["police_report_available"] in ("NO", "?")))
    simple = not high and not complex_claim
    simple_payout = 0.8 * amount if simple else 0.0
    complex_payout = 0.6 * amount if high or complex_claim else 0.0
    return {
        "input": amount,
        "calculate_claim_value": value,
        "low_value_claims": float(not high),
        "high_value_claims": float(high),
        "simple_claims": float(simple),
        "complex_claims": float(complex_claim),
        "calculate_simple_claim_payout": simple_payout,
        "calculate_complex_claim_payout": complex_payout,
        "output": simple_payout + complex_payout,
    }


async def send(engine: Engine, rows: list[dict[str, Any]]) -> None:
    results = await asyncio.gather(*(
        engine.infer(PIPELINE, request_tensors(r), request_id=str(r["policy_number"]), timeout=30)
        for r in rows))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]


def record(path: Path, rows: list[dict[str, Any]], **collector: Any) -> None:
    async def main() -> None:
        with Collector([StoreRecorder(path)], **collector) as observer:
            async with Engine(load_pipelines(SPEC), STEPS, observers=[observer]) as engine:
                await send(engine, rows)

    asyncio.run(main())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TraceStore:
    path = tmp_path_factory.mktemp("claims-store")
    # small flushes: the frame must be whole however the requests were split into batches
    record(path, claims().to_dict("records"), batch_events=700, flush_seconds=0.01)
    return TraceStore(path)


def test_the_product_ships_the_reference_spec_verbatim() -> None:
    shipped = ROOT / "scenarios" / "pipelines" / "insurance_claims.yaml"
    assert shipped.read_bytes() == SPEC.read_bytes()


def test_frame_in_reference_layout_matches_the_published_behaviour(store: TraceStore) -> None:
    rows = claims()
    frame = store.frame(PIPELINE, layout=LAYOUT)
    reference_columns = list(pd.read_csv(REFERENCE / "data" / "normal_0.csv", nrows=0).columns)
    assert list(frame.columns) == reference_columns
    assert sorted(frame.index) == sorted(rows["policy_number"].astype(str))
    expected = pd.DataFrame([expected_layout(r) for r in rows.to_dict("records")],
                            index=rows["policy_number"].astype(str))
    pd.testing.assert_frame_equal(frame.loc[expected.index], expected, check_names=False)
    # every kind of path through the pipeline is exercised
    assert all(frame[c].any() for c in ("high_value_claims", "simple_claims", "complex_claims"))


def test_layout_files_load(tmp_path: Path) -> None:
    assert LAYOUT["low_value_claims"] == "classify_claim_value.outputs.is_low_value_claim"
    path = tmp_path / "layout.yaml"
    path.write_text("columns:\n  input: p.inputs.x\n  output: p.outputs.y\n")
    assert load_layout(path) == {"input": "p.inputs.x", "output": "p.outputs.y"}
    path.write_text("columns: [a, b]\n")
    with pytest.raises(ValueError, match="maps column names"):
        load_layout(path)


def test_unknown_police_report_counts_as_none_in_the_reference_data(store: TraceStore) -> None:
    """Dataset rows whose claim amount identifies one claim with no "YES" police report
    agree with our frame in every column (docs/trace-store.md: the "?" decision)."""
    rows = claims()
    unique = rows.drop_duplicates("total_claim_amount", keep=False)
    unique = unique[unique["police_report_available"] != "YES"].set_index("total_claim_amount")
    data = pd.concat(pd.read_csv(f) for f in sorted(glob.glob(str(REFERENCE / "data" / "normal_*.csv"))))
    data = data[data["input"].isin(unique.index)]
    assert (unique.loc[data["input"], "police_report_available"] == "?").sum() > 100
    frame = store.frame(PIPELINE, layout=LAYOUT)
    ours = frame.loc[unique.loc[data["input"], "policy_number"].astype(str)]
    np.testing.assert_allclose(ours.to_numpy(), data.to_numpy())


def test_frame_columns_follow_the_naming_contract(store: TraceStore) -> None:
    frame = store.frame(PIPELINE)
    rows = claims().set_index(claims()["policy_number"].astype(str))
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert frame.index.name == "request_id"
    got = frame.loc[rows.index]
    np.testing.assert_array_equal(got["insurance_claims.inputs.auto_year"], rows["auto_year"])
    assert list(got["insurance_claims.inputs.police_report_available"]) == list(
        rows["police_report_available"])
    high = 1.05 * rows["total_claim_amount"] >= 60000
    assert (got["classify_claim_complexity.status"] == np.where(high, "skipped", "ok")).all()
    assert (got["classify_claim_complexity.ran"] == (~high).astype(float)).all()
    assert got.loc[high, "classify_claim_complexity.latency_ms"].isna().all()
    assert (got.loc[~high, "classify_claim_complexity.latency_ms"] >= 0).all()
    assert got.loc[~high, "classify_claim_value.outputs.is_high_value_claim"].isna().all()
    steps = [c.removesuffix(".ran") for c in frame.columns if c.endswith(".ran")]
    assert steps[:2] == ["calculate_claim_value", "classify_claim_value"]
    assert set(steps) == set(STEPS)


def test_frame_windows_by_arrival_time(tmp_path: Path) -> None:
    rows = claims().to_dict("records")

    async def main() -> None:
        with Collector([StoreRecorder(tmp_path)]) as observer:
            async with Engine(load_pipelines(SPEC), STEPS, observers=[observer]) as engine:
                for r in rows[:20]:  # one at a time: distinct arrival times
                    await send(engine, [r])
                await asyncio.sleep(0.05)
                await send(engine, rows[20:25])

    asyncio.run(main())
    store = TraceStore(tmp_path)
    times = store.frame(PIPELINE)["time"]
    assert len(times) == 25
    window = store.frame(PIPELINE, start=times.iloc[10], end=times.iloc[15])
    assert list(window.index) == list(times.index[10:15])
    def between(i: int) -> pd.Timestamp:
        return times.iloc[i - 1] + (times.iloc[i] - times.iloc[i - 1]) / 2

    gap = between(20).timestamp()  # epoch seconds
    assert list(store.frame(PIPELINE, start=gap).index) == list(times.index[20:])
    assert list(store.frame(PIPELINE, end=gap).index) == list(times.index[:20])
    naive = between(10).tz_convert(None).floor("us").to_pydatetime()  # naive: taken as UTC
    assert list(store.frame(PIPELINE, end=naive).index) == list(times.index[:10])
    assert list(store.frame(PIPELINE, start=times.iloc[24].isoformat()).index) == [times.index[24]]
    assert store.frame(PIPELINE, start=times.iloc[-1] + pd.Timedelta(1, "s")).empty


def test_records_give_one_requests_lineage(store: TraceStore) -> None:
    claim = claims().iloc[1].to_dict()  # 5070.0: low value, "?" police report, no witnesses
    records = store.records(str(claim["policy_number"]))
    by_node = {(r["kind"], r["node"]): r for r in records.to_dict("records")}
    assert by_node[("step", "classify_claim_complexity")]["status"] == "ok"
    assert by_node[("step", "calculate_simple_claim_payout")]["status"] == "skipped"
    inputs = by_node[("inputs", "inputs")]["inputs"]
    assert inputs["police_report_available"]["data"].tolist() == [claim["police_report_available"]]
    payout = by_node[("step", "calculate_complex_claim_payout")]
    assert payout["outputs"]["payout"]["data"].tolist() == [0.6 * claim["total_claim_amount"]]
    assert payout["parents"].tolist() == [
        f"{claim['policy_number']}/{PIPELINE}/inputs/0",
        f"{claim['policy_number']}/{PIPELINE}/classify_claim_value.outputs/0",
        f"{claim['policy_number']}/{PIPELINE}/classify_claim_complexity.outputs/0"]
    assert len({r["trace_id"] for r in records.to_dict("records")}) == 1
    # the parents of every node are records of the same request
    produced = set(records["record_id"])
    assert all(set(r["parents"]) <= produced for r in records.to_dict("records"))
    assert store.records("no-such-request").empty


def test_every_batch_lands_in_its_pipeline_and_day_partition(store: TraceStore) -> None:
    files = committed(store.root)
    assert len(files) > 1
    for nodes, tensors in files:
        assert nodes.parent.parent.name == f"pipeline={PIPELINE}"
        assert nodes.parent.name.startswith("date=")
        assert tensors.exists()


def test_a_chained_pipelines_frame_joins_its_upstream_by_request_id(tmp_path: Path) -> None:
    chain = [
        {"metadata": {"name": "first"},
         "spec": {"steps": [{"name": "double"}], "output": {"steps": ["double"]}}},
        {"metadata": {"name": "second"},
         "spec": {"input": {"externalInputs": ["first.outputs"]},
                  "steps": [{"name": "square", "inputs": ["second.inputs.y"]}],
                  "output": {"steps": ["square"]}}},
    ]
    steps = {"double": lambda i: {"y": i["x"] * 2}, "square": lambda i: {"z": i["y"] ** 2}}
    xs = [1.5, -2.0, 3.0]

    async def main() -> None:
        with Collector([StoreRecorder(tmp_path)]) as observer:
            async with Engine(load_pipelines(chain), steps, observers=[observer]) as engine:
                for n, x in enumerate(xs):
                    result = await engine.infer("first", {"inputs": [
                        {"name": "x", "datatype": "FP64", "shape": [1], "data": [x]}]},
                        request_id=f"r{n}", result_of="second")
                    assert result.ok

    asyncio.run(main())
    store = TraceStore(tmp_path)
    assert store.pipelines() == ["first", "second"]
    joined = store.frame("first").merge(store.frame("second"), left_index=True, right_index=True,
                                        suffixes=("", ".second"))
    assert list(joined.index) == ["r0", "r1", "r2"]
    np.testing.assert_array_equal(joined["first.inputs.x"], xs)
    np.testing.assert_array_equal(joined["second.inputs.y"], [2 * x for x in xs])
    np.testing.assert_array_equal(joined["square.outputs.z"], [(2 * x) ** 2 for x in xs])
    np.testing.assert_array_equal(joined["second.outputs.z"], [(2 * x) ** 2 for x in xs])
    assert (joined["time.second"] >= joined["time"]).all()
