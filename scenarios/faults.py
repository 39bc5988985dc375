"""Fault injection: wrap a step's code (never edit it), or alter the traffic.

A fault is inactive until the runner switches it on at its start; then, per call:

- ``latency`` sleeps before the step runs (the wrapped step becomes async so the engine keeps
  serving other requests while it waits, as another server would);
- ``exception`` raises :class:`InjectedError` with probability ``rate``;
- ``replace`` runs other code instead of the step's (a software bug);
- ``shift``, ``noise``, ``stuck``, ``nan`` and ``drop`` change the step's output tensors (or,
  on the traffic, a request's input tensors): scale/offset/categorical swap, Gaussian noise,
  a frozen value, NaN (or, for non-float tensors, a missing tensor), removed tensors.

Random choices come from one seeded generator per fault, so a run is reproducible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.steps import RunnableStep, import_module, make_runnable
from engine.tensors import Tensor
from scenarios.spec import (
    DropParams,
    ExceptionParams,
    Fault,
    LatencyParams,
    NanParams,
    NoiseParams,
    ReplaceParams,
    ScenarioError,
    ShiftParams,
    StuckParams,
)

Arrays = dict[str, np.ndarray]
OUTPUT_FAULTS = ("shift", "noise", "stuck", "nan", "drop")


class InjectedError(RuntimeError):
    """The exception an ``exception`` fault raises inside a step."""


@dataclass
class Injection:
    """One fault of a run: its switch, its random generator and (stuck) what it froze."""

    fault: Fault
    rng: np.random.Generator
    active: bool = False
    frozen: Arrays = field(default_factory=dict)
    index: int = 0  # the fault's position in the scenario (faults.<index>)
    problem: str | None = None  # why the run must stop (the runner checks it)

    @classmethod
    def create(cls, fault: Fault, seed: int, index: int) -> Injection:
        return cls(fault, np.random.default_rng([seed, index]), index=index)

    def hits(self, rate: float) -> bool:
        return rate >= 1.0 or bool(self.rng.random() < rate)


def load_code(spec: str, resolve_module: Callable[[str], str] = lambda m: m) -> Any:
    """``module:attr`` -> the object (``module`` dotted, or a .py path via ``resolve_module``).
    A scenario names it, so a bad name is a :class:`ScenarioError` (found before the run)."""
    module, sep, attr = spec.rpartition(":")
    if not sep or not module or not attr:
        raise ScenarioError(f"code must be 'module:attr', got {spec!r}")
    mod = import_module(resolve_module(module))
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise ScenarioError(f"code {spec!r}: {module} has no {attr!r}") from None


# -- tensor transforms --------------------------------------------------------------------
def _selected(names: list[str] | None, arrays: Arrays) -> list[str]:
    return [n for n in arrays if names is None or n in names]


def _numeric(a: np.ndarray) -> bool:
    return a.dtype.kind in "iuf"


def _cast(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``values`` in ``like``'s dtype (integers rounded)."""
    if like.dtype.kind in "iu":
        info = np.iinfo(like.dtype)
        rounded = np.rint(values)
        # compared as floats: float(int64 max) is 2**63, which the cast would wrap round
        high, low = rounded >= float(info.max), rounded <= float(info.min)
        out = np.where(high | low, 0, rounded).astype(like.dtype)
        out[high], out[low] = info.max, info.min
        return out
    return values.astype(like.dtype)


def _number(text: str) -> float | None:
    """``text`` as a finite number, else None (it names a category)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _swap(a: np.ndarray, swap: Mapping[str, str]) -> np.ndarray:
    """``swap`` applied where it can apply: every pair to a string tensor (values compared as
    text), to an integer or float tensor only the pairs whose old and new values both read as
    numbers; boolean tensors, and numeric tensors without such pairs, are left as they are."""
    if a.dtype.kind in "OUS":
        out = np.array([swap.get(v.decode() if isinstance(v, bytes) else str(v), v) for v in a.flat],
                       dtype=object)
        return out.reshape(a.shape)
    if not _numeric(a):
        return a
    pairs = [(old, new) for o, n in swap.items()
             if (old := _number(o)) is not None and (new := _number(n)) is not None]
    if not pairs:
        return a
    values = a.astype(np.float64)
    for old, new in pairs:
        values[a == old] = new
    return _cast(values, a)


def _shift(p: ShiftParams, arrays: Arrays) -> Arrays:
    out = dict(arrays)
    for name in _selected(p.tensors, arrays):
        a = arrays[name]
        if p.swap and a.size:
            a = _swap(a, p.swap)
        if _numeric(a) and (p.scale != 1.0 or p.offset != 0.0):
            a = _cast(a.astype(np.float64) * p.scale + p.offset, a)
        out[name] = a
    return out


def _noise(p: NoiseParams, arrays: Arrays, rng: np.random.Generator) -> Arrays:
    out = dict(arrays)
    for name in _selected(p.tensors, arrays):
        a = arrays[name]
        if _numeric(a):
            out[name] = _cast(a.astype(np.float64) + rng.normal(0.0, p.std, a.shape), a)
    return out


def _stuck(p: StuckParams, arrays: Arrays, frozen: Arrays) -> Arrays:
    out = dict(arrays)
    for name in _selected(p.tensors, arrays):
        a = arrays[name]
        if p.value is not None and _numeric(a):
            out[name] = _cast(np.full(a.shape, float(p.value)), a)
        elif p.value is None:
            out[name] = frozen.setdefault(name, a.copy()).copy()
    return out


def _nan(p: NanParams, arrays: Arrays, rng: np.random.Generator) -> Arrays:
    out = dict(arrays)
    for name in _selected(p.tensors, arrays):
        a = arrays[name]
        if a.dtype.kind != "f":
            del out[name]  # an integer, boolean or string tensor cannot hold NaN: it goes missing
            continue
        hit = rng.random(a.shape) < p.elements if p.elements < 1.0 else np.ones(a.shape, bool)
        b = a.copy()
        b[hit] = np.nan
        out[name] = b
    return out


def _drop(p: DropParams, arrays: Arrays) -> Arrays:
    return {k: v for k, v in arrays.items() if p.tensors is not None and k not in p.tensors}


def transform(injection: Injection, arrays: Arrays) -> Arrays:
    """The tensors as an active data fault leaves them (a call the fault spares: unchanged)."""
    p = injection.fault.params
    rng = injection.rng
    if isinstance(p, ShiftParams):
        return _shift(p, arrays)
    if isinstance(p, NoiseParams):
        return _noise(p, arrays, rng)
    if isinstance(p, StuckParams):
        return _stuck(p, arrays, injection.frozen)
    if isinstance(p, NanParams):
        return _nan(p, arrays, rng) if injection.hits(p.rate) else arrays
    if isinstance(p, DropParams):
        return _drop(p, arrays) if injection.hits(p.rate) else arrays
    return arrays


def as_arrays(result: Mapping[str, Any]) -> Arrays:
    return {k: v.data if isinstance(v, Tensor) else np.asarray(v) for k, v in result.items()}


# -- step wrapping ------------------------------------------------------------------------
class _FaultyStep:
    """The decisions a wrapped step takes per call, shared by its sync and async forms."""

    def __init__(self, original: RunnableStep, injections: list[Injection],
                 replacements: dict[int, RunnableStep]) -> None:
        self.original = original
        self.injections = injections
        self.replacements = replacements
        self.seen: set[str] = set()

    def _active(self, kind: str) -> list[Injection]:
        return [i for i in self.injections if i.active and i.fault.type == kind]

    def delay_s(self) -> float:
        total = 0.0
        for i in self._active("latency"):
            p: LatencyParams = i.fault.params  # type: ignore[assignment]
            total += (p.ms + p.jitter_ms * i.rng.random()) / 1000.0
        return total

    def maybe_raise(self) -> None:
        for i in self._active("exception"):
            p: ExceptionParams = i.fault.params  # type: ignore[assignment]
            if i.hits(p.rate):
                raise InjectedError(p.message)

    def code(self) -> RunnableStep:
        for i in self._active("replace"):
            return self.replacements[id(i)]
        return self.original

    def after(self, result: Any) -> Any:
        if isinstance(result, Mapping):
            self.seen.update(result)  # every tensor name the step has output, healthy or not
        data = [i for i in self.injections if i.active and i.fault.type in OUTPUT_FAULTS]
        if not data or result is None:
            return result
        arrays = as_arrays(result)
        for i in data:
            if self._selects_nothing(i, arrays):
                continue
            arrays = transform(i, arrays)
        return arrays

    def _selects_nothing(self, injection: Injection, arrays: Arrays) -> bool:
        """An active fault whose ``tensors`` name none of this call's outputs, nor any the step
        has output before (healthy calls included: a router's other branch is no typo), would
        inject nothing: the injection notes the problem, and the runner stops the run."""
        named = getattr(injection.fault.params, "tensors", None)
        if named is None or any(t in arrays or t in self.seen for t in named):
            return False
        if injection.problem is None:
            outputs = ", ".join(sorted(map(str, self.seen | set(arrays)))) or "none"
            injection.problem = (f"faults.{injection.index}.params.tensors: {', '.join(named)}: "
                                 f"step {self.original.name!r} outputs none of them (it outputs "
                                 f"{outputs}); the {injection.fault.type} fault would inject nothing")
        return True


def wrap_step(original: RunnableStep, injections: list[Injection],
              resolve_module: Callable[[str], str] = lambda m: m) -> Callable[..., Any]:
    """Step code that behaves like ``original`` until one of ``injections`` is switched on."""
    name = original.name
    replacements = {
        id(i): make_runnable(name, load_code(i.fault.params.code, resolve_module))
        for i in injections if isinstance(i.fault.params, ReplaceParams)
    }
    faulty = _FaultyStep(original, injections, replacements)
    needs_async = (original.is_async or any(r.is_async for r in replacements.values())
                   or any(i.fault.type == "latency" for i in injections))
    if needs_async:
        async def step(inputs: Arrays) -> Any:
            delay = faulty.delay_s()
            if delay:
                await asyncio.sleep(delay)
            faulty.maybe_raise()
            code = faulty.code()
            result = code.fn(inputs)
            if code.is_async:
                result = await result
            return faulty.after(result)
    else:
        def step(inputs: Arrays) -> Any:  # type: ignore[misc]
            faulty.maybe_raise()
            return faulty.after(faulty.code().fn(inputs))
    step.timeout_s = original.timeout_s  # type: ignore[attr-defined]
    step.__name__ = name
    return step
