"""A tensor that is a number in some requests and text in others (one object column of a
trace-store frame) is two nodes of its tensor for the causal module: its numbers and its
text. Read as text it was a category of hundreds of values and dropped, so a fault in it
went unseen; a window holding its numbers only refused to rank against one holding both;
and one request's ordinary number was coded as a category."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

import causal
from causal.frames import TEXT_SUFFIX, numbers_apart
from tests.test_causal_audit_fixes import CHAIN

TAG = "a.outputs.tag"


def tagged(n: int, rng: np.random.Generator, below: float, numbers_only: bool = False
           ) -> pd.DataFrame:
    """Step a tags x: "small" below ``below``, else the number 10 x (object column as a
    trace-store frame holds it); b passes the numbers on, 0 for text."""
    x = rng.normal(size=n)
    tag = np.array([10 * v if v >= below else "small" for v in x], dtype=object)
    if numbers_only:
        tag = tag.astype(float)
    z = np.where(x >= below, 10 * x, 0.0) + 0.01 * rng.normal(size=n)
    return pd.DataFrame({"p.inputs.x": x, TAG: tag, "b.outputs.z": z, "p.outputs.z": z},
                        index=[f"r{i}" for i in range(n)])


def test_numbers_and_text_of_one_column_are_two_nodes_in_every_window() -> None:
    rng = np.random.default_rng(1)
    reference, incident = tagged(300, rng, -1.0), tagged(300, rng, 0.7)
    ref, inc = numbers_apart(reference, incident)
    for frame in (ref, inc):
        assert frame[TAG].dtype == float and set(frame[TAG + TEXT_SUFFIX].dropna()) == {"small"}
        assert frame[TAG].isna().equals(frame[TAG + TEXT_SUFFIX].notna())
    nodes = causal.graph_for(CHAIN, reference, incident).nodes
    assert TAG in nodes and TAG + TEXT_SUFFIX in nodes
    ranking = causal.localise(CHAIN, reference, incident)
    assert not ranking.no_fault and ranking.top is not None and ranking.top.step == "a", (
        ranking.table(5))


def test_a_window_with_the_numbers_only_ranks_against_one_with_both() -> None:
    rng = np.random.default_rng(2)
    # the fault: a starts tagging text; the reference never did (pandas reads it as float)
    reference, incident = tagged(300, rng, -9.0, numbers_only=True), tagged(300, rng, 0.0)
    assert reference[TAG].dtype == float
    ranking = causal.localise(CHAIN, reference, incident)
    assert ranking.top is not None and ranking.top.step == "a", ranking.table(5)


def test_one_requests_number_in_a_mixed_column_is_a_number() -> None:
    rng = np.random.default_rng(3)
    reference, incident = tagged(300, rng, -9.0, numbers_only=True), tagged(50, rng, -1.0)
    row = incident[incident[TAG].map(lambda v: not isinstance(v, str))].iloc[:1]
    assert row[TAG].dtype == object
    assert numbers_apart(reference, row)[1][TAG].dtype == float
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn warned of a category per reference value
        ranking = causal.explain_request(CHAIN, reference, row)
    assert ranking.no_fault, ranking.table(5)
