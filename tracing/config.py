"""Tracing configuration, from arguments or the environment, and the observer it builds.

| setting | variable | default |
|---|---|---|
| trace store directory (none: no recording) | ``FLOWCAUSE_TRACE_STORE`` | none |
| span exporter(s): none / console / memory / otlp, or a list | ``OTEL_TRACES_EXPORTER`` | none |
| no spans whatever the exporter (``true``) | ``OTEL_SDK_DISABLED`` | false |
| largest tensor kept whole (elements) | ``FLOWCAUSE_TRACE_MAX_VALUES`` | 64 |
| write the store at least every (seconds) | ``FLOWCAUSE_TRACE_FLUSH_SECONDS`` | 1.0 |
| build spans and write the store in a process of their own | ``FLOWCAUSE_TRACE_PROCESS`` | no |
| which requests get spans (:mod:`tracing.sampling`) | ``OTEL_TRACES_SAMPLER`` | ``parentbased_always_on`` |
| its ratio, for the ``traceidratio`` samplers | ``OTEL_TRACES_SAMPLER_ARG`` | 1.0 |
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from engine.lineage import Sampler, parent_or_sampled
from tracing.collector import Collector, Sink
from tracing.exporters import exporter_name, sdk_disabled, span_exporter
from tracing.offload import ProcessSinks
from tracing.recorder import StoreRecorder
from tracing.sampling import sampler
from tracing.spans import SpanSink
from tracing.summary import DEFAULT_MAX_VALUES


def yes_or_no(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def count(text: str | int) -> int:
    """A whole number >= 0."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def seconds(text: str | float) -> float:
    """A finite number > 0: the flusher thread waits that long between flushes (0, less or NaN
    would make it spin, infinity is more than a thread can wait)."""
    value = float(text)
    if not 0.0 < value < math.inf:  # NaN fails too
        raise ValueError(text)
    return value


# setting -> (variable, parser, what the parser accepts)
ENV: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "store": ("FLOWCAUSE_TRACE_STORE", str, "path"),
    "exporter": ("OTEL_TRACES_EXPORTER", str, "exporter name"),
    "max_values": ("FLOWCAUSE_TRACE_MAX_VALUES", count, "integer >= 0"),
    "flush_seconds": ("FLOWCAUSE_TRACE_FLUSH_SECONDS", seconds, "finite number > 0"),
    "process": ("FLOWCAUSE_TRACE_PROCESS", yes_or_no, "yes/no (1, true, yes, on, 0, ...)"),
    "sampler": ("OTEL_TRACES_SAMPLER", str, "sampler name"),
    "sampler_arg": ("OTEL_TRACES_SAMPLER_ARG", str, "sampler argument"),
}


@dataclass(frozen=True)
class TracingConfig:
    store: str | None = None
    exporter: str = "none"
    max_values: int = DEFAULT_MAX_VALUES
    flush_seconds: float = 1.0
    process: bool = False
    sampler: str = "parentbased_always_on"
    sampler_arg: str | None = None

    def __post_init__(self) -> None:
        """Settings given as arguments are held to what their variables accept."""
        for name in ("max_values", "flush_seconds"):
            _, parse, what = ENV[name]
            value = getattr(self, name)
            try:
                valid = parse(value) == value
            except (TypeError, ValueError):
                valid = False
            if not valid:
                raise ValueError(f"{name}={value!r} is not a valid {what}")

    @classmethod
    def from_env(cls, **overrides: Any) -> TracingConfig:
        """Settings from the environment; ``overrides`` that are not None win (an exporter
        given so even over ``OTEL_SDK_DISABLED``)."""
        values: dict[str, Any] = {}
        for name, (variable, parse, what) in ENV.items():
            raw = os.environ.get(variable)
            if raw:
                try:
                    values[name] = parse(raw)
                except ValueError:
                    raise ValueError(f"{variable}={raw!r} is not a valid {what}") from None
        if sdk_disabled():
            values["exporter"] = "none"
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        sampler(config.sampler, config.sampler_arg)  # a malformed sampler fails here, early
        return replace(config, exporter=exporter_name(config.exporter))


@dataclass
class Tracing:
    """The observer and the sampler to give the engine, and the span exporter (to read back
    ``memory``)."""

    collector: Collector
    exporter: SpanExporter | None
    sampler: Sampler = parent_or_sampled


def sinks(config: TracingConfig) -> list[Sink]:
    """The sinks ``config`` asks for (in the process that calls this)."""
    out: list[Sink] = []
    exporter = span_exporter(config.exporter)
    if exporter is not None:
        out.append(SpanSink(exporter))
    if config.store:
        out.append(StoreRecorder(config.store, config.max_values))
    return out


def build(config: TracingConfig) -> Tracing | None:
    """The collector with the sinks ``config`` asks for; None when it asks for nothing."""
    exporters = exporter_name(config.exporter)
    if exporters == "none" and not config.store:
        return None
    chosen = sampler(config.sampler, config.sampler_arg)
    if config.process:
        if "memory" in exporters.split(","):
            raise ValueError("the memory span exporter keeps spans in the process that made "
                             "them; it cannot run in a tracing process")
        factory = functools.partial(sinks, config)
        remote: Sequence[Sink] = [ProcessSinks(factory, config.flush_seconds)]
        return Tracing(Collector(remote, config.flush_seconds), None, chosen)
    local = sinks(config)
    exporter = next((s.exporter for s in local if isinstance(s, SpanSink)), None)
    return Tracing(Collector(local, config.flush_seconds), exporter, chosen)
