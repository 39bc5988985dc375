"""Windows of traffic as frames: CSV files (globs allowed) or trace-store windows.

``store:PATH@T0..T1`` reads requests that arrived in ``[T0, T1)`` from the trace store at
PATH (either end may be left out: ``store:PATH@T0..``, ``store:PATH``); with several
pipelines (chained), their frames are joined on the request id. Anything else is a path or
glob of CSV files, concatenated in name order.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

STORE_PREFIX = "store:"
MIN_ROWS = 2  # the fewest requests a window needs: mechanisms are cross-fitted on two halves


class WindowError(ValueError):
    """Windows that cannot be ranked: too few requests, columns that are no nodes of the
    pipeline, or a numeric column holding values that are no numbers."""


def check_rows(frame: pd.DataFrame, name: str, least: int = MIN_ROWS) -> None:
    if len(frame) < least:
        raise WindowError(f"the {name} window holds {len(frame)} request{'s' * (len(frame) != 1)}; "
                          f"a ranking needs at least {least}")


def check_numbers(columns: Sequence[str], frames: Mapping[str, pd.DataFrame]) -> None:
    """A column that is numeric in one window must read as numbers in every window (one
    value with a typo, ``100.0x``, makes pandas read a whole CSV column as text). A window
    where the column holds no value at all (a text output every request of it lacks, which
    pandas reads as float NaN) is neither numbers nor text."""
    for col in columns:
        held = {name: f[col] for name, f in frames.items() if col in f and f[col].notna().any()}
        if not any(pd.api.types.is_numeric_dtype(s) for s in held.values()):
            continue
        for name, series in held.items():
            if pd.api.types.is_numeric_dtype(series):
                continue
            bad = series[pd.to_numeric(series, errors="coerce").isna() & series.notna()]
            if len(bad):
                raise WindowError(f"column {col!r} of the {name} window holds values that are no "
                                  f"numbers (e.g. {bad.iloc[0]!r}) where the other window's are")


TEXT_SUFFIX = ".text"  # the text values of a column that holds numbers and text


def _number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (str, bytes))


def numbers_apart(*frames: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
    """The frames with every text column (object dtype) that holds numbers read as numbers,
    decided over all frames together. A tensor that is a number in some requests and text
    in others is one object column of a trace-store frame (docs/trace-store.md); read as
    text it would be a category of hundreds of values (no node at all past
    ``causal.encoding.MAX_CATEGORIES``), and a window holding only its numbers would not
    match one holding both. So such a column ``C`` becomes two nodes of its tensor: ``C``
    with the numbers (NaN where the value is text) and ``C.text`` with the text (missing
    where it is a number), in every frame; an object column holding numbers only becomes a
    numeric one. Frames without such columns are returned as they are."""
    # per frame, per object column: which values are numbers (each value looked at once)
    masks = [{col: frame[col].map(_number).astype(bool) for col in frame.columns
              if frame[col].dtype == object} for frame in frames]
    numbers: dict[str, bool] = {}
    texts: dict[str, bool] = {}
    for frame, by_column in zip(frames, masks, strict=True):
        for col, is_number in by_column.items():
            held = frame[col].notna()
            numbers[col] = numbers.get(col, False) or bool((is_number & held).any())
            texts[col] = texts.get(col, False) or bool((~is_number & held).any())
    changed = [c for c, has in numbers.items() if has]
    if not changed:
        return frames
    out = []
    for frame, by_column in zip(frames, masks, strict=True):
        frame = frame.copy()
        for col in changed:
            if col not in frame:
                continue
            values = frame[col]
            # a frame where the column is numeric already holds numbers only
            is_number = by_column.get(col, pd.Series(True, index=values.index))
            frame[col] = pd.to_numeric(values.where(is_number), errors="coerce")
            if texts[col]:
                frame[col + TEXT_SUFFIX] = values.where(~is_number & values.notna())
        out.append(frame)
    return tuple(out)


def without_infinities(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every ±inf of its numeric columns made NaN, a missing value (the
    frame itself when it holds none). An infinity is no number a mechanism can be fitted
    to or compared on (one in the reference made the linear fits fail), so every window,
    and a request, read it as missing: for a step's output, a tensor it did not give."""
    numeric = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]
    if not numeric:
        return frame
    infinite = np.isinf(frame[numeric].to_numpy(dtype=float))
    if not infinite.any():
        return frame
    out = frame.copy()
    for i in np.flatnonzero(infinite.any(axis=0)):
        col = numeric[i]
        out[col] = out[col].where(~np.isinf(out[col].to_numpy(dtype=float)))
    return out


def read_window(source: str, pipelines: Sequence[str],
                layout: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The frame ``source`` names, in ``layout`` when given (store windows only; CSV files
    are taken to be in it already)."""
    if source.startswith(STORE_PREFIX):
        return _store_window(source[len(STORE_PREFIX):], pipelines, layout)
    files = sorted(glob.glob(source)) or ([source] if Path(source).exists() else [])
    if not files:
        raise FileNotFoundError(f"no CSV file matches {source!r}")
    tables = [_read_csv(f) for f in files]
    for f, table in zip(files[1:], tables[1:], strict=True):
        _same_header(files[0], tables[0], f, table)
    return pd.concat(tables, ignore_index=True)


def is_csv(source: str) -> bool:
    """Whether the window ``source`` names is CSV files (else a trace-store window)."""
    return not source.startswith(STORE_PREFIX)


def _read_csv(path: str) -> pd.DataFrame:
    """One CSV file; a file that holds no CSV table (empty, a ragged row, not UTF-8) is a
    :class:`WindowError` naming it (pandas raises these as ValueErrors of its own)."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise WindowError(f"{path}: an empty file, no CSV header") from None
    except pd.errors.ParserError as exc:
        raise WindowError(f"{path}: not a CSV table ({str(exc).strip()})") from None
    except UnicodeDecodeError as exc:
        raise WindowError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _same_header(one: str, first: pd.DataFrame, other: str, second: pd.DataFrame,
                 columns: Sequence[str] | None = None) -> None:
    """CSV files are one fixed table: a column one file has and the other lacks is a
    different table, not a value every request lacks (which an absent column of a
    trace-store window is). Only ``columns`` are compared when given."""
    keep = set(columns) if columns is not None else None

    def lacking(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
        return [str(c) for c in a.columns if c not in b.columns and (keep is None or c in keep)]

    for (has, a), (lacks, b) in (((one, first), (other, second)), ((other, second), (one, first))):
        missing = lacking(a, b)
        if missing:
            raise WindowError(f"{lacks} lacks the column{'s' * (len(missing) > 1)} "
                              f"{', '.join(missing)} that {has} has: CSV windows must have the "
                              "same columns")


def check_same_columns(nodes: Sequence[str], reference: tuple[str, pd.DataFrame],
                       incident: tuple[str, pd.DataFrame]) -> None:
    """Two CSV windows (``(source, frame)``) must have the same columns among ``nodes``."""
    _same_header(f"the reference window ({reference[0]})", reference[1],
                 f"the incident window ({incident[0]})", incident[1], nodes)


def check_nodes(nodes: Sequence[str], frames: Mapping[str, pd.DataFrame]) -> None:
    """Every window must hold a column that is a node: checked on the windows together, a
    window with none of them (its headers misspelt) would read as every node absent, a
    confident fault."""
    for name, frame in frames.items():
        if not any(node in frame.columns for node in nodes):
            columns = [str(c) for c in frame.columns]
            shown = ", ".join(columns[:5]) + (", ..." if len(columns) > 5 else "")
            raise WindowError(f"none of the {name} window's columns ({shown or 'none'}) are "
                              "nodes of the pipeline")


def _store_window(spec: str, pipelines: Sequence[str],
                  layout: Mapping[str, str] | None) -> pd.DataFrame:
    from tracing.store import TraceStore  # the trace store is optional for CSV users

    path, _, window = spec.partition("@")
    start, _, end = window.partition("..")
    lo, hi = _time(start, spec), _time(end, spec)
    store = TraceStore(path)
    frames = [store.frame(p, lo, hi) for p in pipelines]
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.join(other.drop(columns=[c for c in other if c in frame]), how="outer")
    if layout is None:
        return frame
    from tracing.layout import LayoutError, to_layout

    try:
        return to_layout(frame, layout)
    except LayoutError as exc:  # the window's data, not the options: exit 1
        raise WindowError(f"{STORE_PREFIX}{spec}: {exc}") from None


def _time(text: str, spec: str) -> pd.Timestamp | None:
    """One end of a store window: None when left out; epoch seconds when a number, else an
    ISO-8601 time (UTC unless it names its zone). Anything else is a :class:`WindowError`."""
    from tracing.store import to_timestamp

    text = text.strip()
    if not text:
        return None
    value: str | float = text
    with contextlib.suppress(ValueError):  # a number: epoch seconds
        value = float(text)
    bad = f"{text!r} in {STORE_PREFIX}{spec} is no time (an ISO-8601 time or epoch seconds)"
    try:
        stamp = to_timestamp(value)
    except (ValueError, OverflowError) as exc:
        raise WindowError(f"{bad}: {exc}") from None
    if stamp is None or pd.isna(stamp):
        raise WindowError(bad)
    return stamp
