"""A buggy release of ``classify_claim_complexity`` (the insurance-claims bug scenario).

The published ``broken_app`` datasets show the symptom: the step never calls a claim
complex. This version has a plausible cause — a refactor that passes the rule's arguments
in the wrong order, so the witness count (0-3) is compared with the 5,000 claim-amount
limit and every claim looks too small to be complex.
"""

from __future__ import annotations

import numpy as np

from scenarios.steps.insurance_claims import is_complex

_TRUE = np.ones(1, dtype=np.bool_)


def _scalar(inputs: dict[str, np.ndarray], name: str) -> object:
    return inputs[name].reshape(-1)[0]


def classify_claim_complexity(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    report = _scalar(inputs, "police_report_available")
    complex_claim = is_complex(
        float(_scalar(inputs, "witnesses")),  # the bug: witnesses where the amount belongs
        int(_scalar(inputs, "auto_year")),
        int(_scalar(inputs, "total_claim_amount")),
        report.decode() if isinstance(report, bytes) else str(report),
    )
    return {"is_complex_claim" if complex_claim else "is_simple_claim": _TRUE}
