"""The scenario file: a pipeline, its step code, its traffic, its phases and the faults.

Scenario YAML is read with ``yaml.safe_load`` into the pydantic models below; unknown keys
are errors. Paths inside a scenario (pipeline file, step module file, CSV, replacement
code) are relative to the scenario file. docs/scenarios.md describes the format.
"""

from __future__ import annotations

import csv
import inspect
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.refs import RefError, parse_ref
from engine.spec import Pipeline, SpecError, load_pipelines
from engine.tensors import DTYPES

INPUTS = "inputs"  # the fault "step" that stands for the target pipeline's inputs (the traffic)
SAMPLERS = ("normal", "lognormal", "uniform", "integers", "choice", "poisson", "exponential",
            "gamma", "beta", "binomial")


class ScenarioError(ValueError):
    """A scenario file that cannot be loaded."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- traffic ------------------------------------------------------------------------------
def _known_datatype(cls: type, v: str) -> str:
    if v not in DTYPES:
        raise ValueError(f"unknown datatype {v!r}")
    return v


class TensorDistribution(_Model):
    """One input tensor drawn from ``numpy.random.Generator.<distribution>(**params)``."""

    distribution: str
    params: dict[str, Any] = Field(default_factory=dict)
    datatype: str = "FP64"
    shape: list[int] = Field(default_factory=lambda: [1])

    @field_validator("distribution")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SAMPLERS:
            raise ValueError(f"unknown distribution {v!r} (one of {', '.join(SAMPLERS)})")
        return v

    _datatype = field_validator("datatype")(_known_datatype)

    @model_validator(mode="after")
    def _draws(self) -> TensorDistribution:
        """The params are the numpy method's, the shape's dimensions positive, and a trial
        draw converts to the datatype: a bad setting is found when the file loads."""
        if any(d < 1 for d in self.shape):
            raise ValueError(f"shape {self.shape}: every dimension must be 1 or more")
        name = self.distribution
        signature = inspect.signature(getattr(np.random.Generator, name))
        accepted = [p for p in signature.parameters if p not in ("self", "size")]
        unknown = [p for p in self.params if p not in accepted]
        if unknown:
            raise ValueError(f"params: {', '.join(map(str, unknown))} not a parameter of "
                             f"numpy.random.Generator.{name} ({', '.join(accepted)}"
                             f"{'; size comes from shape' if 'size' in unknown else ''})")
        missing = [p for p in accepted if signature.parameters[p].default is inspect.Parameter.empty
                   and p not in self.params]
        if missing:
            raise ValueError(f"params: numpy.random.Generator.{name} needs {', '.join(missing)}")
        try:
            draw = getattr(np.random.default_rng(0), name)(**self.params, size=(2, *self.shape))
            as_datatype(np.asarray(draw), self.datatype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{name} with params {self.params} and datatype {self.datatype}: "
                             f"{exc}") from None
        return self


def as_datatype(values: np.ndarray, datatype: str) -> np.ndarray:
    """``values`` as the OIP ``datatype`` (BYTES: an object array of str). Numbers beyond an
    integer datatype's range, or not finite, raise ValueError: numpy would wrap them round
    (640 as INT8 is -128), as the engine refuses such values in a request."""
    if datatype == "BYTES":
        return np.array([str(v) for v in values.reshape(-1)], dtype=object).reshape(values.shape)
    dtype = np.dtype(DTYPES[datatype])
    if dtype.kind in "iu" and values.dtype.kind in "iuf" and values.size:
        info = np.iinfo(dtype)
        bad = ~np.isfinite(values) | (values < info.min) | (values > info.max)
        if bad.any():
            raise ValueError(f"{values[bad].reshape(-1)[0].item()!r} is not a {datatype} "
                             f"(range {info.min} to {info.max})")
    return values.astype(dtype)


class CsvColumn(_Model):
    column: str
    datatype: str = "FP64"

    _datatype = field_validator("datatype")(_known_datatype)


class CsvReplay(_Model):
    """Rows of a CSV file as requests: ``sequential`` (cycling), ``shuffle`` (a seeded
    permutation per pass) or ``sample`` (with replacement)."""

    path: str
    order: Literal["sequential", "shuffle", "sample"] = "shuffle"
    tensors: dict[str, CsvColumn]


class Generator(_Model):
    """A function ``f(rng, n, **params) -> dict[str, np.ndarray]`` of stacked request tensors
    (first dimension ``n``), named ``module:function`` (module dotted or a .py path)."""

    function: str
    params: dict[str, Any] = Field(default_factory=dict)


class Traffic(_Model):
    seed: int = Field(default=0, ge=0)  # numpy seeds are non-negative
    rate: float | None = Field(default=None, gt=0)  # requests/s; None: as fast as it goes
    concurrency: int = Field(default=128, ge=1)  # requests in flight at most
    inputs: dict[str, TensorDistribution] | None = None
    csv: CsvReplay | None = None
    generator: Generator | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Traffic:
        sources = [s for s in (self.inputs, self.csv, self.generator) if s is not None]
        if len(sources) != 1:
            raise ValueError("traffic needs exactly one of 'inputs', 'csv' or 'generator'")
        return self


class Phases(_Model):
    """Requests sent while healthy (the reference window), then with the faults active.

    The warm-up requests go first and belong to neither window: a freshly started process
    (cold caches, first calls into libraries) is slower than the one an incident meets.
    """

    warmup: int = Field(default=100, ge=0)
    healthy: int = Field(default=500, ge=2)
    incident: int = Field(default=500, ge=2)


# -- faults -------------------------------------------------------------------------------
class _Params(_Model):
    pass


class ReplaceParams(_Params):
    code: str  # module:attr of the replacement step code


class ShiftParams(_Params):
    tensors: list[str] | None = None  # default: every numeric tensor
    scale: float = 1.0
    offset: float = 0.0
    swap: dict[str, str] = Field(default_factory=dict)  # categorical: value -> value

    @field_validator("swap", mode="before")
    @classmethod
    def _texts(cls, v: Any) -> Any:
        return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else v


class NoiseParams(_Params):
    tensors: list[str] | None = None
    std: float = Field(gt=0)


class StuckParams(_Params):
    tensors: list[str] | None = None
    value: float | None = None  # None: repeat the first faulty output forever


class NanParams(_Params):
    tensors: list[str] | None = None
    rate: float = Field(default=1.0, gt=0, le=1)  # share of requests hit
    elements: float = Field(default=1.0, gt=0, le=1)  # share of a hit tensor's elements


class LatencyParams(_Params):
    ms: float = Field(gt=0)
    jitter_ms: float = Field(default=0.0, ge=0)


class ExceptionParams(_Params):
    rate: float = Field(default=1.0, gt=0, le=1)
    message: str = "injected fault"


class DropParams(_Params):
    tensors: list[str] | None = None  # default: every output
    rate: float = Field(default=1.0, gt=0, le=1)


class NoParams(_Params):
    pass


PARAMS: dict[str, type[_Params]] = {
    "replace": ReplaceParams,
    "shift": ShiftParams,
    "noise": NoiseParams,
    "stuck": StuckParams,
    "nan": NanParams,
    "latency": LatencyParams,
    "exception": ExceptionParams,
    "drop": DropParams,
    "none": NoParams,
}
# What can happen to the traffic itself (a fault on step ``inputs``): its data, not its code.
INPUT_FAULTS = ("shift", "noise", "stuck", "nan", "drop", "none")
FaultType = Literal["replace", "shift", "noise", "stuck", "nan", "latency", "exception", "drop",
                    "none"]


class Fault(_Model):
    step: str = INPUTS
    type: FaultType
    params: SerializeAsAny[_Params] = Field(default_factory=NoParams)  # the type's own fields
    start: int = Field(default=0, ge=0)  # requests into the incident phase
    ground_truth: str | None = None  # the node to blame; default: the step

    @model_validator(mode="before")
    @classmethod
    def _typed_params(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") in PARAMS:
            raw = data.get("params") or {}
            try:
                params = PARAMS[data["type"]].model_validate(raw)
            except ValidationError as exc:  # keep "params" in the location: faults.0.params.std
                raise ValidationError.from_exception_data(exc.title, [
                    {"type": e["type"], "loc": ("params", *e["loc"]), "input": e["input"],
                     **({"ctx": e["ctx"]} if "ctx" in e else {})}
                    for e in exc.errors()]) from None
            data = {**data, "params": params}
        elif isinstance(data, dict):  # an unknown type (reported): no fields to check params by
            data = {k: v for k, v in data.items() if k != "params"}
        return data

    @model_validator(mode="after")
    def _fits_step(self) -> Fault:
        if self.step == INPUTS and self.type not in INPUT_FAULTS:
            raise ValueError(f"a {self.type!r} fault needs a step; the traffic ('inputs') takes "
                             f"{', '.join(INPUT_FAULTS)}")
        return self

    @property
    def truth(self) -> str | None:
        """The node a localiser should name; None for the no-fault control."""
        if self.type == "none":
            return None
        return self.ground_truth or self.step


# -- the scenario -------------------------------------------------------------------------
SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class Scenario(_Model):
    name: str
    description: str = ""
    pipeline: str | dict[str, Any] | list[dict[str, Any]]  # file (relative) or inline docs
    target: str | None = None  # the pipeline the traffic goes to (default: the first)
    result_of: str | None = None  # the pipeline whose output ends a request (default: the
    # last pipeline of the chain from target, runner.result_pipeline)
    steps: str  # step module: dotted name or .py path (relative)
    models: dict[str, str] = Field(default_factory=dict)
    traffic: Traffic
    phases: Phases = Field(default_factory=Phases)
    faults: list[Fault] = Field(min_length=1)
    base: str | None = Field(default=None, exclude=True)  # the scenario file's directory

    @field_validator("name")
    @classmethod
    def _one_folder(cls, name: str) -> str:
        """The name is a folder of the output (``out/<name>``, a suite's ``OUT/<name>``): one
        plain name, so that a run writes nowhere else."""
        if not SCENARIO_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a plain name: letters, digits, '_', '-' and '.', "
                             "starting with a letter or digit (it names the run's output folder)")
        return name

    def path(self, relative: str) -> Path:
        """``relative`` resolved against the scenario file's directory."""
        return (Path(self.base or ".") / relative).resolve()

    def module(self, spec: str) -> str:
        """A module spec with a file path made absolute (dotted names pass unchanged)."""
        return str(self.path(spec)) if spec.endswith(".py") or "/" in spec else spec

    def pipelines(self) -> list[Pipeline]:
        source: Any = self.pipeline
        if isinstance(source, str):
            source = self.path(source)
        return load_pipelines(source)

    @property
    def is_control(self) -> bool:
        return all(f.type == "none" for f in self.faults)

    @property
    def ground_truth(self) -> list[str]:
        return list(dict.fromkeys(t for f in self.faults if (t := f.truth) is not None))

    def with_counts(self, healthy: int | None = None, incident: int | None = None) -> Scenario:
        """The scenario with other phase counts (None: the scenario's), checked as if the
        file had them."""
        counts = {k: v for k, v in (("healthy", healthy), ("incident", incident)) if v is not None}
        try:
            phases = Phases.model_validate({**self.phases.model_dump(), **counts})
        except ValidationError as exc:
            raise ScenarioError("; ".join(f"{e['loc'][0]} {counts.get(str(e['loc'][0]))}: "
                                          f"{_message(e)}" for e in exc.errors())) from None
        scenario = self.model_copy(update={"phases": phases})
        _check_starts(scenario, self.name)
        return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file (its pipelines are loaded and checked as well)."""
    file = Path(path)
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{file}: invalid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ScenarioError(f"{file}: a scenario is a mapping")
    try:
        scenario = Scenario.model_validate({**doc, "base": str(file.resolve().parent)})
    except ValidationError as exc:
        problems = [f"{file}: {'.'.join(str(p) for p in e['loc'])}: {_message(e)}"
                    for e in exc.errors()]
        raise ScenarioError("\n".join(problems)) from None
    _check_names(scenario, file)
    return scenario


def _message(error: Any) -> str:
    """A pydantic error's message without its "Value error, " (or "Assertion failed, ")."""
    msg = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def _check_names(scenario: Scenario, file: Path) -> None:
    try:
        pipelines = scenario.pipelines()
    except SpecError as exc:
        raise ScenarioError(str(exc)) from None
    names = [p.name for p in pipelines]
    for key in ("target", "result_of"):
        name = getattr(scenario, key)
        if name is not None and name not in names:
            raise ScenarioError(f"{file}: {key} {name!r} is not one of {', '.join(names)}")
    steps = {s.name for p in pipelines for s in p.steps}
    for step in scenario.models:
        if step not in steps:
            raise ScenarioError(f"{file}: models.{step}: {step!r} is no step of the pipelines "
                                f"({', '.join(sorted(steps))})")
    # what a ranking can name (scenarios/score.py): a step, a pipeline (its inputs), its outputs
    suspects = steps | {INPUTS, *names, *(f"{n}.outputs" for n in names)}
    tensors = _traffic_tensors(scenario, file)
    for i, fault in enumerate(scenario.faults):
        if fault.step != INPUTS and fault.step not in steps:
            raise ScenarioError(f"{file}: faults.{i}.step: {fault.step!r} is no step of the "
                                f"pipelines ({', '.join(sorted(steps))}) nor {INPUTS!r}")
        if fault.ground_truth is not None and fault.ground_truth not in suspects:
            raise ScenarioError(f"{file}: faults.{i}.ground_truth {fault.ground_truth!r} is neither a "
                                f"step nor a pipeline ({', '.join(sorted(suspects))})")
        named = getattr(fault.params, "tensors", None) or []
        known = tensors if fault.step == INPUTS else step_outputs(pipelines, fault.step)
        unknown = [t for t in named if known is not None and t not in known]
        if unknown:
            among = ("the traffic's tensors" if fault.step == INPUTS
                     else f"the tensors the pipelines read from {fault.step}")
            raise ScenarioError(f"{file}: faults.{i}.params.tensors: {', '.join(unknown)} not among "
                                f"{among} ({', '.join(known or [])})")
    _check_starts(scenario, str(file))


def _references(pipeline: Pipeline) -> list[tuple[str, bool]]:
    """Every reference written in ``pipeline``, with whether it is external (names another
    pipeline first: ``spec.input``)."""
    refs: list[tuple[str, bool]] = []
    for step in pipeline.steps:
        refs += [(r, False) for r in (*step.inputs, *step.triggers, *step.tensor_map)]
    if pipeline.output is not None:
        refs += [(r, False) for r in (*pipeline.output.steps, *pipeline.output.tensor_map)]
    if pipeline.input is not None:
        refs += [(r, True) for r in (*pipeline.input.external_inputs,
                                     *pipeline.input.external_triggers, *pipeline.input.tensor_map)]
    return refs


def step_outputs(pipelines: list[Pipeline], step: str) -> list[str] | None:
    """The output tensors of ``step`` that the pipelines read, when every reference to its
    outputs names a tensor (``step.outputs.T``); None when one reads them whole (``step``,
    ``step.outputs``) or none reads them: then what it outputs is known only when it runs."""
    homes = {p.name for p in pipelines if any(s.name == step for s in p.steps)}
    found: list[str] = []
    for pipeline in pipelines:
        for text, external in _references(pipeline):
            try:
                ref = parse_ref(text, pipeline, external=external)
            except RefError:
                continue
            if ref.step != step or ref.port != "outputs" or ref.pipeline not in homes:
                continue
            if ref.tensor is None:
                return None
            found.append(ref.tensor)
    return list(dict.fromkeys(found)) or None


def _traffic_tensors(scenario: Scenario, file: Path) -> list[str] | None:
    """The traffic's tensor names (None for a generator's: known once it runs); the columns a
    CSV replay reads must be in its file."""
    traffic = scenario.traffic
    if traffic.inputs is not None:
        return list(traffic.inputs)
    if traffic.csv is None:
        return None
    path = scenario.path(traffic.csv.path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except OSError as exc:
        raise ScenarioError(f"{file}: cannot read traffic.csv.path {path}: {exc.strerror}") from None
    missing = [c.column for c in traffic.csv.tensors.values() if c.column not in header]
    if missing:
        raise ScenarioError(f"{file}: traffic.csv: no column {', '.join(missing)} in {path} "
                            f"(it has {', '.join(header)})")
    table = read_csv(path)
    for name in traffic.csv.tensors:
        csv_column(table, path, traffic.csv, name, where=f"{file}: ")
    return list(traffic.csv.tensors)


def read_csv(path: Path) -> pd.DataFrame:
    """A traffic CSV as the replay reads it (every cell as written: no NA guessing)."""
    try:
        return pd.read_csv(path, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"cannot read traffic.csv.path {path}: {exc}") from None


def csv_column(table: pd.DataFrame, path: Path, replay: CsvReplay, name: str,
               where: str = "") -> np.ndarray:
    """Column ``replay.tensors[name]`` of ``table`` in its datatype; a value that does not
    convert is a :class:`ScenarioError` naming the tensor, column and file."""
    column = replay.tensors[name]
    values = table[column.column].to_numpy()
    try:
        return as_datatype(values, column.datatype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ScenarioError(f"{where}traffic.csv.tensors.{name}: column {column.column!r} of {path} "
                            f"is not {column.datatype}: {exc}") from None


def _check_starts(scenario: Scenario, where: str) -> None:
    """A fault starting at or after the last incident request would never be switched on."""
    incident = scenario.phases.incident
    for i, fault in enumerate(scenario.faults):
        if fault.start >= incident:
            raise ScenarioError(f"{where}: faults.{i}.start {fault.start} is not below the "
                                f"{incident} incident requests (the fault would never start)")
