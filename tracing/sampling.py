"""Which requests get spans: OpenTelemetry's standard samplers, by ``OTEL_TRACES_SAMPLER``.

The decision is taken once per request, where the engine makes the request's record
(:meth:`engine.engine.Engine.make_request`), and travels as the W3C ``traceparent``'s sampled
flag in every record made from it (:attr:`engine.lineage.Lineage.sampled`): the steps of a
request, its joins, the pipelines it is chained into and the processes it crosses all agree,
and the ``traceparent`` the engine answers with tells the caller what was decided. The span
sink makes spans for sampled requests only; the trace store records every request either way
(it is what root-cause analysis reads, and a request that went wrong must be there).

| ``OTEL_TRACES_SAMPLER`` | a request with a client ``traceparent`` | without one |
|---|---|---|
| ``parentbased_always_on`` (default) | its sampled flag | sampled |
| ``parentbased_always_off`` | its sampled flag | not sampled |
| ``parentbased_traceidratio`` | its sampled flag | by trace id, ratio ``OTEL_TRACES_SAMPLER_ARG`` |
| ``always_on`` / ``always_off`` | sampled / not sampled | sampled / not sampled |
| ``traceidratio`` | by trace id | by trace id |

The trace-id ratio test is the SDK's ``TraceIdRatioBased``: sampled when the trace id's low 64
bits are below ``ratio × 2^64``, so every process that sees a trace id decides alike.
"""

from __future__ import annotations

from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from engine.lineage import Sampler, parent_or_sampled

SAMPLERS = ("parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio",
            "always_on", "always_off", "traceidratio")
_LOW_64 = (1 << 64) - 1


def _ratio(arg: str | None) -> float:
    """``OTEL_TRACES_SAMPLER_ARG`` as a ratio in [0, 1]; 1.0 when unset, as in the SDK."""
    if arg is None or not arg.strip():
        return 1.0
    try:
        ratio = float(arg)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a ratio between 0 and 1")
    return ratio


def sampler(name: str, arg: str | None = None) -> Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER=name`` (with ``OTEL_TRACES_SAMPLER_ARG=arg``) means."""
    given, name = name, name.strip().lower()
    if name not in SAMPLERS:
        raise ValueError(f"OTEL_TRACES_SAMPLER={given!r} is not supported "
                         f"(one of: {', '.join(SAMPLERS)})")
    if name == "parentbased_always_on":
        return parent_or_sampled
    if name == "always_on":
        return lambda trace_id, parent: True
    if name == "always_off":
        return lambda trace_id, parent: False
    if name == "parentbased_always_off":
        return lambda trace_id, parent: False if parent is None else parent
    bound = TraceIdRatioBased(_ratio(arg)).bound

    def by_trace_id(trace_id: str) -> bool:
        return int(trace_id, 16) & _LOW_64 < bound

    if name == "traceidratio":
        return lambda trace_id, parent: by_trace_id(trace_id)
    return lambda trace_id, parent: by_trace_id(trace_id) if parent is None else parent
