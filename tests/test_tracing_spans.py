"""OpenTelemetry spans: one per step execution, one trace per request, ids from the lineage."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from engine.engine import Engine
from engine.lineage import new_span_id, new_trace_id
from engine.observe import StepEvent
from engine.record import Record
from engine.spec import load_pipelines
from scenarios.steps.insurance_claims import STEPS, request_tensors
from tracing.collector import Collector
from tracing.config import TracingConfig, build
from tracing.spans import SpanSink

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "insurance-claims"


class Events:
    """A plain observer beside the collector: what the engine reported."""

    def __init__(self) -> None:
        self.steps: list[StepEvent] = []

    def on_step(self, event: StepEvent) -> None:
        self.steps.append(event)

    def on_pipeline_record(self, pipeline: str, port: str, record: Record) -> None:
        pass


def run(pipelines: Any, steps: dict[str, Any], send: Any) -> tuple[list[ReadableSpan], Events]:
    tracing = build(TracingConfig(exporter="memory"))
    assert tracing is not None and isinstance(tracing.exporter, InMemorySpanExporter)
    events = Events()

    async def main() -> None:
        with tracing.collector:
            async with Engine(load_pipelines(pipelines), steps,
                              observers=[tracing.collector, events]) as engine:
                await send(engine)

    asyncio.run(main())
    return list(tracing.exporter.get_finished_spans()), events


def by_request(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        out[str(span.attributes["flowcause.request_id"])].append(span)
    return out


def test_spans_of_a_request_share_its_trace_and_the_engines_ids() -> None:
    claims = pd.read_csv(REFERENCE / "insurance_claims.csv").head(30).to_dict("records")
    clients = {str(c["policy_number"]): (new_trace_id(), new_span_id()) for c in claims[:15]}

    async def send(engine: Engine) -> None:
        results = await asyncio.gather(*(
            engine.infer("insurance_claims", request_tensors(c), request_id=str(c["policy_number"]),
                         traceparent=("00-{}-{}-01".format(*clients[str(c["policy_number"])])
                                      if str(c["policy_number"]) in clients else None))
            for c in claims))
        assert all(r.ok for r in results)

    spans, events = run(REFERENCE / "insurance_claims.yaml", STEPS, send)
    executed = [e for e in events.steps if e.status != "skipped"]
    step_spans = [s for s in spans if "flowcause.step" in s.attributes]
    assert len(step_spans) == len(executed)
    # each step span is the engine's span: same ids, same parents, same times
    by_span = {s.context.span_id: s for s in step_spans}
    for event in executed:
        span = by_span[int(event.lineage.span_id, 16)]
        assert span.context.trace_id == int(event.lineage.trace_id, 16)
        assert span.name == event.step
        assert span.parent is not None
        assert span.parent.span_id == int(event.parent_span_ids[0], 16)
        assert [link.context.span_id for link in span.links] == [
            int(p, 16) for p in event.parent_span_ids[1:]]
        assert (span.start_time, span.end_time) == (event.started_ns, event.finished_ns)
        assert span.attributes["flowcause.inputs"] == tuple(t.name for t in event.inputs)
        assert span.attributes["flowcause.output_shapes"] == tuple(
            str(list(t.shape)) for t in event.outputs)
    grouped = by_request(spans)
    assert set(grouped) == {str(c["policy_number"]) for c in claims}
    for request, request_spans in grouped.items():
        traces = {s.context.trace_id for s in request_spans}
        assert len(traces) == 1
        ids = {s.context.span_id for s in request_spans}
        outside = {s.parent.span_id for s in request_spans if s.parent.span_id not in ids}
        assert len(outside) == 1  # everything hangs off the request's one root
        if request in clients:
            trace_id, root = clients[request]
            assert traces == {int(trace_id, 16)} and outside == {int(root, 16)}


def test_a_chained_request_is_one_connected_trace() -> None:
    chain = [
        {"metadata": {"name": "first"},
         "spec": {"steps": [{"name": "double"}], "output": {"steps": ["double"]}}},
        {"metadata": {"name": "second"},
         "spec": {"input": {"externalInputs": ["first.outputs"]},
                  "steps": [{"name": "double"}, {"name": "fail", "inputs": ["double"]}],
                  "output": {"steps": ["double"]}}},
    ]

    def double(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"x": inputs["x"] * 2}

    def fail(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("boom")

    trace_id, root = new_trace_id(), new_span_id()

    async def send(engine: Engine) -> None:
        done = engine.expect("r1", "second")
        record = engine.make_request("first", {"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]},
            request_id="r1", traceparent=f"00-{trace_id}-{root}-01",
            tracestate="vendor=abc, other=1")
        engine.submit(record)
        await asyncio.wait_for(done, 10)  # the failing step's error may come first

    spans, _ = run(chain, {"double": double, "fail": fail}, send)
    assert {s.name for s in spans} == {"double", "fail", "first.outputs", "second.inputs",
                                       "second.outputs"}
    assert {s.context.trace_id for s in spans} == {int(trace_id, 16)}
    # the client's tracestate, carried across both pipelines, is every span's and parent's
    state = [("vendor", "abc"), ("other", "1")]
    for span in spans:
        assert list(span.context.trace_state.items()) == state
        assert list(span.parent.trace_state.items()) == state
    ids = {s.context.span_id: s for s in spans}
    for span in spans:  # every span's parent is a span of the trace, or the client's
        assert span.parent.span_id in ids or span.parent.span_id == int(root, 16)
    # walking up from the failed step crosses both pipelines to the client's span
    span, path = next(s for s in spans if s.name == "fail"), []
    while span.parent.span_id in ids:
        path.append(span.name)
        span = ids[span.parent.span_id]
    assert path + [span.name] == ["fail", "double", "second.inputs", "first.outputs", "double"]
    assert span.parent.span_id == int(root, 16)
    failed = next(s for s in spans if s.name == "fail")
    assert failed.status.status_code is StatusCode.ERROR
    assert "RuntimeError: boom" in failed.attributes["flowcause.error"]
    assert failed.attributes["flowcause.pipeline"] == "second"


def test_an_async_steps_output_record_span_has_its_parent() -> None:
    """An async step's output is published outside a delivery, so everything downstream runs
    at once; the step's event must still come first, else the output stage's span, made in a
    batch before the step's, finds no parent and the request's trace falls in two. (Batches
    of one event: any batch boundary.)"""
    async def double(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * 2}

    exporter = InMemorySpanExporter()
    collector = Collector([SpanSink(exporter)], batch_events=1)
    pipes = load_pipelines({"metadata": {"name": "p"},
                            "spec": {"steps": [{"name": "s"}], "output": {"steps": ["s"]}}})

    async def main() -> None:
        async with Engine(pipes, {"s": double}, observers=[collector]) as eng:
            results = await asyncio.gather(*(
                eng.infer("p", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                                            "data": [float(i)]}]}) for i in range(20)))
        assert all(r.ok for r in results)

    asyncio.run(main())
    collector.close()
    outputs = [s for s in exporter.get_finished_spans() if s.name == "p.outputs"]
    assert len(outputs) == 20
    assert [s for s in outputs if s.parent is None] == []
