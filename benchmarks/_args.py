"""Argument types shared by the benchmarks: a bad value is refused by argparse with a
message (``parser.error``, exit code 2) instead of a traceback later in the run."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _number(text: str, kind: Callable[[str], T], what: str) -> T:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer type refusing values below ``minimum``."""
    def parse(text: str) -> int:
        value = _number(text, int, "an integer")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum {minimum}")
        return value
    return parse


def float_in(low: float, high: float, *, low_open: bool, high_open: bool,
             what: str) -> Callable[[str], float]:
    """A float type refusing values outside the interval (and NaN), saying ``what`` it wants."""
    def parse(text: str) -> float:
        value = _number(text, float, "a number")
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = float_in(0, math.inf, low_open=True, high_open=True,
                          what="a positive finite number")
non_negative_float = float_in(0, math.inf, low_open=False, high_open=True,
                              what="a non-negative finite number")
ratio = float_in(0, 1, low_open=True, high_open=False, what="in (0, 1]")


def comma_list(item: Callable[[str], T]) -> Callable[[str], list[T]]:
    """A comma-separated list, each value of type ``item``."""
    def parse(text: str) -> list[T]:
        return [item(v.strip()) for v in text.split(",")]
    return parse


def same_lengths(parser: argparse.ArgumentParser, **lists: list[object]) -> None:
    """``parser.error`` unless the lists (by option name) have one length."""
    if len({len(v) for v in lists.values()}) > 1:
        given = ", ".join(f"--{k.replace('_', '-')} {len(v)}" for k, v in lists.items())
        parser.error(f"one value per size is needed in each list (values given: {given})")
