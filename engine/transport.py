"""What a transport must do: move records between topics. The step logic is shared."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from engine.record import Record

Handler = Callable[[Record], None]


class Transport(Protocol):
    """Moves records; the engine's processors do everything else.

    ``publish`` never blocks (a transport may buffer); handlers run on the event loop, one
    record at a time per subscription, in publish order per topic (per partition on Kafka).
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def publish(self, topic: str, record: Record) -> None: ...

    def subscribe(self, topic: str, handler: Handler) -> None: ...

    def wants(self, topic: str) -> bool:
        """False when a record on ``topic`` would reach nobody, so it need not be built.

        Kafka always answers True (consumers outside this process may read any topic)."""
        ...

    async def drain(self) -> None:
        """Wait until everything published so far has been delivered."""
        ...
