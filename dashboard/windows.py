"""Windows of traffic to compare: which requests are "reference" and which "incident".

A window is written one of three ways:

- ``T0..T1``: requests that arrived at the pipeline in ``[T0, T1)``; each bound is an ISO-8601
  datetime (naive means UTC) or epoch seconds, and either may be left empty (``..T1``,
  ``T0..``);
- ``first:N``: the first ``N`` requests the store holds for the pipeline, by arrival;
- ``last:N``: the last ``N`` of them;
- ``requests:A..B``: the requests at positions ``A`` to ``B - 1`` in arrival order, counting
  from 0; ``B`` may be left empty (to the last).

Counting windows exist because a scenario run's timestamps are wall-clock times nobody
knows in advance, while "the first 500 requests were healthy" is what its YAML says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from tracing.store import TraceStore, to_timestamp

_COUNT = re.compile(r"^(first|last):(\d+)$")
_POSITIONS = re.compile(r"^requests:(\d+)\.\.(\d*)$")
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


class WindowError(ValueError):
    """A window that does not parse."""


@dataclass(frozen=True)
class Window:
    """A parsed window; ``text`` is how the user wrote it."""

    text: str
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    positions: slice | None = None  # of the requests in arrival order, for counting windows

    def select(self, store: TraceStore, pipeline: str) -> pd.DataFrame:
        """The frame (see :meth:`TraceStore.frame`) of the requests in this window."""
        frame = store.frame(pipeline, self.start, self.end)
        return frame if self.positions is None else frame.iloc[self.positions]


def _bound(text: str, whole: str) -> pd.Timestamp | None:
    text = text.strip()
    if not text:
        return None
    try:
        stamp = to_timestamp(float(text) if _NUMBER.match(text) else text)
    except ValueError as exc:
        raise WindowError(f"window {whole!r}: {text!r} is neither an ISO datetime nor epoch seconds: "
                          f"{exc}") from None
    if stamp is None or pd.isna(stamp):  # "nan", "NaT", "" parse to pandas' missing time
        raise WindowError(f"window {whole!r}: {text!r} is not a time (an ISO datetime or epoch seconds)")
    return stamp


def parse_window(text: str) -> Window:
    text = text.strip()
    count = _COUNT.match(text)
    if count:
        n = int(count.group(2))
        if count.group(1) == "first":
            return Window(text, positions=slice(0, n))
        return Window(text, positions=slice(-n, None) if n else slice(0, 0))
    positions = _POSITIONS.match(text)
    if positions:
        first, end = int(positions.group(1)), positions.group(2)
        if end and int(end) <= first:
            raise WindowError(f"window {text!r}: its start is not before its end")
        return Window(text, positions=slice(first, int(end) if end else None))
    lo, sep, hi = text.partition("..")
    if not sep:
        raise WindowError(f"window {text!r}: expected T0..T1, first:N, last:N or requests:A..B")
    start, end = _bound(lo, text), _bound(hi, text)
    if start is not None and end is not None and start >= end:
        raise WindowError(f"window {text!r}: its start is not before its end")
    return Window(text, start=start, end=end)
