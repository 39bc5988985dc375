"""Step code of the insurance-claims pipeline (``scenarios/pipelines/insurance_claims.yaml``).

Written from the published behaviour of the reference application:

- ``calculate_claim_value``: claim_value = 1.05 x total_claim_amount;
- ``classify_claim_value`` (router): ``is_high_value_claim`` if claim_value >= 60000, else
  ``is_low_value_claim`` (exactly one, BOOL true);
- ``classify_claim_complexity`` (router): ``is_complex_claim`` if total_claim_amount > 5000
  and (auto_year < 2000 or (no witnesses and no police report)), else ``is_simple_claim``.
  A police report counts as available only when ``police_report_available`` is ``"YES"``;
  ``"NO"`` and ``"?"`` (unknown) both count as no report (see docs/trace-store.md for the
  check against the reference datasets);
- ``calculate_simple_claim_payout``: payout = 0.8 x total_claim_amount;
- ``calculate_complex_claim_payout``: payout = 0.6 x total_claim_amount.

Pipeline inputs: ``total_claim_amount`` (FP64), ``auto_year``, ``witnesses``, ``claim_id``
(INT64) and ``police_report_available`` (BYTES), each of shape [1].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.tensors import Tensor

Inputs = dict[str, np.ndarray]

CLAIM_VALUE_OVERHEAD_RATE = 0.05
HIGH_VALUE_THRESHOLD = 60_000.0
SIMPLE_CLAIM_AMOUNT_LIMIT = 5_000.0
OLD_CAR_BEFORE_YEAR = 2000
SIMPLE_PAYOUT_RATE = 0.8
COMPLEX_PAYOUT_RATE = 0.6

_TRUE = np.ones(1, dtype=np.bool_)


def _scalar(inputs: Inputs, name: str) -> Any:
    return inputs[name].reshape(-1)[0]


def calculate_claim_value(inputs: Inputs) -> dict[str, np.ndarray]:
    amount = inputs["total_claim_amount"].astype(np.float64)
    return {"claim_value": (1.0 + CLAIM_VALUE_OVERHEAD_RATE) * amount}


def classify_claim_value(inputs: Inputs) -> dict[str, np.ndarray]:
    high = float(_scalar(inputs, "claim_value")) >= HIGH_VALUE_THRESHOLD
    return {"is_high_value_claim" if high else "is_low_value_claim": _TRUE}


def is_complex(amount: float, auto_year: int, witnesses: int, police_report: str) -> bool:
    """The published complexity rule; ``police_report`` is "YES", "NO" or "?"."""
    if amount <= SIMPLE_CLAIM_AMOUNT_LIMIT:
        return False
    return auto_year < OLD_CAR_BEFORE_YEAR or (witnesses == 0 and police_report != "YES")


def classify_claim_complexity(inputs: Inputs) -> dict[str, np.ndarray]:
    report = _scalar(inputs, "police_report_available")
    complex_claim = is_complex(
        float(_scalar(inputs, "total_claim_amount")),
        int(_scalar(inputs, "auto_year")),
        int(_scalar(inputs, "witnesses")),
        report.decode() if isinstance(report, bytes) else str(report),
    )
    return {"is_complex_claim" if complex_claim else "is_simple_claim": _TRUE}


def calculate_simple_claim_payout(inputs: Inputs) -> dict[str, np.ndarray]:
    return {"payout": SIMPLE_PAYOUT_RATE * inputs["total_claim_amount"].astype(np.float64)}


def calculate_complex_claim_payout(inputs: Inputs) -> dict[str, np.ndarray]:
    return {"payout": COMPLEX_PAYOUT_RATE * inputs["total_claim_amount"].astype(np.float64)}


def request_tensors(claim: Mapping[str, Any]) -> tuple[Tensor, ...]:
    """The pipeline inputs for one row of ``insurance_claims.csv`` (claim_id: policy_number)."""
    return (
        Tensor("total_claim_amount", "FP64", np.array([claim["total_claim_amount"]], np.float64)),
        Tensor("auto_year", "INT64", np.array([claim["auto_year"]], np.int64)),
        Tensor("witnesses", "INT64", np.array([claim["witnesses"]], np.int64)),
        Tensor("police_report_available", "BYTES",
               np.array([str(claim["police_report_available"])], dtype=object)),
        Tensor("claim_id", "INT64", np.array([claim["policy_number"]], np.int64)),
    )


STEPS = {
    "calculate_claim_value": calculate_claim_value,
    "classify_claim_value": classify_claim_value,
    "classify_claim_complexity": classify_claim_complexity,
    "calculate_simple_claim_payout": calculate_simple_claim_payout,
    "calculate_complex_claim_payout": calculate_complex_claim_payout,
}
