"""Edges of the dashboard: windows too small to rank, choices kept while the store grows,
the scenario page's phase sizes, request ids that need escaping in a link, long column
names as plot titles, windows of a downstream pipeline of a chain, and the trace explorer on
a loop."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.data import from_store
from dashboard.lineage import node_notes
from dashboard.plots import distribution_figure
from dashboard.settings import Settings
from dashboard.views.scenario import MIN_INCIDENT
from dashboard.windows import parse_window
from engine.cli import main
from engine.engine import Engine
from engine.lineage import Lineage
from engine.observe import StepEvent
from engine.record import Record
from engine.spec import load_pipelines
from engine.tensors import Tensor
from scenarios.spec import load_scenario
from tests.loop_example import LOOP_STEPS, LOOP_YAML
from tests.test_tracing_store_edges import store_of  # events committed as one batch
from tracing.collector import Collector
from tracing.events import Item, PortEvent
from tracing.recorder import StoreRecorder
from tracing.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
LOAN_CHAIN = ROOT / "scenarios" / "builtin" / "loan_chain_units.yaml"
TIMEOUT_S = 120
START_NS = pd.Timestamp("2026-03-02 12:00", tz="UTC").value
SPEC = """\
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: p
spec:
  steps:
    - name: s
      inputs: [p.inputs.x]
  output:
    steps: [s]
"""


def requests(ids: list[str], first: int = 0, output: str = "y") -> list[Item]:
    """Requests of pipeline ``p`` one second apart from the ``first``-th on: input ``x``
    into step ``s``, whose tensor ``output`` is twice it."""
    items: list[Item] = []
    for i, request_id in enumerate(ids, first):
        arrival = START_NS + i * 10**9
        x = (Tensor("x", "FP64", np.array([float(i % 7)])),)
        y = (Tensor(output, "FP64", np.array([2.0 * (i % 7)])),)
        lineage = Lineage(request_id, f"{i:032x}", "b" * 16, "p", "s.outputs")
        items += [StepEvent("p", "s", "ok", lineage, ("b" * 16,), x, y, arrival + 1_000, arrival + 2_000,
                            arrival + 3_000),
                  PortEvent(arrival, "p", "inputs", Record(Lineage(request_id, f"{i:032x}", "b" * 16, "p",
                                                                   "inputs"), x))]
    return items


def small_store(path: Path, ids: list[str], output: str = "y") -> tuple[Path, Path]:
    """A store of pipeline ``p`` holding ``ids``, and the pipeline's spec file."""
    store_of(path / "store", requests(ids, output=output))
    spec = path / "p.yaml"
    spec.write_text(SPEC)
    return path / "store", spec


def app(store: Path, spec: Path | None, monkeypatch: pytest.MonkeyPatch, page: str,
        **params: str) -> AppTest:
    for name, value in Settings(str(store), (str(spec),) if spec else ()).to_env().items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({"page": page, **params})
    return at.run()


# -------------------------------------------------------------- windows too small to rank

@pytest.mark.parametrize(("reference", "message"), [
    ("first:0", "the reference window holds no requests; at least 2 are needed"),
    ("first:1", "the reference window holds 1 request; at least 2 are needed"),
    ("2000-01-01..2000-01-02", "the reference window holds no requests; at least 2 are needed"),
])
def test_rca_page_says_a_window_is_too_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             reference: str, message: str) -> None:
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(10)])
    at = app(store, spec, monkeypatch, "rca", reference=reference)
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [message]
    assert not at.dataframe  # stopped before ranking


@pytest.mark.parametrize("held", [1, 2, 3])
def test_rca_page_default_windows_of_a_tiny_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  held: int) -> None:
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(held)])
    at = app(store, spec, monkeypatch, "rca")
    assert not at.exception, at.exception
    (error,) = at.error
    assert error.value.endswith("at least 2 are needed")


def test_report_cli_says_a_window_is_too_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(10)])
    out = tmp_path / "report.html"
    assert main(["report", "--store", str(store), "--pipeline", str(spec), "--reference", "first:1",
                 "--incident", "last:5", "--out", str(out)]) == 1
    assert "the reference window holds 1 request; at least 2 are needed" in capsys.readouterr().err
    assert not out.exists()
    assert main(["report", "--store", str(store), "--pipeline", str(spec), "--reference", "first:2",
                 "--incident", "last:2", "--out", str(out)]) == 0


def test_report_cli_names_a_column_the_ranking_cannot_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Text in a column that is numeric in the other window: a message and exit 1."""
    reference = ROOT.parent / "shared" / "reference" / "insurance-claims"
    incident = pd.read_csv(reference / "data" / "broken_app_0.csv")
    incident["output"] = incident["output"].astype(str)
    incident.loc[3, "output"] = "100.0x"
    path = tmp_path / "incident.csv"
    incident.to_csv(path, index=False)
    out = tmp_path / "report.md"
    assert main(["report", "--pipeline", str(reference / "insurance_claims.yaml"),
                 "--layout", str(ROOT / "causal" / "layouts" / "insurance_claims.yaml"),
                 "--reference", str(reference / "data" / "normal_0.csv"), "--incident", str(path),
                 "--out", str(out)]) == 1
    assert "'100.0x'" in capsys.readouterr().err and not out.exists()


# -------------------------------------------------------------- choices kept as the store grows

def widget(widgets: Any, label: str) -> Any:
    """The widget whose label starts with ``label`` (looked up by label, not key)."""
    (found,) = [w for w in widgets if w.label.startswith(label)]
    return found


def test_rca_windows_typed_stay_while_the_store_grows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(10)])
    at = app(store, spec, monkeypatch, "rca")
    assert widget(at.text_input, "Reference window").value == "first:5"
    widget(at.text_input, "Reference window").input("first:3").run()
    store_of(store, requests([f"r{i}" for i in range(10, 20)], first=10))  # the defaults become first:10
    at.run()
    assert not at.exception, at.exception
    assert widget(at.text_input, "Reference window").value == "first:3"
    assert widget(at.text_input, "Incident window").value == "last:5"
    assert at.caption[0].value.startswith("reference: 3 requests, incident: 5 requests")


def test_trace_explorer_request_picked_stays_while_the_store_grows(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(10)])
    at = app(store, spec, monkeypatch, "traces")
    widget(at.selectbox, "…or one of the latest").select("r4").run()
    store_of(store, requests([f"r{i}" for i in range(10, 20)], first=10))
    at.run()
    assert not at.exception, at.exception
    assert widget(at.selectbox, "…or one of the latest").value == "r4"
    assert at.caption[0].value.startswith("request `r4`")


# -------------------------------------------------------------- the scenario page's phase sizes

def test_scenario_page_asks_for_as_many_incident_requests_as_it_ranks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = small_store(tmp_path, ["r0"])
    at = app(store, None, monkeypatch, "scenario")
    assert not at.exception, at.exception
    assert at.number_input(key="scenario_incident").min == MIN_INCIDENT


# -------------------------------------------------------------- ids and names that need care

def test_lineage_link_survives_any_request_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [f"r{i} a&b#c d?e=f[x]`y`" for i in range(12)]
    store, spec = small_store(tmp_path, ids)
    at = app(store, spec, monkeypatch, "rca")
    assert not at.exception, at.exception
    (link,) = [m.value for m in at.markdown if m.value.startswith("Lineage of an incident request:")]
    text, query = re.fullmatch(r"Lineage of an incident request: \[(.*)\]\(\?([^()\s]*)\)", link).groups()
    params = parse_qs(query)
    assert params["page"] == ["traces"] and params["pipeline"] == ["p"]
    assert params["request"][0] in ids
    assert re.sub(r"\\(.)", r"\1", text) == params["request"][0]


def test_long_column_names_are_shortened_in_plot_titles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    name = "s.outputs.a_really_long_tensor_name_" + "z" * 200 + "_end"
    fig = distribution_figure(name, pd.Series([1.0, 2.0, 3.0]), pd.Series([2.0, 3.0, 4.0]))
    title = fig.axes[0].get_title()
    assert len(title) == 60 and title.startswith("s.outputs.a_really") and title.endswith("_end")
    fig.canvas.draw()
    assert fig.axes[0].title.get_window_extent().width < fig.bbox.width
    # the page shows the whole name under its plot
    store, spec = small_store(tmp_path, [f"r{i}" for i in range(12)], output=name[len("s.outputs."):])
    at = app(store, spec, monkeypatch, "rca", method="random")
    assert not at.exception, at.exception
    assert name in [c.value for c in at.caption]


# -------------------------------------------------------------- a downstream pipeline of a chain

@pytest.fixture(scope="module")
def chain_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chain")
    assert main(["run-scenario", str(LOAN_CHAIN), "--out", str(out), "--healthy", "10", "--incident", "10",
                 "--quiet"]) == 0
    return out / "store"


@pytest.mark.parametrize("window", ["first:3", "last:3", "requests:50..53"])
def test_window_of_a_downstream_pipeline_has_its_upstream_columns(chain_store: Path, window: str) -> None:
    store = TraceStore(chain_store)
    upstream = store.frame("loan_features")
    comparison = from_store(store, load_scenario(LOAN_CHAIN).pipelines(), parse_window(window),
                            parse_window(window), "loan_scoring")
    frame = comparison.reference
    assert len(frame) == 3
    columns = [c for c in upstream.columns if c.startswith("loan_features.inputs.")]
    pd.testing.assert_frame_equal(frame[columns], upstream.loc[frame.index, columns])
    assert frame[columns].notna().all().all()


# -------------------------------------------------------------- pipelines not chained with the target

OTHER_SPEC = SPEC.replace("name: p", "name: q").replace("name: s", "name: t").replace(
    "p.inputs.x", "q.inputs.x").replace("steps: [s]", "steps: [t]")


def other_pipeline(ids: list[str], name: str = "q", step: str = "t") -> list[Item]:
    """Requests of another pipeline with the same ids as :func:`requests`' whose step's
    output jumps by 1000 for the second half of them."""
    out: list[Item] = []
    for i, item in enumerate(requests(ids)):
        if isinstance(item, PortEvent):
            lineage = item.record.lineage
            out.append(item._replace(pipeline=name, record=Record(
                Lineage(lineage.request_id, lineage.trace_id, lineage.span_id, name, "inputs"),
                item.record.tensors)))
        else:
            jump = 1000.0 if i // 2 >= len(ids) // 2 else 0.0
            y = (Tensor("y", "FP64", item.outputs[0].data + jump),)
            lineage = item.lineage
            out.append(StepEvent(name, step, item.status, Lineage(
                lineage.request_id, lineage.trace_id, lineage.span_id, name, f"{step}.outputs"),
                item.parent_span_ids, item.inputs, y, item.received_ns, item.started_ns,
                item.finished_ns))
    return out


@pytest.mark.parametrize("other", ["q", "loop"])
def test_a_pipeline_not_chained_with_the_target_is_left_out(tmp_path: Path, other: str) -> None:
    """Two pipelines of one store with the same request ids, one of them a loop or with a
    change between the windows: ranking the other compares its own requests only."""
    ids = [f"r{i}" for i in range(40)]
    step = "t" if other == "q" else "inc"
    store = store_of(tmp_path / "store", [*requests(ids), *other_pipeline(ids, other, step)])
    spec = OTHER_SPEC if other == "q" else LOOP_YAML
    pipelines = [*load_pipelines(SPEC), *load_pipelines(spec)]
    comparison = from_store(store, pipelines, parse_window("first:20"), parse_window("last:20"), "p")
    assert [p.name for p in comparison.pipelines] == ["p"]
    assert not [c for c in comparison.incident.columns if c.startswith((f"{step}.", f"{other}."))]
    assert comparison.incident.equals(store.frame("p").iloc[20:])


# -------------------------------------------------------------- the trace explorer on a loop

def shown_notes(at: AppTest) -> dict[str, str]:
    """The DAG picture's first note under each node: its status (and latency)."""
    (image,) = at.image
    svg = base64.b64decode(image.proto.imgs[0].url.split(",", 1)[1]).decode()
    return dict(re.findall(r'<g class="node [^"]*" data-node="([^"]*)">.*?'
                           r'<text[^>]*font-weight="bold">[^<]*</text><text[^>]*>([^<]*)</text>',
                           svg))


def test_trace_explorer_shows_a_loops_steps_by_their_runs_and_each_decisions_own_tensors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/loop_example.py from x = 0: inc and check run three times, fin once, and each
    then skips: the DAG shows the runs (as the frame does), not the trailing skips, and the
    Tensors table lists fin's input and output once, from its run (a skip consumed nothing)."""
    store, spec = tmp_path / "store", tmp_path / "loop.yaml"
    spec.write_text(LOOP_YAML)

    async def run() -> None:
        with Collector([StoreRecorder(store)]) as observer:
            async with Engine(load_pipelines(LOOP_YAML), LOOP_STEPS,
                              observers=[observer]) as engine:
                x = Tensor("x", "FP64", np.array([0.0]))
                assert (await engine.infer("loop", [x], request_id="r", timeout=30)).ok

    asyncio.run(run())
    at = app(store, spec, monkeypatch, "traces", pipeline="loop", request="r")
    assert not at.exception, at.exception
    notes = shown_notes(at)
    assert {n: notes[n].split(",")[0] for n in ("inputs", "inc", "check", "fin", "outputs")} == \
        dict.fromkeys(("inputs", "inc", "check", "fin", "outputs"), "ok")
    assert notes["fin"].endswith(" ms")  # the run's latency, not a skip's
    tensors = at.dataframe[1].value
    assert tensors[tensors["node"] == "fin"].values.tolist() == [
        ["fin", "inputs", "done FP64[1] = 3.0"], ["fin", "outputs", "result FP64[1] = 300.0"]]
    assert len(tensors[tensors["node"] == "inc"]) == 3 * 2  # x in, v out per run


def test_dag_notes_show_the_latest_decision_that_was_not_a_skip_else_the_latest_skip() -> None:
    def row(node: str, status: str, generation: int, latency: float | None = None) -> dict[str, Any]:
        return {"pipeline": "p", "node": node, "status": status, "generation": generation,
                "latency_ms": latency}

    rows = [row("a", "ok", 0, 1.0), row("a", "ok", 1, 2.0), row("a", "skipped", 2),
            row("b", "skipped", 0), row("b", "skipped", 1),
            row("c", "error", 1, 3.0), row("c", "timeout", 0), row("c", "skipped", 2),
            row("<outputs>", "ok", 0), {**row("a", "ok", 5, 9.0), "pipeline": "q"}]
    assert node_notes(rows, "p") == {"a": ["ok, 2 ms"], "b": ["skipped"], "c": ["error, 3 ms"],
                                     "outputs": ["ok"]}
