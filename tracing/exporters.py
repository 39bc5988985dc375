"""Where spans go: ``none``, ``console``, ``memory`` (tests) or ``otlp``.

The choice comes from the caller or from the standard ``OTEL_TRACES_EXPORTER`` variable
(default ``none``: flowcause sends nothing anywhere unless asked to, unlike the OTel default
of ``otlp``). OTLP uses the standard OpenTelemetry exporter packages, which read the
standard variables themselves (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``..._HEADERS``, ``..._TIMEOUT``, ...). The protocol
is ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL``:
``http/protobuf`` (default, installed with flowcause) or ``grpc`` (``pip install
'flowcause[otlp]'``). Batching and the export thread are the span sink's
(:mod:`tracing.spans`), so the SDK's span processors are not used.
"""

from __future__ import annotations

import os
import sys

from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTERS = ("none", "console", "memory", "otlp")


def exporter_name(name: str | None = None) -> str:
    chosen = (name or os.environ.get("OTEL_TRACES_EXPORTER") or "none").strip().lower()
    if chosen not in EXPORTERS:
        raise ValueError(f"unknown span exporter {chosen!r} (one of {', '.join(EXPORTERS)})")
    return chosen


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


def span_exporter(name: str | None = None) -> SpanExporter | None:
    """The chosen exporter (None for ``none``)."""
    chosen = exporter_name(name)
    if chosen == "otlp":
        return otlp_exporter()
    if chosen == "console":
        return ConsoleSpanExporter(out=sys.stdout)  # today's stdout, not the one at import
    return InMemorySpanExporter() if chosen == "memory" else None
