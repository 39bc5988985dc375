"""What a transport must do: move records between topics. The step logic is shared."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from engine.record import Record

Handler = Callable[[Record], None]


class Host(Protocol):
    """What a transport may ask of the engine it serves."""

    def held_records(self) -> Iterator[Record]:
        """Records still waiting in a join or a batch: every record a waiting run consumed
        (their offsets must not be committed yet)."""
        ...

    def forget_requests(self, keep: Callable[[str], bool]) -> None:
        """Drop join state of requests for which ``keep(request_id)`` is False."""
        ...

    def running_tasks(self) -> list[asyncio.Task[Any]]:
        """Steps running as tasks (async, threaded or batched) right now."""
        ...


class Transport(Protocol):
    """Moves records; the engine's processors do everything else.

    ``publish`` never blocks (a transport may buffer); handlers run on the event loop, one
    record at a time per subscription, in publish order per topic (per partition on Kafka).
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def publish(self, topic: str, record: Record) -> None: ...

    def prepare(self, topics: Iterable[str], host: Host) -> None:
        """Called once before :meth:`start` with every topic the engine will use."""
        ...

    def subscribe(self, topic: str, handler: Handler, shared: bool = True) -> None:
        """``shared``: the processes of one deployment split the topic's records between them
        (work); otherwise every process sees every record (results, for waiting clients)."""
        ...

    def wants(self, topic: str) -> bool:
        """False when a record on ``topic`` would reach nobody, so it need not be built.

        On Kafka, a step's inputs topic is written only when asked for (readers outside
        the process cannot be known); every other topic always."""
        ...

    async def drain(self) -> None:
        """Wait until everything published so far has been delivered."""
        ...
