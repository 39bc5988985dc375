"""Graph nodes as numbers: one float column per node, the same coding for every window.

A node is *discrete* when it is not numeric (a ``status`` string) or takes at most
``MAX_LEVELS`` integer values (booleans, branch indicators, small counts); its column holds
level codes ``0..L-1``, "absent" (NaN, the step did not run) being a level of its own, the
first. Any other node is *continuous*: its column holds the value, NaN when absent.
Levels are taken from every window at once, so a value seen in one window only still gets a
code, and a node that is absent throughout one window is still a node. Step latencies are
coarsened first (:func:`latency_bucket`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

MAX_LEVELS = 10
MAX_CATEGORIES = 50
HASH_SUFFIX = ".hash"  # a larger BYTES tensor's digest (docs/trace-store.md): an id, no category
LATENCY_RESOLUTION_MS = 1.0
LATENCY_STEP = 1.1


def latency_bucket(ms: np.ndarray) -> np.ndarray:
    """Latency as a bucket number: 0 below ~0.1 ms, then buckets 10 % wide (from 1 ms on).
    Timing jitter of microseconds, which any two windows show, is not a fault; a step that
    became slower by a millisecond or by a tenth is."""
    return np.floor(np.log1p(np.maximum(ms, 0.0) / LATENCY_RESOLUTION_MS) / np.log(LATENCY_STEP))


def usable_columns(*frames: pd.DataFrame) -> list[str]:
    """Columns that can be nodes, decided over all ``frames`` together: numeric or boolean
    ones (in some window; :func:`causal.frames.check_numbers` then holds the others to
    numbers), and text with at most ``MAX_CATEGORIES`` values in all windows together.
    Decided window by window, a window of one request or of a few dozen would pass any id
    or hash as a category, each of its values unseen elsewhere. Digests (``.hash``) are
    never nodes, however few requests the windows hold."""
    out = []
    for col in dict.fromkeys(c for frame in frames for c in frame.columns):
        if str(col).endswith(HASH_SUFFIX):
            continue
        held = [f[col] for f in frames if col in f and f[col].notna().any()]
        if (any(_is_numeric(s) for s in held) or not held
                or pd.concat(held, ignore_index=True).nunique(dropna=True) <= MAX_CATEGORIES):
            out.append(col)
    return out


@dataclass(frozen=True)
class Encoding:
    """How each node's column is coded; ``levels[j]`` is None for a continuous node."""

    nodes: list[str]
    levels: list[list[object] | None]
    coarse: frozenset[str] = frozenset()  # latency nodes, coded as :func:`latency_bucket`

    @cached_property
    def discrete(self) -> np.ndarray:
        return np.array([lv is not None for lv in self.levels], dtype=bool)

    @cached_property
    def textual(self) -> list[bool]:
        """Whether a discrete node's levels are text: then every window is coded by its
        values' text, numeric ones too (a BOOL column read as ``bool`` in one window and, with
        blanks, as text in another; a column with no value at all in one window)."""
        return [lv is not None and any(isinstance(v, str) for v in lv) for lv in self.levels]

    def n_levels(self, j: int) -> int:
        lv = self.levels[j]
        return 0 if lv is None else len(lv)

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows x nodes matrix; a node missing from ``frame`` is absent in every row."""
        out = np.full((len(frame), len(self.nodes)), np.nan)
        for j, (node, levels) in enumerate(zip(self.nodes, self.levels, strict=True)):
            if node not in frame:
                if levels is not None:
                    out[:, j] = 0 if levels[:1] == [None] else len(levels)
                continue
            series = _values(frame, node, self.coarse)
            if levels is None:
                out[:, j] = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
            elif _is_numeric(series) and not self.textual[j]:
                out[:, j] = _codes(series.to_numpy(dtype=float), levels)
            else:
                codes = {level: i for i, level in enumerate(levels)}
                out[:, j] = [codes.get(None if pd.isna(v) else str(v), len(levels))
                             for v in series]
        return out

    def decode(self, j: int, value: float) -> object:
        """The value a code (or a continuous value) stands for, for reports."""
        levels = self.levels[j]
        if levels is None:
            return None if np.isnan(value) else float(value)
        code = int(value)
        return levels[code] if code < len(levels) else "unseen"


def _is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


def _codes(values: np.ndarray, levels: list[object]) -> np.ndarray:
    """Level codes of numeric values; a value that is no level gets code ``len(levels)``."""
    absent = levels[:1] == [None]
    numbers = np.array(levels[1:] if absent else levels, dtype=float)
    at = np.minimum(np.searchsorted(numbers, values), max(len(numbers) - 1, 0))
    hit = numbers[at] == values if len(numbers) else np.zeros(len(values), dtype=bool)
    codes = np.where(hit, at + int(absent), len(levels))
    return np.where(np.isnan(values), 0 if absent else len(levels), codes).astype(float)


def _values(frame: pd.DataFrame, node: str, coarse: Collection[str]) -> pd.Series:
    if node not in frame:
        return pd.Series(np.nan, index=frame.index)
    if node in coarse:
        return pd.Series(latency_bucket(pd.to_numeric(frame[node], errors="coerce")
                                        .to_numpy(dtype=float)), index=frame.index)
    return frame[node]


def fit_encoding(nodes: Sequence[str], frames: Sequence[pd.DataFrame],
                 coarse: Collection[str] = ()) -> Encoding:
    """Decide each node's kind and levels from all ``frames`` together; ``coarse`` nodes
    (step latencies) are taken as :func:`latency_bucket` numbers."""
    levels: list[list[object] | None] = []
    for node in nodes:
        series = [_values(f, node, coarse) for f in frames]
        absent = any(f.isna().any() for f in series)
        # a window without a single value of the node says nothing about its kind
        filled = [f for f in series if f.notna().any()]
        if all(_is_numeric(f) for f in filled):
            values = np.concatenate([f.to_numpy(dtype=float) for f in filled] or [np.empty(0)])
            numbers = np.unique(values[~np.isnan(values)])
            if len(numbers) > MAX_LEVELS or not np.all(numbers == np.round(numbers)):
                levels.append(None)
                continue
            ordered: list[object] = numbers.tolist()
        else:
            ordered = sorted({str(v) for f in filled for v in f.dropna()})
        levels.append(([None] if absent else []) + ordered)
    return Encoding(list(nodes), levels, frozenset(coarse))
