"""The interface every localisation method implements."""

from __future__ import annotations

import numbers
from abc import ABC
from typing import ClassVar, TypeGuard

import pandas as pd

from causal.graph import CausalGraph
from causal.result import Ranking


def is_integer(value: object) -> TypeGuard[int]:
    """A whole number, not a bool (``--option`` values are JSON: ``true`` is no count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_seed(seed: object) -> None:
    """ValueError for a seed numpy cannot take (``--option seed=abc`` is the string)."""
    if not is_integer(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")


def check_alpha(alpha: object) -> None:
    if not is_number(alpha) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number between 0 and 1, got {alpha!r}")


class UnsupportedMode(ValueError):
    """A method asked for a kind of localisation it does not do."""


class Method(ABC):
    """A root-cause localiser over a :class:`CausalGraph`.

    ``shift`` compares a reference window with an incident window; ``anomaly`` explains one
    request against a reference window. Options are keyword arguments of the constructor
    (an unknown one is a TypeError).
    The caller (:func:`causal.localise`) times the call and fills ``Ranking.seconds``.
    """

    name: ClassVar[str]
    modes: ClassVar[frozenset[str]]

    def shift(self, graph: CausalGraph, reference: pd.DataFrame, incident: pd.DataFrame
              ) -> Ranking:
        raise UnsupportedMode(f"method {self.name!r} does not compare windows")

    def anomaly(self, graph: CausalGraph, reference: pd.DataFrame, request: pd.DataFrame
                ) -> Ranking:
        raise UnsupportedMode(f"method {self.name!r} does not explain single requests")
