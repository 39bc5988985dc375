"""Step code of the synthetic 32-step DAG (``scenarios/pipelines/dag30.yaml``).

Every step ``node_NN`` is a small fixed neural network: it reads its scalar inputs (in name
order), computes ``y = w2 · tanh(W1 x + b1) + b2`` with weights drawn from a generator
seeded by the step's name, and returns ``yNN``. The pipeline's inputs ``x0 .. x4`` are
standard normal (:data:`INPUT_NAMES`), so every step's output is a smooth, non-linear
function of its parents plus nothing else: a known causal mechanism per node.
"""

from __future__ import annotations

import zlib

import numpy as np

STEP_COUNT = 32
HIDDEN = 8
INPUT_NAMES = ("x0", "x1", "x2", "x3", "x4")


class Node:
    """One step: a seeded two-layer network over however many inputs it is given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.output = "y" + name.rsplit("_", 1)[1]
        self.seed = zlib.crc32(name.encode())
        self._weights: dict[int, tuple[np.ndarray, ...]] = {}

    def weights(self, width: int) -> tuple[np.ndarray, ...]:
        if width not in self._weights:
            rng = np.random.default_rng([self.seed, width])
            self._weights[width] = (rng.normal(0, 1 / np.sqrt(width), (HIDDEN, width)),
                                    rng.normal(0, 0.3, HIDDEN),
                                    rng.normal(0, 1 / np.sqrt(HIDDEN), HIDDEN),
                                    rng.normal(0, 0.3, 1))
        return self._weights[width]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.array([float(inputs[k].reshape(-1)[0]) for k in sorted(inputs)])
        w1, b1, w2, b2 = self.weights(len(x))
        return {self.output: np.tanh(w1 @ x + b1) @ w2 + b2}


STEPS = {f"node_{i:02d}": Node(f"node_{i:02d}") for i in range(1, STEP_COUNT + 1)}
