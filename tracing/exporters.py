"""Where spans go: ``none``, ``console``, ``memory`` (tests) or ``otlp``, or several of them.

The choice comes from the caller or from the standard ``OTEL_TRACES_EXPORTER`` variable
(default ``none``: flowcause sends nothing anywhere unless asked to, unlike the OTel default
of ``otlp``). As the OpenTelemetry specification allows, it may be a comma-separated list
(``otlp,console``): every span then goes to each exporter; ``none`` in a list adds nothing.
``OTEL_SDK_DISABLED=true`` turns spans off whatever the exporter says (the trace store is
flowcause's own and records regardless). OTLP uses the standard OpenTelemetry exporter
packages, which read the standard variables themselves (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``..._HEADERS``, ``..._TIMEOUT``, ...). The protocol
is ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL``:
``http/protobuf`` (default, installed with flowcause) or ``grpc`` (``pip install
'flowcause[otlp]'``). Batching and the export thread are the span sink's
(:mod:`tracing.spans`), so the SDK's span processors are not used.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTERS = ("none", "console", "memory", "otlp")


def exporter_name(name: str | None = None) -> str:
    """The exporter(s) chosen, as a canonical comma-separated list (``none`` if nothing)."""
    text = name or os.environ.get("OTEL_TRACES_EXPORTER") or "none"
    chosen: list[str] = []
    for item in text.split(","):
        item = item.strip().lower()
        if item not in EXPORTERS:
            raise ValueError(f"unknown span exporter {item!r} (one of {', '.join(EXPORTERS)}, "
                             "or several separated by commas)")
        if item != "none" and item not in chosen:
            chosen.append(item)
    return ",".join(chosen) or "none"


def sdk_disabled() -> bool:
    """``OTEL_SDK_DISABLED``: only ``true`` (any case) disables, as the specification says."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


class FanOutExporter(SpanExporter):
    """Exports every batch to each of several exporters, in order; a failure of one does
    not keep the batch from the others, and makes the result a failure."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        self.exporters = list(exporters)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        results = [exporter.export(spans) for exporter in self.exporters]
        return (SpanExportResult.SUCCESS if all(r is SpanExportResult.SUCCESS for r in results)
                else SpanExportResult.FAILURE)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all([exporter.force_flush(timeout_millis) for exporter in self.exporters])

    def shutdown(self) -> None:
        for exporter in self.exporters:
            exporter.shutdown()


def otlp_exporter() -> SpanExporter:
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise RuntimeError("OTLP over gRPC needs the otlp extra: pip install "
                               "'flowcause[otlp]'") from None
        return OTLPSpanExporter()
    if protocol != "http/protobuf":
        raise ValueError(f"unsupported OTLP protocol {protocol!r} (http/protobuf or grpc)")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _one(name: str) -> SpanExporter:
    if name == "otlp":
        return otlp_exporter()
    if name == "console":
        return ConsoleSpanExporter(out=sys.stdout)  # today's stdout, not the one at import
    return InMemorySpanExporter()


def span_exporter(name: str | None = None) -> SpanExporter | None:
    """The chosen exporter (None for ``none``; a :class:`FanOutExporter` for several)."""
    chosen = exporter_name(name)
    if chosen == "none":
        return None
    exporters = [_one(n) for n in chosen.split(",")]
    return exporters[0] if len(exporters) == 1 else FanOutExporter(exporters)
