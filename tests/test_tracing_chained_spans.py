"""Chained pipelines' spans: a pipeline's input-stage span is parented on the span of the record
it was made from, be it the outputs of another pipeline or a step's joined inputs."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from engine.engine import Engine
from engine.lineage import new_span_id, new_trace_id
from engine.observe import Observer
from engine.spec import load_pipelines
from tracing.collector import Collector
from tracing.config import TracingConfig, build
from tracing.spans import SpanSink

PIPELINES = [
    {"metadata": {"name": "first"},
     "spec": {"steps": [{"name": "a"}], "output": {"steps": ["a"]}}},
    {"metadata": {"name": "second"},
     "spec": {"input": {"externalInputs": ["first.outputs"]},
              "steps": [{"name": "b"}], "output": {"steps": ["b"]}}},
    {"metadata": {"name": "third"},
     "spec": {"input": {"externalInputs": ["first.step.a.inputs"]},
              "steps": [{"name": "c"}], "output": {"steps": ["c"]}}},
]
STEPS = {
    "a": lambda i: {"y": i["x"] + 1},
    "b": lambda i: {"z": i["y"] * 2},
    "c": lambda i: {"w": i["x"] * 3},
}
TRACE_ID, CLIENT_SPAN = new_trace_id(), new_span_id()
# span name -> (trace id, span id, parent span id or None)
Spans = dict[str, tuple[int, int, int | None]]


def send(observer: Observer) -> None:
    """One request to ``first``, answered by ``second`` and ``third``."""
    async def main() -> None:
        async with Engine(load_pipelines(PIPELINES), STEPS, observers=[observer]) as engine:
            done = [engine.expect("r1", p) for p in ("second", "third")]
            engine.submit(engine.make_request(
                "first", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2],
                                      "data": [1.0, 2.0]}]},
                request_id="r1", traceparent=f"00-{TRACE_ID}-{CLIENT_SPAN}-01"))
            results = await asyncio.wait_for(asyncio.gather(*done), 10)
        assert all(r.ok for r in results)

    asyncio.run(main())


def spans_in_process(batch_events: int) -> Spans:
    exporter = InMemorySpanExporter()
    collector = Collector([SpanSink(exporter)], batch_events=batch_events)
    send(collector)
    collector.close()
    spans = exporter.get_finished_spans()
    assert len({s.name for s in spans}) == len(spans)
    return {s.name: (s.context.trace_id, s.context.span_id,
                     s.parent.span_id if s.parent is not None else None) for s in spans}


def spans_from_tracing_process(url: str, received: list[ExportTraceServiceRequest],
                               monkeypatch: pytest.MonkeyPatch) -> Spans:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
    tracing = build(TracingConfig(exporter="otlp", process=True))
    assert tracing is not None
    send(tracing.collector)
    tracing.collector.flush()  # spans built in the tracing process and exported from there
    tracing.collector.close()
    spans = [s for r in received for rs in r.resource_spans for ss in rs.scope_spans
             for s in ss.spans]
    assert len({s.name for s in spans}) == len(spans)
    return {s.name: (int.from_bytes(s.trace_id, "big"), int.from_bytes(s.span_id, "big"),
                     int.from_bytes(s.parent_span_id, "big") if s.parent_span_id else None)
            for s in spans}


def assert_parented(spans: Spans, port: str, parent: str) -> None:
    trace_id, _, parent_id = spans[port]
    assert parent_id == spans[parent][1]
    assert trace_id == spans[parent][0] == int(TRACE_ID, 16)


@pytest.fixture(params=[1, 64], ids=["batches-of-1", "batches-of-64"])
def in_process(request: pytest.FixtureRequest) -> Spans:
    """Batches of one event: the step's span and the port's come in different batches."""
    return spans_in_process(request.param)


def test_a_pipeline_fed_by_a_steps_inputs_is_parented_on_that_step(in_process: Spans) -> None:
    assert_parented(in_process, "third.inputs", "a")
    assert_parented(in_process, "c", "third.inputs")


def test_a_pipeline_fed_by_another_pipelines_outputs_is_parented_on_them(
        in_process: Spans) -> None:
    assert_parented(in_process, "first.outputs", "a")
    assert_parented(in_process, "second.inputs", "first.outputs")
    assert_parented(in_process, "b", "second.inputs")


def test_the_tracing_process_parents_chained_pipelines_alike(
        collector_endpoint: tuple[str, list[ExportTraceServiceRequest]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    spans = spans_from_tracing_process(*collector_endpoint, monkeypatch)
    assert {n for n, (t, _, _) in spans.items() if t == int(TRACE_ID, 16)} == {
        "a", "b", "c", "first.outputs", "second.inputs", "second.outputs", "third.inputs",
        "third.outputs"}
    assert spans["a"][2] == int(CLIENT_SPAN, 16)
    assert_parented(spans, "third.inputs", "a")
    assert_parented(spans, "second.inputs", "first.outputs")
