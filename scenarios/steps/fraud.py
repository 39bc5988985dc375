"""Step code of the card-fraud pipeline (``scenarios/pipelines/fraud_detection.yaml``).

- ``featurize``: a transaction as a model's feature vector (log amounts, the hour on a circle,
  the merchant category's base risk, the amount against the category's typical spend, ...);
- ``velocity_rules``: the hand-written rules a fraud team keeps beside the model;
- ``fraud_model``: a scikit-learn gradient-boosted classifier, trained when the step loads on
  labelled transactions of the same kind (fixed seed), scoring the feature vector;
- ``decide`` (router): model and rules combined into a risk; ``approve`` or ``review``;
- ``review_queue``: the priority of a transaction sent to review (model score x log amount).

:func:`transactions` is the traffic (and the model's training data).
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

Inputs = dict[str, np.ndarray]

# category -> (base fraud risk, typical amount)
CATEGORIES: dict[str, tuple[float, float]] = {
    "grocery": (0.01, 45.0),
    "fuel": (0.02, 60.0),
    "restaurant": (0.02, 35.0),
    "travel": (0.06, 400.0),
    "electronics": (0.08, 250.0),
    "online": (0.07, 80.0),
    "jewelry": (0.10, 600.0),
}
CATEGORY_SHARE = (0.30, 0.15, 0.20, 0.06, 0.09, 0.16, 0.04)
REVIEW_RISK = 0.5
TRAINING_ROWS = 6000
TRAINING_SEED = 20240501


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _features(amount: np.ndarray, hour: np.ndarray, category: np.ndarray, distance: np.ndarray,
              card_age: np.ndarray, foreign: np.ndarray) -> np.ndarray:
    risk, typical = np.array([CATEGORIES.get(_text(c), (0.05, 100.0)) for c in category]).T
    angle = 2 * np.pi * hour / 24.0
    return np.column_stack([
        np.log1p(amount), np.sin(angle), np.cos(angle), risk, np.log1p(amount / typical),
        np.log1p(distance), np.log1p(card_age), foreign.astype(np.float64),
    ])


def featurize(inputs: Inputs) -> dict[str, np.ndarray]:
    return {"features": _features(
        inputs["amount"].reshape(-1).astype(np.float64), inputs["hour"].reshape(-1),
        inputs["merchant_category"].reshape(-1), inputs["distance_km"].reshape(-1),
        inputs["card_age_days"].reshape(-1), inputs["foreign"].reshape(-1))}


def velocity_rules(inputs: Inputs) -> dict[str, np.ndarray]:
    amount = float(inputs["amount"].reshape(-1)[0])
    distance = float(inputs["distance_km"].reshape(-1)[0])
    foreign = bool(inputs["foreign"].reshape(-1)[0])
    score = 0.4 * (amount > 1000) + 0.3 * (distance > 500) + 0.2 * foreign
    return {"rule_score": np.array([score], np.float64)}


def _labels(rng: np.random.Generator, batch: dict[str, np.ndarray]) -> np.ndarray:
    x = _features(*(batch[k].reshape(-1) for k in
                    ("amount", "hour", "merchant_category", "distance_km", "card_age_days", "foreign")))
    hour = batch["hour"].reshape(-1)
    night = (hour < 5) | (hour >= 23)
    logit = (-5.0 + 25.0 * x[:, 3] + 1.2 * x[:, 4] + 0.5 * x[:, 5] - 0.35 * x[:, 6]
             + 1.0 * x[:, 7] + 1.0 * night)
    return rng.random(len(x)) < 1.0 / (1.0 + np.exp(-logit))


class FraudModel:
    """A gradient-boosted classifier; NaN features take the learned missing-value branch.

    Scoring runs on one OpenMP thread, as one replica of a model server would: on a busy
    machine, OpenMP threads spin-waiting between small batches cost more than they save.
    """

    def load(self) -> None:
        threadpool_limits(limits=1, user_api="openmp")
        rng = np.random.default_rng(TRAINING_SEED)
        batch = transactions(rng, TRAINING_ROWS)
        x = _features(*(batch[k].reshape(-1) for k in
                        ("amount", "hour", "merchant_category", "distance_km", "card_age_days",
                         "foreign")))
        self.model = HistGradientBoostingClassifier(max_iter=60, max_depth=4, random_state=0)
        self.model.fit(x, _labels(rng, batch))

    def predict(self, inputs: Inputs) -> dict[str, np.ndarray]:
        features = inputs["features"].reshape(len(inputs["features"]), -1)  # batched: [B, 8]
        return {"fraud_probability": self.model.predict_proba(features)[:, 1]}


def decide(inputs: Inputs) -> dict[str, np.ndarray]:
    probability = float(inputs["fraud_probability"].reshape(-1)[0])
    rules = float(inputs["rule_score"].reshape(-1)[0])
    risk = 1.0 - (1.0 - probability) * (1.0 - 0.5 * rules)
    route = "review" if risk >= REVIEW_RISK else "approve"
    return {route: np.ones(1, np.bool_), "risk": np.array([risk], np.float64)}


def review_queue(inputs: Inputs) -> dict[str, np.ndarray]:
    amount = float(inputs["amount"].reshape(-1)[0])
    probability = float(inputs["fraud_probability"].reshape(-1)[0])
    return {"priority": np.array([probability * np.log1p(amount)], np.float64)}


STEPS = {
    "featurize": featurize,
    "velocity_rules": velocity_rules,
    "fraud_model": FraudModel,
    "decide": decide,
    "review_queue": review_queue,
}


def transactions(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` card transactions: amount, hour, merchant category, distance from home, card
    age and whether the merchant is abroad (each of shape [1] per transaction)."""
    names = np.array(list(CATEGORIES), dtype=object)
    category = names[rng.choice(len(names), n, p=CATEGORY_SHARE)]
    typical = np.array([CATEGORIES[c][1] for c in category])
    return {
        "amount": (typical * rng.lognormal(0.0, 0.8, n)).round(2).reshape(n, 1),
        "hour": rng.integers(0, 24, (n, 1)),
        "merchant_category": category.reshape(n, 1),
        "distance_km": rng.lognormal(2.0, 1.5, (n, 1)),
        "card_age_days": rng.integers(1, 3650, (n, 1)),
        "foreign": (rng.random((n, 1)) < 0.08),
    }
