"""Localisation methods by name: ours, the DoWhy GCM baselines and simple baselines."""

from __future__ import annotations

from causal.methods.base import Method, UnsupportedMode
from causal.methods.baselines import FirstAnomalous, RandomRanking, ZScore
from causal.methods.dowhy_gcm import DoWhyAnomaly, DoWhyShift
from causal.methods.flowcause import FlowCause

METHODS: dict[str, type[Method]] = {
    m.name: m for m in (FlowCause, DoWhyShift, DoWhyAnomaly, ZScore, FirstAnomalous,
                        RandomRanking)
}

__all__ = ["METHODS", "Method", "UnsupportedMode"]
