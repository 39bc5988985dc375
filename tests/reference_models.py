"""The conformance suite's reference models (../shared/conformance/README.md)."""

from __future__ import annotations

import numpy as np


def add_sub(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    a, b = inputs["INPUT0"], inputs["INPUT1"]
    for name, x in (("INPUT0", a), ("INPUT1", b)):
        if x.dtype != np.int32 or x.shape != (1, 16):
            raise ValueError(f"{name} must be INT32 [1, 16], got {x.dtype} {list(x.shape)}")
    return {"OUTPUT0": a + b, "OUTPUT1": a - b}


def add10(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"OUTPUT": (inputs["INPUT"] + 10).astype(np.float32)}


def mul10(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"OUTPUT": (inputs["INPUT"] * 10).astype(np.float32)}


def route(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if int(inputs["CHOICE"].reshape(-1)[0]) == 0:
        return {"OUTPUT0": inputs["INPUT0"]}
    return {"OUTPUT1": inputs["INPUT1"]}


def join_sum(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"OUTPUT1": inputs["INPUT1"] + inputs["INPUT2"]}


STEPS = {"add_sub": add_sub, "add10": add10, "mul10": mul10, "route": route, "join_sum": join_sum}
