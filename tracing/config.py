"""Tracing configuration, from arguments or the environment, and the observer it builds.

| setting | variable | default |
|---|---|---|
| trace store directory (none: no recording) | ``FLOWCAUSE_TRACE_STORE`` | none |
| span exporter: none / console / memory / otlp | ``OTEL_TRACES_EXPORTER`` | none |
| largest tensor kept whole (elements) | ``FLOWCAUSE_TRACE_MAX_VALUES`` | 64 |
| write the store at least every (seconds) | ``FLOWCAUSE_TRACE_FLUSH_SECONDS`` | 1.0 |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from tracing.collector import Collector, Sink
from tracing.exporters import exporter_name, span_exporter
from tracing.recorder import StoreRecorder
from tracing.spans import SpanSink
from tracing.summary import DEFAULT_MAX_VALUES

ENV: dict[str, tuple[str, type]] = {
    "store": ("FLOWCAUSE_TRACE_STORE", str),
    "exporter": ("OTEL_TRACES_EXPORTER", str),
    "max_values": ("FLOWCAUSE_TRACE_MAX_VALUES", int),
    "flush_seconds": ("FLOWCAUSE_TRACE_FLUSH_SECONDS", float),
}


@dataclass(frozen=True)
class TracingConfig:
    store: str | None = None
    exporter: str = "none"
    max_values: int = DEFAULT_MAX_VALUES
    flush_seconds: float = 1.0

    @classmethod
    def from_env(cls, **overrides: Any) -> TracingConfig:
        """Settings from the environment; ``overrides`` that are not None win."""
        values: dict[str, Any] = {}
        for name, (variable, parse) in ENV.items():
            raw = os.environ.get(variable)
            if raw:
                try:
                    values[name] = parse(raw)
                except ValueError:
                    raise ValueError(f"{variable}={raw!r} is not a valid {parse.__name__}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        return replace(config, exporter=exporter_name(config.exporter))


@dataclass
class Tracing:
    """The observer to give the engine, and the span exporter (to read back ``memory``)."""

    collector: Collector
    exporter: SpanExporter | None


def build(config: TracingConfig) -> Tracing | None:
    """The collector with the sinks ``config`` asks for; None when it asks for nothing."""
    sinks: list[Sink] = []
    exporter = span_exporter(config.exporter)
    if exporter is not None:
        sinks.append(SpanSink(exporter))
    if config.store:
        sinks.append(StoreRecorder(config.store, config.max_values))
    if not sinks:
        return None
    return Tracing(Collector(sinks, config.flush_seconds), exporter)
