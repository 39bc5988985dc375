"""The one place a scenario run gets its transport: the embedded bus, or Apache Kafka."""

from __future__ import annotations

import os
import uuid

from engine.embedded import EmbeddedBus
from engine.topics import Topics
from engine.transport import Transport

TRANSPORTS = ("embedded", "kafka")
KAFKA_ENV = "FLOWCAUSE_KAFKA_BOOTSTRAP"
KAFKA_PARTITIONS = 2


class TransportUnavailable(RuntimeError):
    """The chosen transport cannot be used here (no broker address, unknown name)."""


def create_transport(name: str, bootstrap: str | None = None) -> tuple[Transport, Topics]:
    """A transport and the topic names to use on it.

    On Kafka every run gets topics and a consumer group of its own (a fresh prefix), so runs
    sharing a broker never see each other's records.
    """
    if name == "embedded":
        return EmbeddedBus(), Topics()
    if name != "kafka":
        raise TransportUnavailable(f"unknown transport {name!r} (one of {', '.join(TRANSPORTS)})")
    bootstrap = bootstrap or os.environ.get(KAFKA_ENV, "").strip()
    if not bootstrap:
        raise TransportUnavailable(
            f"--transport kafka needs a broker: pass --bootstrap HOST:PORT or set {KAFKA_ENV} "
            "(scripts/kafka_broker.py up starts a local one and prints the export line)")
    from engine.kafka import KafkaTransport

    topics = Topics(prefix=f"scenario-{uuid.uuid4().hex[:10]}")
    return KafkaTransport(bootstrap, group_id=f"{topics.prefix}-engine",
                          partitions=KAFKA_PARTITIONS), topics
