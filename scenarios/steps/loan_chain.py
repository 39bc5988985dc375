"""Step code of the chained loan pipelines (``scenarios/pipelines/loan_chain.yaml``).

``loan_features`` turns an application into model features and hands its outputs to
``loan_scoring`` (a pipeline whose input is the other pipeline's output):

- ``clean``: clipped, log-scaled income, debt and requested amount; age and years employed;
- ``ratios``: debt-to-income, loan-to-income and the monthly repayment burden;
- ``credit_model``: a logistic score of default risk over the features;
- ``credit_limit``: the limit offered, from income and the risk;
- ``explain``: each feature's contribution to the score (for the adverse-action notice).

:func:`applications` is the traffic.
"""

from __future__ import annotations

import numpy as np

RATE_MONTHLY = 0.07 / 12
TERM_MONTHS = 60
FEATURES = ("log_income", "log_debt", "log_requested", "age", "years_employed",
            "debt_to_income", "loan_to_income", "burden")
COEFFICIENTS = np.array([-0.6, 0.25, 0.2, -0.02, -0.08, 1.8, 0.9, 2.5])
INTERCEPT = 2.0

Inputs = dict[str, np.ndarray]


def _scalar(inputs: Inputs, name: str) -> float:
    return float(inputs[name].reshape(-1)[0])


def clean(inputs: Inputs) -> dict[str, np.ndarray]:
    income = np.clip(_scalar(inputs, "income"), 5_000, 1_000_000)
    debt = np.clip(_scalar(inputs, "debt"), 0, 2_000_000)
    requested = np.clip(_scalar(inputs, "requested"), 500, 500_000)
    return {"income": np.array([income]), "debt": np.array([debt]),
            "requested": np.array([requested]),
            "log_features": np.log1p([[income, debt, requested]]),
            "age": np.array([np.clip(_scalar(inputs, "age"), 18, 100)]),
            "years_employed": np.array([max(_scalar(inputs, "years_employed"), 0.0)])}


def ratios(inputs: Inputs) -> dict[str, np.ndarray]:
    income, debt = _scalar(inputs, "income"), _scalar(inputs, "debt")
    requested = _scalar(inputs, "requested")
    payment = requested * RATE_MONTHLY / (1 - (1 + RATE_MONTHLY) ** -TERM_MONTHS)
    return {"debt_to_income": np.array([debt / income]),
            "loan_to_income": np.array([requested / income]),
            "burden": np.array([12 * payment / income])}


def _features(inputs: Inputs) -> np.ndarray:
    return np.concatenate([inputs["log_features"].reshape(-1),
                           [_scalar(inputs, k) for k in FEATURES[3:]]])


def credit_model(inputs: Inputs) -> dict[str, np.ndarray]:
    logit = INTERCEPT + COEFFICIENTS @ _features(inputs)
    return {"default_risk": np.array([1.0 / (1.0 + np.exp(-logit))])}


def credit_limit(inputs: Inputs) -> dict[str, np.ndarray]:
    income, risk = _scalar(inputs, "income"), _scalar(inputs, "default_risk")
    return {"limit": np.array([round(0.4 * income * (1.0 - risk) ** 2, -2)])}


def explain(inputs: Inputs) -> dict[str, np.ndarray]:
    contributions = COEFFICIENTS * _features(inputs)
    return {"contributions": contributions[None],
            "top_reason": np.array([FEATURES[int(np.argmax(contributions))]], dtype=object)}


STEPS = {f.__name__: f for f in (clean, ratios, credit_model, credit_limit, explain)}


def applications(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    income = rng.lognormal(10.9, 0.5, (n, 1)).round(-2)
    return {
        "income": income,
        "debt": (income * rng.gamma(2.0, 0.2, (n, 1))).round(-2),
        "requested": (income * rng.uniform(0.05, 0.6, (n, 1))).round(-2),
        "age": rng.integers(21, 75, (n, 1)),
        "years_employed": rng.gamma(2.0, 3.0, (n, 1)).round(1),
    }
