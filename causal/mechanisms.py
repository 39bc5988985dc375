"""Per-node mechanisms learned from reference data: how a node follows from its parents.

Every node of a dataflow graph is observed together with all of its causes, so its mechanism
can be learned directly:

- a *continuous* node gets a regime-wise linear regression: the discrete parents (branch
  indicators, triggers, "absent" flags) select a regime, each regime a linear function of
  the continuous parents, optionally with hinge terms when leave-one-out error says the
  relation bends; plus a classifier for whether the node is absent. Dataflow steps are
  often exact functions of their inputs, so an exact fit leaves residual 0 and any later
  departure shows;
- a *discrete* node gets a decision tree over its parents with smoothed leaf frequencies;
  when an unrestricted tree is a *rule* of the parents (exact on the reference, and trees
  grown on either half of it seldom wrong on the other), a request inside the span of its
  leaf's reference rows breaks the rule with the probability the whole reference gives;
- a root is either of these with no parents: its marginal distribution.

A mechanism gives, for rows of the encoded matrix (all nodes, :mod:`causal.encoding`): the
*channels* to compare between windows (a discrete node's level; a continuous node's
presence and, where present, its value), each as the mid probability-integral transform
(PIT) given the parents plus a context (the leaf of a tree: rows of one context share their
predicted distribution, so comparing windows context by context keeps a shift of the parents
from looking like a change of the node); a per-row surprise; the request's own noise
(abduction) and values from parents and noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.stats import norm
from sklearn.tree import DecisionTreeClassifier

from causal.encoding import Encoding

EXACT_TOLERANCE = 1e-8  # residuals below this fraction of the node's scale count as zero
SMOOTHING = 1.0  # pseudo-count spread evenly over a discrete node's levels
MAX_DEPTH = 8
KNOTS = (0.25, 0.5, 0.75)
MAX_INTERACTIONS = 64
MAX_SURPRISE = 300.0  # -log10 of the smallest tail probability reported
TREE_LIMIT = 1e30  # standardised tree inputs are clipped to this, well inside float32's range
MIN_REGIME_ROWS = 10  # the fewest rows of a regime its own residual spread is estimated from


def _tail_surprise(p: np.ndarray) -> np.ndarray:
    return np.minimum(-np.log10(np.maximum(p, 10.0 ** -MAX_SURPRISE)), MAX_SURPRISE)


def _moments(C: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the mean and standard deviation of the ``observed`` values. They are
    taken of the values divided by the column's largest magnitude, so that no sum or square
    overflows: the trace store keeps numbers as float64, and a square overflows from 1.3e154."""
    size = np.where(observed, np.abs(C), 0.0).max(0, initial=0.0)
    size = np.where(size > 0, size, 1.0)
    S = np.where(observed, C / size, 0.0)
    count = np.maximum(observed.sum(0), 1)
    mean = S.sum(0) / count
    spread = np.sqrt((np.where(observed, S - mean, 0.0) ** 2).sum(0) / count)
    return mean * size, spread * size


def _robust_spread(r: np.ndarray, floor: float) -> float:
    """The residuals' spread: 1.4826 MAD (their standard deviation when most are equal), at
    least ``floor``."""
    mad = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    std = float(_moments(r[:, None], np.ones((len(r), 1), dtype=bool))[1][0])
    return max(mad if mad > 0 else std, floor)


class Design:
    """One node's parents as model inputs, with the parent region seen in training."""

    def __init__(self, enc: Encoding, parents: list[int], X: np.ndarray) -> None:
        discrete = enc.discrete
        self.parents = parents
        self.cont = [p for p in parents if not discrete[p]]
        self.disc = [p for p in parents if discrete[p]]
        self.tree_cont = [i for i, p in enumerate(parents) if not discrete[p]]
        C = X[:, self.cont]
        observed = ~np.isnan(C)
        self.low = np.where(observed, C, np.inf).min(0, initial=np.inf)
        self.high = np.where(observed, C, -np.inf).max(0, initial=-np.inf)
        self.mean, spread = _moments(C, observed)
        self.scale = np.where(spread > 0, spread, 1.0)
        self.absent_seen = (~observed).any(0)
        self.flagged = [i for i, seen in enumerate(self.absent_seen) if seen]
        self.radix = [enc.n_levels(p) + 1 for p in self.disc] + [2] * len(self.flagged)
        self.keys_ok = float(np.prod(np.array(self.radix, dtype=float))) < 2.0 ** 62
        regimes = self.regimes(X)
        keys = self.regime_keys(X)
        self.seen = np.unique(keys) if keys is not None else np.empty(0, np.int64)
        self.indicators = [(i, int(v)) for i in range(regimes.shape[1])
                           for v in np.unique(regimes[:, i])]
        z = self._standardised(X)
        self.knots = [np.unique(np.nanquantile(z[:, i], KNOTS)) if observed[:, i].any()
                      else np.empty(0) for i in range(len(self.cont))]

    def regimes(self, X: np.ndarray) -> np.ndarray:
        """Discrete parent codes and the "absent" flags of continuous parents, per row."""
        flags = np.isnan(X[:, [self.cont[i] for i in self.flagged]]).astype(float)
        return np.column_stack([X[:, self.disc], flags]) if self.radix else np.empty((len(X), 0))

    def regime_keys(self, X: np.ndarray) -> np.ndarray | None:
        """One integer per row naming its regime, when the parents have any and the key
        fits in 64 bits."""
        if not self.radix or not self.keys_ok:
            return None
        return self._keys(self.regimes(X))

    def _keys(self, regimes: np.ndarray) -> np.ndarray:
        keys = np.zeros(len(regimes), dtype=np.int64)
        for i, base in enumerate(self.radix):
            keys = keys * base + regimes[:, i].astype(np.int64)
        return keys

    def _standardised(self, X: np.ndarray) -> np.ndarray:
        return (X[:, self.cont] - self.mean) / self.scale

    def in_support(self, X: np.ndarray) -> np.ndarray:
        """Rows whose parents lie where training saw them: the same discrete regime, each
        continuous parent in its training range (or absent, if training saw it absent).
        Outside, a learned mechanism extrapolates, and a departure would be the parents'."""
        C = X[:, self.cont]
        absent = np.isnan(C)
        with np.errstate(invalid="ignore"):
            inside = (self.low - 1e-9 * np.abs(self.low) <= C) & (
                self.high + 1e-9 * np.abs(self.high) >= C)
        ok = np.all(inside | (absent & self.absent_seen), axis=1)
        keys = self.regime_keys(X)
        return ok if keys is None else ok & np.isin(keys, self.seen)

    def linear(self, X: np.ndarray, hinge: bool) -> np.ndarray:
        """Intercept, regime indicators, continuous parents (absent = 0), their products with
        the indicators, and with ``hinge`` the hinge terms max(0, x - knot)."""
        z = np.nan_to_num(self._standardised(X))
        regimes = self.regimes(X)
        ind = (np.column_stack([regimes[:, i] == v for i, v in self.indicators]).astype(float)
               if self.indicators else np.empty((len(X), 0)))
        cols = [np.ones((len(X), 1)), ind, z]
        if ind.shape[1] * z.shape[1] <= MAX_INTERACTIONS:
            cols.append((ind[:, :, None] * z[:, None, :]).reshape(len(X), -1))
        if hinge:
            cols += [np.maximum(z[:, [i]] - k[None, :], 0.0) for i, k in enumerate(self.knots)]
        return np.hstack(cols)

    def tree_input(self, X: np.ndarray) -> np.ndarray:
        """The parents as a tree's inputs: continuous ones standardised, discrete codes as
        they are. sklearn's trees work in float32, which holds no value beyond 3.4e38 and
        merges values that differ only beyond its 7 digits; standardised values (a tree's
        splits do not change under this affine map) fit, and keep their differences."""
        inputs = X[:, self.parents]
        if self.tree_cont:
            inputs[:, self.tree_cont] = np.clip(self._standardised(X), -TREE_LIMIT, TREE_LIMIT)
        return inputs


MIN_RULE_ROWS = 40
RULE_HELD_OUT_ERRORS = 0.02  # a rule's trees grown on half the rows may miss this share


def _rule_tree(inputs: np.ndarray, codes: np.ndarray) -> DecisionTreeClassifier | None:
    """An unrestricted tree, when the target is a rule of its parents: it reproduces every
    training row, and trees grown on either half of the rows miss few of the other half
    (only near the rule's thresholds, which a finite sample places between its points);
    a noisy target fails the second test. Else None."""
    if len(codes) < MIN_RULE_ROWS:
        return None
    tree = DecisionTreeClassifier(max_depth=MAX_DEPTH, random_state=0).fit(inputs, codes)
    if (tree.predict(inputs) != codes).any():
        return None
    order = np.random.default_rng(0).permutation(len(codes))
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    missed = 0
    for fit, check in (halves, halves[::-1]):
        half = DecisionTreeClassifier(max_depth=MAX_DEPTH, random_state=0)
        missed += int((half.fit(inputs[fit], codes[fit]).predict(inputs[check])
                       != codes[check]).sum())
    return tree if missed <= RULE_HELD_OUT_ERRORS * len(codes) else None


def _leaf_boxes(inputs: np.ndarray, leaves: np.ndarray, n_nodes: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per tree node, the smallest and largest value of each input over its training rows
    (nodes without rows: an empty box)."""
    low = np.full((n_nodes, inputs.shape[1]), np.inf)
    high = np.full((n_nodes, inputs.shape[1]), -np.inf)
    np.minimum.at(low, leaves, inputs)
    np.maximum.at(high, leaves, inputs)
    return low, high


class Classifier:
    """P(level | parents) of a discrete target, with smoothed counts per context.

    Contexts come from the discrete parents alone (triggers, branch indicators, "absent"
    flags) when those decide the target on the training rows, else from a decision tree
    over all parents. Dataflow routing is decided by what arrived, not by the values that
    happen to correlate with it: preferring the discrete causes keeps a router's fault from
    showing up downstream through a proxy.
    """

    def __init__(self, design: Design, X: np.ndarray, y: np.ndarray, n_levels: int) -> None:
        self.design = design
        self.n_levels = n_levels
        codes = y.astype(np.int64)
        self.tree: DecisionTreeClassifier | None = None
        self.regimes: np.ndarray | None = None
        self.box: tuple[np.ndarray, np.ndarray] | None = None  # a rule's leaves' spans
        leaves = np.zeros(len(codes), dtype=np.int64)
        if design.parents and len(np.unique(codes)) > 1:
            keys = design.regime_keys(X)
            if keys is not None:
                regimes, inverse = np.unique(keys, return_inverse=True)
                pairs = np.unique(np.column_stack([inverse, codes]), axis=0)
                if len(pairs) == len(regimes):  # every regime sees a single level
                    self.regimes, leaves = regimes, inverse
            if self.regimes is None:
                inputs = design.tree_input(X)
                self.tree = _rule_tree(inputs, codes)
                if self.tree is not None:
                    leaves = self._tree_leaves(inputs)
                    self.box = _leaf_boxes(inputs, leaves, self.tree.tree_.node_count)
                else:
                    self.tree = DecisionTreeClassifier(
                        max_depth=MAX_DEPTH, min_samples_leaf=max(3, len(codes) // 50),
                        random_state=0)
                    self.tree.fit(inputs, codes)
                    leaves = self._tree_leaves(inputs)
        n_leaves = (self.tree.tree_.node_count if self.tree is not None
                    else len(self.regimes) + 1 if self.regimes is not None else 1)
        counts = np.zeros((n_leaves, n_levels))
        np.add.at(counts, (leaves, codes), 1.0)
        if self.regimes is not None:
            counts[-1] = counts.sum(0)  # an unseen regime gets the pooled frequencies
        self.table = (counts + SMOOTHING / n_levels) / (counts.sum(1, keepdims=True) + SMOOTHING)
        self.rule_table = self.table  # where the tree is no rule, the leaves' own
        if self.box is not None:
            # Inside the box its training rows span, a leaf of a rule is as sure as the
            # rule: a break costs what all the rows say (the rule of succession), not what
            # the leaf's few say.
            other = SMOOTHING / n_levels / (len(codes) + SMOOTHING)
            self.rule_table = np.full((n_leaves, n_levels), other)
            self.rule_table[np.arange(n_leaves), counts.argmax(1)] = 1.0 - other * (n_levels - 1)

    @property
    def rule(self) -> bool:
        """Whether the tree is a rule of the parents (:func:`_rule_tree`)."""
        return self.box is not None

    @property
    def model(self) -> str:
        return ("rule" if self.rule else "tree" if self.tree is not None
                else "regimes" if self.regimes is not None else "frequencies")

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """The context of each row: rows of one context share their probabilities."""
        if self.regimes is not None:
            keys = self.design.regime_keys(X)
            assert keys is not None
            at = np.minimum(np.searchsorted(self.regimes, keys), len(self.regimes) - 1)
            return np.where(self.regimes[at] == keys, at, len(self.regimes))
        if self.tree is None:
            return np.zeros(len(X), dtype=np.int64)
        return self._tree_leaves(self.design.tree_input(X))

    def _tree_leaves(self, inputs: np.ndarray) -> np.ndarray:
        """The fitted tree's leaf of each row of its inputs: the tree's own routine, without
        the input validation of every call."""
        assert self.tree is not None
        rows = np.ascontiguousarray(inputs, dtype=np.float32)
        return self.tree.tree_.apply(rows).astype(np.int64)

    def proba(self, X: np.ndarray) -> np.ndarray:
        if self.box is None:
            return self.table[self.leaves(X)]
        inputs = self.design.tree_input(X)  # a rule's tree: its inputs serve twice
        leaves = self._tree_leaves(inputs)
        P = self.table[leaves]
        low, high = self.box
        inside = ((inputs >= low[leaves]) & (inputs <= high[leaves])).all(1)
        P[inside] = self.rule_table[leaves[inside]]
        return P

    @staticmethod
    def _below(P: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(len(codes))
        own = P[rows, codes]
        return np.cumsum(P, axis=1)[rows, codes] - own, own

    def tail(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """P(a level no more likely than the observed one): the observed level's p-value."""
        P = self.proba(X)
        own = P[np.arange(len(y)), y.astype(np.int64)]
        return np.where(own[:, None] * (1 + 1e-12) >= P, P, 0.0).sum(1)

    def pit(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Mid PIT: the middle of the observed level's share of [0, 1]."""
        below, own = self._below(self.proba(X), y.astype(np.int64))
        return below + 0.5 * own

    def abduct(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Randomised PIT: a uniform draw in the observed level's share, which
        :meth:`generate` maps back to the same level while the parents stay the same."""
        below, own = self._below(self.proba(X), y.astype(np.int64))
        return below + rng.random(len(y)) * own

    def generate(self, X: np.ndarray, u: np.ndarray) -> np.ndarray:
        cum = np.cumsum(self.proba(X), axis=1)
        return np.minimum((cum <= u[:, None]).sum(1), self.n_levels - 1).astype(float)


@dataclass(frozen=True)
class Channel:
    """One aspect of a node to compare between windows, per row: its mid PIT, its context
    (rows of one context share their predicted distribution) and whether the row counts."""

    name: str
    pit: np.ndarray
    context: np.ndarray
    valid: np.ndarray


class Mechanism(Protocol):
    node: int
    design: Design
    model: str

    def channels(self, X: np.ndarray) -> list[Channel]: ...

    def surprise(self, X: np.ndarray) -> np.ndarray: ...

    def abduct(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...

    def generate(self, X: np.ndarray, noise: np.ndarray, rng: np.random.Generator
                 ) -> np.ndarray: ...


class DiscreteMechanism:
    """A discrete node; its noise is a randomised PIT in column 0 of the noise array."""

    def __init__(self, enc: Encoding, node: int, parents: list[int], X: np.ndarray) -> None:
        self.node = node
        self.design = Design(enc, parents, X)
        self.classifier = Classifier(self.design, X, X[:, node], enc.n_levels(node))
        self.model = self.classifier.model

    def channels(self, X: np.ndarray) -> list[Channel]:
        return [Channel("level", self.classifier.pit(X, X[:, self.node]),
                        self.classifier.leaves(X), np.ones(len(X), dtype=bool))]

    def surprise(self, X: np.ndarray) -> np.ndarray:
        return _tail_surprise(self.classifier.tail(X, X[:, self.node]))

    def abduct(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = self.classifier.abduct(X, X[:, self.node], rng)
        return np.column_stack([u, np.full(len(X), np.nan)])

    def generate(self, X: np.ndarray, noise: np.ndarray, rng: np.random.Generator
                 ) -> np.ndarray:
        return self.classifier.generate(X, noise[:, 0])


def _lstsq(D: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares coefficients and the leave-one-out mean squared error (PRESS)."""
    U, s, Vt = np.linalg.svd(D, full_matrices=False)
    k = int(np.sum(s > s[0] * 1e-10)) if len(s) and s[0] > 0 else 0
    if k == 0:
        return np.zeros(D.shape[1]), float(np.mean(y ** 2))
    Uk = U[:, :k]
    coef = Vt[:k].T @ ((Uk.T @ y) / s[:k])
    leverage = np.einsum("ij,ij->i", Uk, Uk)
    residual = y - D @ coef
    with np.errstate(divide="ignore", invalid="ignore"):
        loo = np.where(leverage < 1 - 1e-8, residual / (1 - leverage), np.inf)
    return coef, float(np.mean(loo ** 2))


class ContinuousMechanism:
    """A continuous node: value = regression(parents) + residual, and whether it is absent.

    Its noise is (randomised PIT of the absent/present state, residual). A request's
    surprise reads its residual against the spread of its own regime (the discrete parents
    and "absent" flags, :meth:`Design.regime_keys`): one regime can be far noisier than the
    others (a rare kind of request, a parent missing), and a spread pooled over all of them
    is the usual regime's, which makes every request of the noisy one look next to
    impossible. A regime of fewer than ``MIN_REGIME_ROWS`` rows, too few to estimate its
    own, is read against the node's spread of values (what the parents leave unexplained
    at most), unless the node is exact wherever it could be checked: a step that is code
    in its usual regimes is code in the rare one too.
    """

    def __init__(self, enc: Encoding, node: int, parents: list[int], X: np.ndarray) -> None:
        self.node = node
        self.design = Design(enc, parents, X)
        x = X[:, node]
        present = ~np.isnan(x)
        self.presence = Classifier(self.design, X, present.astype(float), 2)
        self.coef: np.ndarray | None = None
        self.hinge = False
        self.model = "none"
        self.tolerance = 0.0
        self.residuals = np.zeros(1)
        self.centre, self.spread = 0.0, 1.0  # pooled; for rows of a regime not in ``regimes``
        self.regimes = np.empty(0, dtype=np.int64)  # per regime key: its centre and spread
        self.regime_centre, self.regime_spread = np.empty(0), np.empty(0)
        if present.any():
            xp = x[present]
            # fitted to the values divided by their largest magnitude, so that the squared
            # leave-one-out errors cannot overflow
            size = max(float(np.max(np.abs(xp))), 1e-300)
            self.tolerance = EXACT_TOLERANCE * size
            coef, press = _lstsq(self.design.linear(X, hinge=False)[present], xp / size)
            self.coef, self.model = coef * size, "linear"
            if press > EXACT_TOLERANCE ** 2 and self.design.cont:
                coef_h, press_h = _lstsq(self.design.linear(X, hinge=True)[present], xp / size)
                if press_h < 0.8 * press:
                    self.coef, self.hinge, self.model = coef_h * size, True, "hinge"
            residuals = self._residual(X)[present]
            self.residuals = np.sort(residuals)
            self.centre = float(np.median(residuals))
            self.spread = _robust_spread(residuals, self.tolerance)
            keys = self.design.regime_keys(X)
            if keys is not None:
                self._regime_noise(keys[present], residuals, xp)

    def _regime_noise(self, keys: np.ndarray, residuals: np.ndarray, values: np.ndarray
                      ) -> None:
        """Each regime's residual centre and spread (see the class)."""
        self.regimes, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        large = counts[inverse] >= MIN_REGIME_ROWS
        checked = residuals[large] if large.any() else residuals
        exact = not checked.any()
        value_spread = float(_moments(values[:, None], np.ones((len(values), 1), dtype=bool)
                                      )[1][0])
        rare = self.spread if exact else max(self.spread, value_spread)
        self.regime_centre = np.full(len(self.regimes), self.centre)
        self.regime_spread = np.full(len(self.regimes), rare)
        for k in np.flatnonzero(counts >= MIN_REGIME_ROWS):
            own = residuals[inverse == k]
            self.regime_centre[k] = float(np.median(own))
            self.regime_spread[k] = _robust_spread(own, self.tolerance)

    def _noise_scale(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the residual centre and spread of its regime (pooled when unseen)."""
        centre, spread = np.full(len(X), self.centre), np.full(len(X), self.spread)
        keys = self.design.regime_keys(X) if len(self.regimes) else None
        if keys is not None:
            at = np.minimum(np.searchsorted(self.regimes, keys), len(self.regimes) - 1)
            seen = self.regimes[at] == keys
            centre[seen] = self.regime_centre[at[seen]]
            spread[seen] = self.regime_spread[at[seen]]
        return centre, spread

    def _predict(self, X: np.ndarray) -> np.ndarray:
        assert self.coef is not None
        return self.design.linear(X, self.hinge) @ self.coef

    def _residual(self, X: np.ndarray) -> np.ndarray:
        """Residual of present rows (NaN for absent ones); tiny residuals are exactly 0."""
        if self.coef is None:
            return np.full(len(X), np.nan)
        r = X[:, self.node] - self._predict(X)
        r[np.abs(r) <= self.tolerance] = 0.0
        return r

    def channels(self, X: np.ndarray) -> list[Channel]:
        """Whether the node is present (given its parents), and the residual's mid PIT among
        training residuals on present rows; an exact fit puts every such row at 0.5."""
        state = ~np.isnan(X[:, self.node])
        presence = Channel("presence", self.presence.pit(X, state.astype(float)),
                           self.presence.leaves(X), np.ones(len(X), dtype=bool))
        r = np.nan_to_num(self._residual(X))
        n = len(self.residuals)
        within = (np.searchsorted(self.residuals, r, "left")
                  + np.searchsorted(self.residuals, r, "right")) / (2.0 * n)
        if self.coef is None:
            within = np.ones(len(X))
        return [presence, Channel("value", within, np.zeros(len(X), dtype=np.int64), state)]

    def surprise(self, X: np.ndarray) -> np.ndarray:
        """-log10 p of the row: the absent/present state's tail, or the residual's two-sided
        normal tail against the robust residual spread of its regime, whichever is more
        surprising."""
        state = ~np.isnan(X[:, self.node])
        state_surprise = _tail_surprise(self.presence.tail(X, state.astype(float)))
        r = self._residual(X)
        centre, spread = self._noise_scale(X)
        with np.errstate(over="ignore"):  # a residual beyond float64's range: infinitely far
            z = np.abs(np.nan_to_num(r) - centre) / spread
        value_surprise = np.where(np.isnan(r), 0.0,
                                  np.minimum(-(norm.logsf(z) + np.log(2)) / np.log(10),
                                             MAX_SURPRISE))
        return np.maximum(state_surprise, np.maximum(value_surprise, 0.0))

    def abduct(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        state = ~np.isnan(X[:, self.node])
        u = self.presence.abduct(X, state.astype(float), rng)
        return np.column_stack([u, self._residual(X)])

    def generate(self, X: np.ndarray, noise: np.ndarray, rng: np.random.Generator
                 ) -> np.ndarray:
        present = self.presence.generate(X, noise[:, 0]) == 1
        if self.coef is None:
            return np.full(len(X), np.nan)
        r = noise[:, 1]
        missing = np.isnan(r)
        r = np.where(missing, rng.choice(self.residuals, len(X)), r)
        return np.where(present, self._predict(X) + r, np.nan)


def fit_mechanism(enc: Encoding, node: int, parents: list[int], X: np.ndarray) -> Mechanism:
    """The mechanism of ``node`` learned on the rows of ``X``."""
    if enc.discrete[node]:
        return DiscreteMechanism(enc, node, parents, X)
    return ContinuousMechanism(enc, node, parents, X)
