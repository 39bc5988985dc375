"""The step (model) interface and how step code is found.

A step is any of:

- a function ``f(inputs: dict[str, np.ndarray]) -> Mapping[str, array-like | Tensor]``;
- an ``async def`` function of the same shape;
- a class whose instances have such a ``predict`` method (or are callable); it is
  instantiated once, with no arguments, and ``load()`` is called if it exists.

A step's values are numpy arrays (or anything ``np.asarray`` takes: scalars, lists), whose
dtype gives the datatype (numpy ``str``/``bytes`` arrays are BYTES and reach the next steps
as object arrays of str/bytes, on every transport), or :class:`~engine.tensors.Tensor`
objects, whose array must already have their datatype's dtype (nothing is cast) and whose
``parameters`` must encode as a JSON object. Anything else is a :class:`MalformedOutput`,
the step's error.

A step returns only the tensors it produces: returning a subset is how a router routes
(tensors it does not return are absent downstream). A step may set ``timeout_s`` (attribute
on the function or class); async steps always honour it, sync steps with a timeout run in a
worker thread so the engine can stop waiting for them. Each such step has a thread pool of
its own (``STEP_THREADS`` threads), so a step whose calls hang holds only its own threads;
its timeout counts from when a thread starts the call, not while the call waits for one.

Step code lives in a module: either a ``STEPS`` dict mapping names to steps, or module-level
functions/classes named like the steps. A pipeline step's name is the model it runs unless a
mapping (``models``) says otherwise.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from engine.tensors import DATATYPE_OF_DTYPE, Tensor, TensorError

StepCallable = Callable[[dict[str, np.ndarray]], Any]
# worker threads per sync step with a timeout (as many as asyncio's default executor has)
STEP_THREADS = min(32, (os.cpu_count() or 1) + 4)


class StepNotFound(LookupError):
    pass


class StepBusy(RuntimeError):
    """A sync step with a timeout found none of its threads free within its timeout."""


class MalformedOutput(TensorError):
    """A step returned something that is not a mapping of tensors, or a tensor that no
    transport could carry as it is (see :meth:`Tensor.from_array`)."""


class InputNameClash(ValueError):
    """Two of a step's joined inputs hold a tensor of the same name. A step is given its
    inputs by name, so one of them would be lost without a word."""

    def __init__(self, tensors: tuple[Tensor, ...]) -> None:
        names = [t.name for t in tensors]
        twice = sorted({n for n in names if names.count(n) > 1})
        super().__init__(f"its inputs hold more than one tensor named {', '.join(map(repr, twice))}; "
                         "give them names of their own with the step's tensorMap")


class RunnableStep:
    """A step ready to run: sync or async, with an optional timeout."""

    __slots__ = ("name", "fn", "is_async", "timeout_s", "_pool")

    def __init__(self, name: str, fn: StepCallable, is_async: bool, timeout_s: float | None):
        self.name = name
        self.fn = fn
        self.is_async = is_async
        self.timeout_s = timeout_s
        self._pool: ThreadPoolExecutor | None = None  # made on first use

    def close(self) -> None:
        """Drop calls still queued for a thread; calls running keep their thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    @property
    def inline(self) -> bool:
        """True when the step can run synchronously on the delivering thread."""
        return not self.is_async and self.timeout_s is None

    def run_sync(self, inputs: dict[str, np.ndarray]) -> tuple[Tensor, ...]:
        return to_tensors(self.fn(inputs), self.name)

    async def run(self, inputs: dict[str, np.ndarray]) -> tuple[Tensor, ...]:
        if self.is_async:
            result: Any = self.fn(inputs)
            if self.timeout_s is not None:
                result = await asyncio.wait_for(result, self.timeout_s)
            else:
                result = await result
            return to_tensors(result, self.name)
        if self.timeout_s is None:
            return self.run_sync(inputs)
        loop = asyncio.get_running_loop()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(STEP_THREADS, thread_name_prefix=f"step-{self.name}")
        started: asyncio.Future[None] = loop.create_future()

        def call() -> Any:
            loop.call_soon_threadsafe(_set_started, started)
            return self.fn(inputs)

        future: asyncio.Future[Any] = loop.run_in_executor(self._pool, call)
        # Waiting for a thread does not count against timeout_s: the call has all of it. The
        # wait has a bound of its own (timeout_s too), so that a step whose threads are all
        # held by hung calls answers with an error rather than never.
        try:
            done, _ = await asyncio.wait((started, future), timeout=self.timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise StepBusy(f"no thread of the step free within {self.timeout_s} s (its "
                               f"{STEP_THREADS} threads are held by calls still running)")
            if future not in done:
                await asyncio.wait_for(future, self.timeout_s)
        except BaseException:
            future.cancel()  # a call still queued never runs (a running one keeps its thread)
            raise
        finally:
            started.cancel()
        return to_tensors(future.result(), self.name)


def cancelled_by_engine() -> bool:
    """Whether the running task was cancelled from outside (the engine stopping), rather
    than step code raising CancelledError of its own (an awaited future someone else
    cancelled)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _set_started(started: asyncio.Future[None]) -> None:
    if not started.done():
        started.set_result(None)


def to_tensors(result: Any, step: str) -> tuple[Tensor, ...]:
    """A step's return value as tensors, each holding an array of its own: a step may keep
    and refill the arrays it returned (a preallocated output buffer) without changing what
    it was recorded to have produced, what later steps read or the answer (as a Seldon step
    serialises its outputs when it returns them)."""
    if result is None:
        return ()
    if type(result) is not dict and not isinstance(result, Mapping):
        raise MalformedOutput(
            f"step {step!r} returned {type(result).__name__}, expected a mapping of tensors"
        )
    out = []
    for name, value in result.items():
        if type(value) is np.ndarray and type(name) is str:
            datatype = DATATYPE_OF_DTYPE.get(value.dtype)
            if datatype is not None:
                out.append(Tensor(name, datatype, value.copy()))
                continue
        if not isinstance(name, str):
            raise MalformedOutput(f"step {step!r} returned a tensor name that is not a string")
        try:
            tensor = Tensor.from_array(name, value)
        except (TensorError, ValueError, TypeError) as exc:
            raise MalformedOutput(f"step {step!r} returned malformed tensor {name!r}: {exc}") from None
        if tensor.data is (value.data if isinstance(value, Tensor) else value):
            tensor = Tensor(tensor.name, tensor.datatype, tensor.data.copy(), tensor.parameters)
        out.append(tensor)
    return tuple(out)


def make_runnable(name: str, obj: Any) -> RunnableStep:
    """Wrap a step function, instance or class."""
    timeout = getattr(obj, "timeout_s", None)
    if inspect.isclass(obj):
        obj = obj()
        if callable(getattr(obj, "load", None)):
            obj.load()
    fn = getattr(obj, "predict", None) if not inspect.isroutine(obj) else None
    fn = fn or obj
    if not callable(fn):
        raise TypeError(f"step {name!r}: {obj!r} is neither callable nor has predict()")
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        type(fn).__call__
    )
    return RunnableStep(name, fn, is_async, timeout)


def import_module(spec: str) -> Any:
    """Import ``pkg.module`` or a ``path/to/file.py``."""
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec).resolve()
        if not path.exists():
            raise StepNotFound(f"step module file not found: {spec}")
        mod_name = f"flowcause_steps_{path.stem}_{abs(hash(str(path)))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        assert module_spec and module_spec.loader
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise StepNotFound(f"cannot import step module {spec!r}: {exc}") from None


class StepRegistry:
    """Maps step names (or model names) to step code."""

    def __init__(self, steps: Mapping[str, Any] | None = None) -> None:
        self._steps: dict[str, Any] = dict(steps or {})

    @classmethod
    def from_module(cls, module: str | Any) -> StepRegistry:
        mod = import_module(module) if isinstance(module, str) else module
        table = getattr(mod, "STEPS", None)
        if table is None:
            table = {
                k: v
                for k, v in vars(mod).items()
                if not k.startswith("_")
                and callable(v)
                and getattr(v, "__module__", None) == mod.__name__
            }
        return cls(table)

    def update(self, other: Mapping[str, Any]) -> None:
        self._steps.update(other)

    def names(self) -> list[str]:
        return sorted(self._steps)

    def resolve(self, step: str, model: str | None = None) -> RunnableStep:
        key = model or step
        if key not in self._steps:
            known = ", ".join(self.names()) or "none"
            raise StepNotFound(f"no step code for {key!r} (known: {known})")
        return make_runnable(step, self._steps[key])
