"""Sampling: OTEL_TRACES_SAMPLER decides as the OpenTelemetry SDK does, the decision rides in
the traceparent's sampled flag through the whole request, spans are made for sampled requests
only, and the trace store still records every request. And the traceparent a request brings
is read as OpenTelemetry's W3C propagator reads it."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from engine.engine import Engine
from engine.lineage import Lineage, new_span_id, new_trace_id, parse_traceparent
from engine.record import Record
from engine.spec import load_pipelines
from engine.tensors import Tensor
from scenarios.steps.insurance_claims import STEPS, request_tensors
from tracing.config import TracingConfig, build
from tracing.sampling import sampler
from tracing.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "scenarios" / "pipelines" / "insurance_claims.yaml"
CLAIMS = ROOT / ".." / "shared" / "reference" / "insurance-claims" / "insurance_claims.csv"

SDK = {
    "parentbased_always_on": lambda r: sampling.ParentBased(sampling.ALWAYS_ON),
    "parentbased_always_off": lambda r: sampling.ParentBased(sampling.ALWAYS_OFF),
    "parentbased_traceidratio": lambda r: sampling.ParentBased(sampling.TraceIdRatioBased(r)),
    "always_on": lambda r: sampling.ALWAYS_ON,
    "always_off": lambda r: sampling.ALWAYS_OFF,
    "traceidratio": lambda r: sampling.TraceIdRatioBased(r),
}


@pytest.mark.parametrize("name", sorted(SDK))
def test_decisions_are_the_sdk_samplers(name: str) -> None:
    rng = random.Random(7)
    for ratio in (0.0, 0.25, 0.5, 1.0):
        ours, theirs = sampler(name, str(ratio)), SDK[name](ratio)
        decided = set()
        for _ in range(400):
            trace_id = f"{rng.getrandbits(128):032x}"
            for parent in (None, True, False):
                context = None
                if parent is not None:
                    flags = TraceFlags(TraceFlags.SAMPLED if parent else TraceFlags.DEFAULT)
                    remote = SpanContext(int(trace_id, 16), rng.getrandbits(64) | 1, True, flags)
                    context = trace.set_span_in_context(NonRecordingSpan(remote))
                expected = theirs.should_sample(context, int(trace_id, 16), "request").decision
                assert ours(trace_id, parent) == expected.is_sampled(), (ratio, trace_id, parent)
                decided.add(expected.is_sampled())
        if name.endswith("traceidratio") and 0 < ratio < 1:
            assert decided == {True, False}  # the ratio really split these trace ids


def test_malformed_settings_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER='jaeger_remote'"):
        sampler("jaeger_remote")
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG='1.5'"):
        sampler("traceidratio", "1.5")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "half")
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG='half'"):
        TracingConfig.from_env()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    config = TracingConfig.from_env()
    assert (config.sampler, config.sampler_arg) == ("traceidratio", "0.5")


def test_the_sampled_flag_and_tracestate_cross_kafka_headers() -> None:
    data = (Tensor.from_array("t", np.arange(3.0)),)
    for sampled, state in ((True, "v=1,w=2"), (False, None)):
        lin = Lineage("rid", "a" * 32, "b" * 16, "p", "s.outputs", sampled=sampled,
                      tracestate=state)
        headers = Record(lin, data).encode()[1]
        assert ("tracestate" in dict(headers)) is (state is not None)
        back = Record.decode(*Record(lin, data).encode()).lineage
        assert back.sampled is sampled and back.tracestate == state
        assert back.traceparent == f"00-{'a' * 32}-{'b' * 16}-{'01' if sampled else '00'}"
    # flags other tracers set: only the lowest bit is the sampled flag; upper case is read too
    for flags, sampled in (("03", True), ("02", False), ("FF", True), ("00", False)):
        headers = [(k, v) for k, v in Record(lin, data).encode()[1] if k != "traceparent"]
        headers.append(("traceparent", f"00-{'A' * 32}-{'B' * 16}-{flags}".encode()))
        back = Record.decode(Record(lin, data).encode()[0], headers).lineage
        assert (back.sampled, back.trace_id) == (sampled, "a" * 32)


@pytest.mark.parametrize("process", [False, True], ids=["in-process", "tracing-process"])
def test_spans_for_sampled_requests_and_the_store_for_all(tmp_path: Path, process: bool) -> None:
    """Half the requests come with a client traceparent (sampled or not, alternately), half
    without, decided by trace id at ratio 0.5: spans for exactly the sampled ones, every step
    of those, none of the others; answers carry the decision; the store has every request."""
    claims = pd.read_csv(CLAIMS).head(80).to_dict("records")
    exporter = InMemorySpanExporter()
    tracing = build(TracingConfig(store=str(tmp_path / "store"), exporter="memory" if not process
                                  else "none", sampler="parentbased_traceidratio",
                                  sampler_arg="0.5", process=process))
    assert tracing is not None
    if not process:
        assert isinstance(tracing.exporter, InMemorySpanExporter)
        exporter = tracing.exporter
    by_ratio = sampler("traceidratio", "0.5")
    expected: dict[str, bool] = {}
    answered: dict[str, bool] = {}

    async def main() -> None:
        with tracing.collector:
            async with Engine(load_pipelines(SPEC), STEPS, observers=[tracing.collector],
                              sampler=tracing.sampler) as engine:
                requests = [(f"q{i}", None if i % 2 == 0 else
                             f"00-{new_trace_id()}-{new_span_id()}-{'01' if i % 4 == 1 else '00'}")
                            for i in range(len(claims))]
                results = await asyncio.gather(*(
                    engine.infer("insurance_claims", request_tensors(claim), request_id=rid,
                                 traceparent=traceparent)
                    for claim, (rid, traceparent) in zip(claims, requests, strict=True)))
        for (rid, traceparent), result in zip(requests, results, strict=True):
            assert result.ok and result.lineage is not None
            expected[rid] = (traceparent.endswith("-01") if traceparent
                             else by_ratio(result.lineage.trace_id, None))
            answered[rid] = result.to_json()["parameters"]["traceparent"].endswith("-01")

    asyncio.run(main())
    assert answered == expected
    assert {True, False} <= set(expected.values())
    frame = TraceStore(tmp_path / "store").frame("insurance_claims")
    assert sorted(frame.index) == sorted(expected)  # every request recorded
    if process:
        return  # the tracing process's spans are exported there (tests/test_tracing_offload.py)
    spans = exporter.get_finished_spans()
    traced = {str(s.attributes["flowcause.request_id"]) for s in spans}
    assert traced == {rid for rid, sampled in expected.items() if sampled}
    # a span for every step a sampled request ran, as the store has them
    step_spans = sum(1 for s in spans if "flowcause.step" in s.attributes)
    status = [c for c in frame.columns if c.endswith(".status")]
    assert len(status) == 5
    ran = frame.loc[sorted(traced), status]
    assert step_spans == int(ran.isin(["ok", "error"]).to_numpy().sum()) > 2 * len(traced)


HEX = "0123456789abcdef"


def _hex(n: int) -> st.SearchStrategy[str]:
    return st.text(HEX, min_size=n, max_size=n)


TRACEPARENTS = st.one_of(
    st.builds(lambda pad, version, trace_id, span_id, flags, extra, end: (
        f"{pad}{version}-{trace_id}-{span_id}-{flags}{extra}{end}"),
        st.sampled_from(["", " ", "\t "]),
        st.one_of(st.sampled_from(["00", "01", "cc", "ff", "0", "0g"]), _hex(2)),
        st.one_of(_hex(32), st.just("0" * 32), _hex(31)),
        st.one_of(_hex(16), st.just("0" * 16), _hex(17)),
        st.one_of(_hex(2), _hex(1), st.just("0x")),
        st.sampled_from(["", "-", "-abc", "-x y", "x", "-\n"]),
        st.sampled_from(["", " ", "\t", "\n"])),
    st.text(HEX + "-0 ", max_size=70),
)


@settings(max_examples=600, deadline=None)
@given(TRACEPARENTS)
def test_traceparents_are_read_as_opentelemetrys_propagator_reads_them(value: str) -> None:
    context = trace.get_current_span(
        TraceContextTextMapPropagator().extract({"traceparent": value})).get_span_context()
    try:
        ours: tuple[str, str, bool] | None = parse_traceparent(value)
    except ValueError:
        ours = None
    if not context.is_valid:
        assert ours is None
        return
    assert ours == (f"{context.trace_id:032x}", f"{context.span_id:016x}",
                    context.trace_flags.sampled)


def test_upper_case_traceparents_are_read_as_lower_case() -> None:
    assert parse_traceparent(f"00-{'AB' * 16}-{'CD' * 8}-0B") == ("ab" * 16, "cd" * 8, True)
    with pytest.raises(ValueError, match="malformed"):
        parse_traceparent("00-" + "a" * 32 + "-" + "b" * 16 + "-01" + " " * 500)


def test_a_tracestate_needs_its_traceparent_and_comes_back_in_the_answer() -> None:
    async def main() -> None:
        async with Engine(load_pipelines(SPEC), STEPS) as engine:
            claim = request_tensors(pd.read_csv(CLAIMS).iloc[0].to_dict())
            parent = f"00-{new_trace_id()}-{new_span_id()}-01"
            cases = [(parent, "v=1", "v=1"), (None, "v=1", None), (parent, "x" * 513, None),
                     (parent, " ", None), (parent, None, None)]
            for traceparent, state, kept in cases:
                result = await engine.infer("insurance_claims", claim, traceparent=traceparent,
                                            tracestate=state)
                assert result.lineage is not None and result.lineage.tracestate == kept
                assert result.to_json()["parameters"].get("tracestate") == kept
            as_json = await engine.infer("insurance_claims", {
                "inputs": [t.to_json() for t in claim],
                "parameters": {"traceparent": parent, "tracestate": "v=2"}})
            assert as_json.to_json()["parameters"]["tracestate"] == "v=2"

    asyncio.run(main())
