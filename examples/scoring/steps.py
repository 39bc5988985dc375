"""Step code for examples/scoring/pipeline.yaml: plain functions of numpy arrays."""

from __future__ import annotations

import numpy as np

MEAN = np.array([50.0, 3.0, 0.2])
STD = np.array([20.0, 1.5, 0.1])
WEIGHTS = np.array([0.8, -0.5, 1.2])


def standardise(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"z": (inputs["features"] - MEAN) / STD}


def score(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    risk = np.atleast_1d(1.0 / (1.0 + np.exp(-(inputs["z"] @ WEIGHTS))))
    # A router: it produces only one of the two tensors, so only one branch runs.
    return {"high_risk": risk} if float(risk[0]) > 0.5 else {"low_risk": risk}


def review(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"decision": np.array(["review"], dtype=object), "risk": inputs["risk"]}


def approve(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"decision": np.array(["approve"], dtype=object), "risk": inputs["risk"]}
