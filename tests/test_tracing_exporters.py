"""Span exporters chosen by config or environment: OTLP to a collector, console, none."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from engine.engine import Engine
from engine.spec import load_pipelines
from tracing.collector import Collector
from tracing.config import Tracing, TracingConfig, build
from tracing.exporters import FanOutExporter
from tracing.spans import SpanSink

PIPELINE = {"metadata": {"name": "counter"},
            "spec": {"steps": [{"name": "inc"}], "output": {"steps": ["inc"]}}}


def inc(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": inputs["x"] + 1}


def run_requests(config: TracingConfig, n: int) -> list[str]:
    """Send ``n`` requests with tracing per ``config``; the trace ids of their results."""
    tracing = build(config)
    assert tracing is not None
    return send(tracing, n)


def send(tracing: Tracing, n: int) -> list[str]:
    """Send ``n`` requests observed by ``tracing``'s collector, closing it after them; the
    trace ids of their results."""

    async def main() -> list[str]:
        with tracing.collector:
            async with Engine(load_pipelines(PIPELINE), {"inc": inc},
                              observers=[tracing.collector]) as engine:
                results = [await engine.infer("counter", {"inputs": [
                    {"name": "x", "datatype": "INT64", "shape": [1], "data": [i]}]})
                    for i in range(n)]
        return [r.lineage.trace_id for r in results if r.lineage is not None]

    return asyncio.run(main())


def test_otlp_over_http_reaches_the_collector(
        collector_endpoint: tuple[str, list[ExportTraceServiceRequest]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, received = collector_endpoint
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "claims-service")
    config = TracingConfig.from_env()
    assert config.exporter == "otlp"
    trace_ids = run_requests(config, 5)
    spans = [span for request in received for rs in request.resource_spans
             for ss in rs.scope_spans for span in ss.spans]
    steps = [s for s in spans if s.name == "inc"]
    assert sorted(s.trace_id.hex() for s in steps) == sorted(trace_ids)
    assert {s.name for s in spans} == {"inc", "counter.outputs"}
    attributes = {a.key: a.value for a in steps[0].attributes}
    assert attributes["flowcause.pipeline"].string_value == "counter"
    assert [v.string_value for v in attributes["flowcause.inputs"].array_value.values] == ["x"]
    service = {a.key: a.value.string_value for a in received[0].resource_spans[0].resource.attributes}
    assert service["service.name"] == "claims-service"


def test_console_exporter_prints_spans(capsys: pytest.CaptureFixture[str]) -> None:
    trace_ids = run_requests(TracingConfig(exporter="console"), 2)
    out = capsys.readouterr().out
    assert all(f"0x{t}" in out for t in trace_ids)
    assert '"flowcause.step": "inc"' in out


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("FLOWCAUSE_TRACE_STORE", str(tmp_path))
    monkeypatch.setenv("FLOWCAUSE_TRACE_MAX_VALUES", "8")
    monkeypatch.setenv("FLOWCAUSE_TRACE_FLUSH_SECONDS", "0.5")
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    config = TracingConfig.from_env()
    assert config == TracingConfig(store=str(tmp_path), exporter="none", max_values=8,
                                   flush_seconds=0.5)
    assert TracingConfig.from_env(max_values=3, store=None).max_values == 3
    tracing = build(config)
    assert tracing is not None and tracing.exporter is None
    tracing.collector.close()
    assert build(TracingConfig()) is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="unknown span exporter 'zipkin'"):
        TracingConfig.from_env()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("FLOWCAUSE_TRACE_MAX_VALUES", "many")
    with pytest.raises(ValueError, match="FLOWCAUSE_TRACE_MAX_VALUES='many'"):
        TracingConfig.from_env()


def test_closing_with_no_collector_listening_is_bounded() -> None:
    """OTLP to a port nobody listens on retries each batch for ~7 s: closing waits its
    ``close_timeout_s``, then drops (and counts) what is left and shuts the exporter down."""
    with socket.socket() as s:  # a free port, closed again: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = SpanSink(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"),
                    close_timeout_s=0.5)
    collector = Collector([sink], batch_events=2)

    async def main() -> None:
        async with Engine(load_pipelines(PIPELINE), {"inc": inc}, observers=[collector]) as engine:
            for i in range(10):
                await engine.infer("counter", {"inputs": [
                    {"name": "x", "datatype": "INT64", "shape": [1], "data": [i]}]})

    asyncio.run(main())
    start = time.monotonic()
    collector.close()
    assert time.monotonic() - start < 5
    assert sink.dropped > 0


def test_a_list_of_exporters_sends_every_span_to_each(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", " Memory, none,console,memory")
    config = TracingConfig.from_env()
    assert config.exporter == "memory,console"
    tracing = build(config)
    assert tracing is not None and isinstance(tracing.exporter, FanOutExporter)
    memory, console = tracing.exporter.exporters
    assert isinstance(memory, InMemorySpanExporter) and isinstance(console, ConsoleSpanExporter)
    trace_ids = send(tracing, 3)
    out = capsys.readouterr().out
    assert all(f"0x{t}" in out for t in trace_ids)
    spans = memory.get_finished_spans()
    assert sorted({f"{s.context.trace_id:032x}" for s in spans}) == sorted(trace_ids)
    assert out.count('"flowcause.step": "inc"') == len([s for s in spans if s.name == "inc"]) == 3
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none, none")
    assert TracingConfig.from_env().exporter == "none"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,zipkin")
    with pytest.raises(ValueError, match="unknown span exporter 'zipkin'"):
        TracingConfig.from_env()
    with pytest.raises(ValueError, match="memory span exporter"):
        build(TracingConfig(exporter="console,memory", process=True))


class FailingExporter(InMemorySpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        super().export(spans)
        return SpanExportResult.FAILURE


def test_one_failing_exporter_does_not_keep_spans_from_the_others() -> None:
    failing, working = FailingExporter(), InMemorySpanExporter()
    fan_out = FanOutExporter([failing, working])
    sink = SpanSink(fan_out)
    collector = Collector([sink], flush_seconds=None)

    async def main() -> None:
        async with Engine(load_pipelines(PIPELINE), {"inc": inc}, observers=[collector]) as engine:
            await engine.infer("counter", {"inputs": [
                {"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]})

    asyncio.run(main())
    collector.close()
    assert [s.name for s in working.get_finished_spans()] == ["inc", "counter.outputs"]
    assert fan_out.export(working.get_finished_spans()) is SpanExportResult.FAILURE


def test_sdk_disabled_turns_spans_off_unless_an_exporter_is_given(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", " TRUE")
    assert TracingConfig.from_env().exporter == "none"
    assert build(TracingConfig.from_env()) is None
    assert TracingConfig.from_env(exporter="console").exporter == "console"  # the CLI's flag
    recording = build(TracingConfig.from_env(store=str(tmp_path)))  # the store records anyway
    assert recording is not None and recording.exporter is None
    recording.collector.close()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "1")  # the specification's boolean: only "true"
    assert TracingConfig.from_env().exporter == "console"
