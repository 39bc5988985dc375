"""The interface every localisation method implements."""

from __future__ import annotations

from abc import ABC
from typing import ClassVar

import pandas as pd

from causal.graph import CausalGraph
from causal.result import Ranking


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
