"""Seeded request traffic: input tensors drawn from distributions, replayed from a CSV file,
or made by a generator function of the scenario's step module.

All three produce a batch of stacked tensors (first dimension = request) that
:func:`requests` splits into one mapping of arrays per request.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from scenarios.faults import Arrays, load_code
from scenarios.spec import (
    CsvReplay,
    Generator,
    Scenario,
    ScenarioError,
    TensorDistribution,
    as_datatype,
    csv_column,
    read_csv,
)


def _sample(rng: np.random.Generator, n: int, name: str, spec: TensorDistribution) -> np.ndarray:
    draw = getattr(rng, spec.distribution)
    try:
        return as_datatype(np.asarray(draw(**spec.params, size=(n, *spec.shape))), spec.datatype)
    except (TypeError, ValueError, OverflowError) as exc:  # checked at load: should not happen
        raise ScenarioError(f"traffic.inputs.{name}: {spec.distribution} with params {spec.params} "
                            f"and datatype {spec.datatype}: {exc}") from None


def _rows(rng: np.random.Generator, n: int, size: int, order: str) -> np.ndarray:
    if order == "sample":
        return rng.integers(0, size, n)
    passes = -(-n // size)
    if order == "sequential":
        return np.tile(np.arange(size), passes)[:n]
    return np.concatenate([rng.permutation(size) for _ in range(passes)])[:n]


def _replay(scenario: Scenario, rng: np.random.Generator, n: int, csv: CsvReplay) -> Arrays:
    path = scenario.path(csv.path)
    table = read_csv(path)
    if table.empty:
        raise ScenarioError(f"traffic.csv.path {path}: no rows to replay")
    rows = _rows(rng, n, len(table), csv.order)
    return {name: csv_column(table, path, csv, name)[rows].reshape(n, 1) for name in csv.tensors}


def _generate(scenario: Scenario, rng: np.random.Generator, n: int, gen: Generator) -> Arrays:
    function = load_code(gen.function, scenario.module)
    where = f"traffic.generator {gen.function}"
    try:
        batch = function(rng, n, **gen.params)
    except Exception as exc:  # the scenario's own code: one line naming it, not a traceback
        raise ScenarioError(f"{where} with params {gen.params} failed: "
                            f"{type(exc).__name__}: {exc}") from None
    if not isinstance(batch, Mapping):
        raise ScenarioError(f"{where} returned {type(batch).__name__}, not a mapping of tensors")
    arrays = {k: np.asarray(v) for k, v in batch.items()}
    bad = [k for k, v in arrays.items() if v.ndim == 0 or len(v) != n]
    if bad:
        raise ScenarioError(f"{where} returned {', '.join(map(str, bad))} without {n} rows")
    return arrays


def batch(scenario: Scenario, n: int, seed: int) -> Arrays:
    """``n`` requests of the scenario's traffic as stacked arrays (deterministic in ``seed``)."""
    traffic = scenario.traffic
    rng = np.random.default_rng(seed)
    if traffic.inputs is not None:
        return {name: _sample(rng, n, name, spec) for name, spec in traffic.inputs.items()}
    if traffic.csv is not None:
        return _replay(scenario, rng, n, traffic.csv)
    assert traffic.generator is not None
    return _generate(scenario, rng, n, traffic.generator)


def requests(scenario: Scenario, n: int, seed: int) -> list[Arrays]:
    """One mapping of input arrays per request."""
    stacked = batch(scenario, n, seed)
    return [{name: values[i] for name, values in stacked.items()} for i in range(n)]
