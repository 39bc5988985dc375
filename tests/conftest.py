"""Shared pytest fixtures."""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# ----------------------------------------------------------------------------- Kafka broker

KAFKA_ENV = "FLOWCAUSE_KAFKA_BOOTSTRAP"
KAFKA_HOWTO = (
    "start one with `make kafka-up` and export the variable it prints "
    f"(export {KAFKA_ENV}=127.0.0.1:PORT), or run everything with `make test`"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that asks for the Kafka broker carries the `kafka` marker (`-m "not kafka"`)."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of a real Kafka broker, from FLOWCAUSE_KAFKA_BOOTSTRAP.

    Without it the test is skipped, except under CI=true, where it fails: CI must run the
    Kafka tests (`make test` starts a broker with scripts/kafka_broker.py and sets the variable).
    """
    bootstrap = os.environ.get(KAFKA_ENV, "").strip()
    if not bootstrap:
        message = f"no Kafka broker: {KAFKA_ENV} is not set; {KAFKA_HOWTO}"
        if _in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not host or not port.isdigit():
        pytest.fail(f"{KAFKA_ENV}={bootstrap!r} is not HOST:PORT", pytrace=False)
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        pytest.fail(f"{KAFKA_ENV}={bootstrap} but nothing answers there ({exc}); {KAFKA_HOWTO}",
                    pytrace=False)
    return bootstrap


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """A factory of topic names unique to this test and run: ``unique_topic("orders")``.

    Names look like ``t-<test name>-<8 hex>-<suffix>`` (legal Kafka topic characters only), so
    tests can share one broker, run again without cleanup, and be traced back from a topic.
    """
    test = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:120].strip("-.")
    run = uuid.uuid4().hex[:8]

    def make(suffix: str = "topic") -> str:
        clean = re.sub(r"[^A-Za-z0-9._-]+", "-", suffix)[:60]
        return f"t-{test}-{run}-{clean}"

    return make


# ----------------------------------------------------------------------------- OTLP collector

@pytest.fixture
def collector_endpoint() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """A stand-in OTLP/HTTP collector on localhost."""
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1/traces", received
    server.shutdown()
    thread.join()
