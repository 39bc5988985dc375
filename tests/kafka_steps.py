"""Step code for the Kafka scale-out and crash tests (run by `flowcause serve` workers)."""

from __future__ import annotations

import numpy as np


def features(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    x = inputs["x"]
    return {"f": np.stack([x, x * x], axis=-1).reshape(-1)}


def model(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # joins the features with the raw input (an inner join of two topics)
    return {"y": np.atleast_1d(inputs["f"].sum() + inputs["x"].sum())}


STEPS = {"features": features, "model": model}

PIPELINE = """\
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: kscale
spec:
  steps:
    - name: features
    - name: model
      inputs: [features.outputs.f, kscale.inputs.x]
  output:
    steps: [model]
"""
