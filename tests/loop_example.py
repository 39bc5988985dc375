"""docs/engine.md's loop, shared by the tests of loops: ``inc`` adds one, ``check`` sends the
value round again until it reaches 3, ``fin`` (after the loop) multiplies it by 100."""

from __future__ import annotations

import numpy as np
import yaml

LOOP_YAML = """\
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: loop
spec:
  allowCycles: true
  maxStepRevisits: 5
  steps:
    - name: inc
      inputs: [loop.inputs.x, check.outputs.again]
      tensorMap:
        check.outputs.again: x
      inputsJoinType: any
    - name: check
      inputs: [inc]
    - name: fin
      inputs: [check.outputs.done]
  output:
    steps: [fin]
"""
LOOP = yaml.safe_load(LOOP_YAML)


def inc(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"v": inputs["x"] + 1}


def check(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    v = inputs["v"]
    return {"again": v} if v.reshape(-1)[0] < 3 else {"done": v}


def fin(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"result": inputs["done"] * 100}


LOOP_STEPS = {"inc": inc, "check": check, "fin": fin}
