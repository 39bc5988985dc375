"""Seeded request traffic: input tensors drawn from distributions, replayed from a CSV file,
or made by a generator function of the scenario's step module.

All three produce a batch of stacked tensors (first dimension = request) that
:func:`requests` splits into one mapping of arrays per request.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.tensors import DTYPES
from scenarios.faults import Arrays, load_code
from scenarios.spec import CsvReplay, Generator, Scenario, TensorDistribution


def _as_datatype(values: np.ndarray, datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([str(v) for v in values.reshape(-1)], dtype=object).reshape(values.shape)
    return values.astype(DTYPES[datatype])


def _sample(rng: np.random.Generator, n: int, spec: TensorDistribution) -> np.ndarray:
    draw = getattr(rng, spec.distribution)
    return _as_datatype(np.asarray(draw(**spec.params, size=(n, *spec.shape))), spec.datatype)


def _rows(rng: np.random.Generator, n: int, size: int, order: str) -> np.ndarray:
    if order == "sample":
        return rng.integers(0, size, n)
    passes = -(-n // size)
    if order == "sequential":
        return np.tile(np.arange(size), passes)[:n]
    return np.concatenate([rng.permutation(size) for _ in range(passes)])[:n]


def _replay(scenario: Scenario, rng: np.random.Generator, n: int, csv: CsvReplay) -> Arrays:
    table = pd.read_csv(scenario.path(csv.path), keep_default_na=False)
    rows = _rows(rng, n, len(table), csv.order)
    return {name: _as_datatype(table[col.column].to_numpy()[rows].reshape(n, 1), col.datatype)
            for name, col in csv.tensors.items()}


def _generate(scenario: Scenario, rng: np.random.Generator, n: int, gen: Generator) -> Arrays:
    function = load_code(gen.function, scenario.module)
    batch = function(rng, n, **gen.params)
    bad = [k for k, v in batch.items() if len(v) != n]
    if bad:
        raise ValueError(f"{gen.function} returned {', '.join(bad)} without {n} rows")
    return dict(batch)


def batch(scenario: Scenario, n: int, seed: int) -> Arrays:
    """``n`` requests of the scenario's traffic as stacked arrays (deterministic in ``seed``)."""
    traffic = scenario.traffic
    rng = np.random.default_rng(seed)
    if traffic.inputs is not None:
        return {name: _sample(rng, n, spec) for name, spec in traffic.inputs.items()}
    if traffic.csv is not None:
        return _replay(scenario, rng, n, traffic.csv)
    assert traffic.generator is not None
    return _generate(scenario, rng, n, traffic.generator)


def requests(scenario: Scenario, n: int, seed: int) -> list[Arrays]:
    """One mapping of input arrays per request."""
    stacked = batch(scenario, n, seed)
    return [{name: values[i] for name, values in stacked.items()} for i in range(n)]
