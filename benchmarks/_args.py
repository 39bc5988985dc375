"""Argument types shared by the benchmarks: a bad value is refused by argparse with a
message (``parser.error``, exit code 2) instead of a traceback later in the run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive (must be >= 1)")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive finite number")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a non-negative finite number")
    return value


def ratio(text: str) -> float:
    """A ratio in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer type refusing values below ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum {minimum}")
        return value
    return parse


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
