"""Step code of the join-heavy recommendation pipeline (``scenarios/pipelines/feature_join.yaml``).

Five feature steps fan out from the request, four joins bring them back together:

- ``user_profile`` / ``item_embedding``: hashed 8-d embeddings of the user and the item;
- ``user_history``: the user's affinity to the item (cosine of the embeddings, sharpened);
- ``item_stats``: the item's popularity and its price as a z-score within its price band;
- ``context``: how much the hour and the device favour buying;
- ``user_join`` / ``item_join`` (inner joins): the user's and the item's feature vectors;
- ``match`` (inner join of both and the context): a bilinear match score;
- ``rerank`` (outer join with popularity): the final ranking score.

:func:`requests` is the traffic: a user, an item, the hour, the price and the device.
"""

from __future__ import annotations

import numpy as np

DIM = 8
DEVICES = {"mobile": 0.2, "desktop": 0.5, "tablet": 0.3}
_MATCH = np.random.default_rng(7).normal(0, 1 / DIM, (DIM, DIM)) + np.eye(DIM)

Inputs = dict[str, np.ndarray]


def _scalar(inputs: Inputs, name: str) -> float:
    return float(inputs[name].reshape(-1)[0])


def _embedding(kind: int, key: int) -> np.ndarray:
    vector = np.random.default_rng([kind, key]).normal(0, 1, DIM)
    return vector / np.linalg.norm(vector)


def user_profile(inputs: Inputs) -> dict[str, np.ndarray]:
    return {"user_vec": _embedding(1, int(_scalar(inputs, "user_id")))[None].astype(np.float32)}


def item_embedding(inputs: Inputs) -> dict[str, np.ndarray]:
    return {"item_vec": _embedding(2, int(_scalar(inputs, "item_id")))[None].astype(np.float32)}


def user_history(inputs: Inputs) -> dict[str, np.ndarray]:
    user = _embedding(1, int(_scalar(inputs, "user_id")))
    item = _embedding(2, int(_scalar(inputs, "item_id")))
    return {"affinity": np.array([np.tanh(3.0 * user @ item)])}


def item_stats(inputs: Inputs) -> dict[str, np.ndarray]:
    item = int(_scalar(inputs, "item_id"))
    price = _scalar(inputs, "price")
    band = 10.0 ** np.floor(np.log10(max(price, 1.0)))
    popularity = 1.0 / (1.0 + np.log1p(item % 97))
    return {"popularity": np.array([popularity]), "price_z": np.array([(price - 5 * band) / (3 * band)])}


def context(inputs: Inputs) -> dict[str, np.ndarray]:
    hour = _scalar(inputs, "hour")
    device = inputs["device"].reshape(-1)[0]
    device = device.decode() if isinstance(device, bytes) else str(device)
    evening = np.exp(-((hour - 20.0) ** 2) / 18.0)
    return {"context_score": np.array([0.5 * evening + DEVICES.get(device, 0.0)])}


def user_join(inputs: Inputs) -> dict[str, np.ndarray]:
    vec = inputs["user_vec"].reshape(-1).astype(np.float64)
    return {"user_features": np.concatenate([vec, inputs["affinity"].reshape(-1)])[None]}


def item_join(inputs: Inputs) -> dict[str, np.ndarray]:
    vec = inputs["item_vec"].reshape(-1).astype(np.float64)
    extra = [inputs["popularity"].reshape(-1), inputs["price_z"].reshape(-1)]
    return {"item_features": np.concatenate([vec, *extra])[None]}


def match(inputs: Inputs) -> dict[str, np.ndarray]:
    user = inputs["user_features"].reshape(-1)
    item = inputs["item_features"].reshape(-1)
    score = user[:DIM] @ _MATCH @ item[:DIM] + user[DIM] - 0.3 * item[DIM + 1]
    return {"match_score": np.array([score + _scalar(inputs, "context_score")])}


def rerank(inputs: Inputs) -> dict[str, np.ndarray]:
    score = _scalar(inputs, "match_score")
    popularity = _scalar(inputs, "popularity") if "popularity" in inputs else 0.0
    return {"rank_score": np.array([1.0 / (1.0 + np.exp(-(score + popularity)))])}


STEPS = {f.__name__: f for f in (user_profile, item_embedding, user_history, item_stats, context,
                                 user_join, item_join, match, rerank)}


def requests(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    devices = np.array(list(DEVICES), dtype=object)
    return {
        "user_id": rng.integers(1, 5000, (n, 1)),
        "item_id": rng.integers(1, 20000, (n, 1)),
        "hour": rng.integers(0, 24, (n, 1)),
        "price": rng.lognormal(3.5, 1.0, (n, 1)).round(2),
        "device": devices[rng.choice(len(devices), (n, 1), p=[0.6, 0.3, 0.1])],
    }
