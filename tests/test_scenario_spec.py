"""Scenario files: what loads, what is rejected, and the traffic they describe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scenarios import traffic
from scenarios.spec import INPUTS, Scenario, ScenarioError, as_datatype, load_scenario
from scenarios.suite import BUILTIN, discover

PIPELINE = """\
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata: {name: p}
spec:
  steps:
    - name: a
      inputs: [p.inputs.x]
"""


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "p.yaml").write_text(PIPELINE)
    (tmp_path / "rows.csv").write_text("amount,kind\n1.5,a\n2.5,b\n3.5,c\n")
    path = tmp_path / "s.yaml"
    path.write_text("name: s\npipeline: p.yaml\nsteps: some.module\n" + body)
    return path


CSV = "traffic:\n  csv:\n    path: rows.csv\n    tensors: {x: {column: amount}}\n"


def test_paths_resolve_against_the_scenario_file(tmp_path: Path) -> None:
    body = CSV + "faults:\n  - {step: a, type: latency, params: {ms: 5}}\n"
    scenario = load_scenario(write(tmp_path, body))
    assert [p.name for p in scenario.pipelines()] == ["p"]
    assert scenario.path("rows.csv") == (tmp_path / "rows.csv").resolve()
    assert scenario.ground_truth == ["a"]
    assert not scenario.is_control


@pytest.mark.parametrize(("faults", "message"), [
    ("  - {step: nowhere, type: noise, params: {std: 1}}\n", "faults.0.step: 'nowhere' is no step"),
    ("  - {step: a, type: melt}\n", "faults.0"),
    ("  - {step: inputs, type: latency, params: {ms: 5}}\n", "needs a step"),
    ("  - {step: a, type: noise, params: {sdt: 1}}\n", "sdt"),
    ("  - {step: a, type: exception, params: {rate: 2}}\n", "rate"),
])
def test_bad_faults_are_rejected_with_the_file_named(tmp_path: Path, faults: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, CSV + "faults:\n" + faults))
    assert message in str(info.value) and "s.yaml" in str(info.value)


def test_an_unknown_fault_type_is_the_one_problem_told(tmp_path: Path) -> None:
    """Its params cannot be checked without a type: no second line about them."""
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, CSV + "faults:\n  - {step: a, type: slow, params: {ms: 5}}\n"))
    assert str(info.value).splitlines() == [
        f"{tmp_path / 's.yaml'}: faults.0.type: Input should be 'replace', 'shift', 'noise', "
        "'stuck', 'nan', 'latency', 'exception', 'drop' or 'none'"]


@pytest.mark.parametrize("name", ["../../elsewhere", "", "a/b", ".hidden", "two words"])
def test_a_scenario_name_is_one_plain_folder_name(tmp_path: Path, name: str) -> None:
    """The name is the run's output folder (out/<name>): nothing that leads elsewhere."""
    path = write(tmp_path, CSV + "faults:\n  - {type: none}\n")
    path.write_text(path.read_text().replace("name: s\n", f"name: {name!r}\n"))
    with pytest.raises(ScenarioError, match=r"s\.yaml: name: .* is not a plain name"):
        load_scenario(path)
    path.write_text(path.read_text().replace(f"name: {name!r}\n", "name: ok_name-1.2\n"))
    assert load_scenario(path).name == "ok_name-1.2"


def test_models_for_a_step_that_does_not_exist_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, CSV + "models: {b: a_model}\nfaults:\n  - {type: none}\n")
    with pytest.raises(ScenarioError, match=r"s\.yaml: models\.b: 'b' is no step of the "
                                            r"pipelines \(a\)"):
        load_scenario(path)


def test_traffic_needs_exactly_one_source(tmp_path: Path) -> None:
    body = CSV + "  inputs: {x: {distribution: normal}}\nfaults:\n  - {type: none}\n"
    with pytest.raises(ScenarioError, match="exactly one"):
        load_scenario(write(tmp_path, body))


def test_control_has_no_ground_truth(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, CSV + "faults:\n  - {type: none}\n"))
    assert scenario.is_control and scenario.ground_truth == []
    shift = load_scenario(write(tmp_path, CSV + "faults:\n  - {type: shift, params: {scale: 2}}\n"))
    assert shift.ground_truth == [INPUTS]


def _csv_scenario(tmp_path: Path, order: str) -> Scenario:
    body = (f"traffic:\n  seed: 5\n  csv:\n    path: rows.csv\n    order: {order}\n"
            "    tensors: {x: {column: amount}, k: {column: kind, datatype: BYTES}}\n"
            "faults:\n  - {type: none}\n")
    return load_scenario(write(tmp_path, body))


def test_csv_replay_orders(tmp_path: Path) -> None:
    sequential = traffic.batch(_csv_scenario(tmp_path, "sequential"), 7, seed=0)
    assert sequential["x"].reshape(-1).tolist() == [1.5, 2.5, 3.5, 1.5, 2.5, 3.5, 1.5]
    assert sequential["k"].dtype == object and sequential["k"][1, 0] == "b"
    shuffled = traffic.batch(_csv_scenario(tmp_path, "shuffle"), 6, seed=0)["x"].reshape(-1)
    assert sorted(shuffled[:3]) == [1.5, 2.5, 3.5] and sorted(shuffled[3:]) == [1.5, 2.5, 3.5]
    sampled = traffic.batch(_csv_scenario(tmp_path, "sample"), 50, seed=0)["x"].reshape(-1)
    assert set(sampled) == {1.5, 2.5, 3.5}


def test_distributions_are_seeded_and_typed(tmp_path: Path) -> None:
    body = ("traffic:\n  inputs:\n"
            "    x: {distribution: normal, params: {loc: 10, scale: 2}, shape: [1, 3]}\n"
            "    n: {distribution: integers, params: {low: 0, high: 5}, datatype: INT32}\n"
            "    c: {distribution: choice, params: {a: [u, v], p: [0.9, 0.1]}, datatype: BYTES}\n"
            "faults:\n  - {type: none}\n")
    scenario = load_scenario(write(tmp_path, body))
    first, again, other = (traffic.batch(scenario, 400, s) for s in (1, 1, 2))
    assert first["x"].shape == (400, 1, 3) and abs(first["x"].mean() - 10) < 0.5
    assert first["n"].dtype == np.int32 and set(first["n"].reshape(-1)) <= set(range(5))
    assert 0.8 < (first["c"] == "u").mean() < 0.97
    assert np.array_equal(first["x"], again["x"]) and not np.array_equal(first["x"], other["x"])
    requests = traffic.requests(scenario, 3, 1)
    assert len(requests) == 3 and requests[0]["x"].shape == (1, 3)


def test_every_builtin_scenario_loads() -> None:
    files = discover(BUILTIN)
    scenarios = [load_scenario(f) for f in files]
    assert {s.name for s in scenarios} == {f.stem for f in files}
    kinds = {f.type for s in scenarios for f in s.faults}
    assert kinds == {"replace", "shift", "noise", "stuck", "nan", "latency", "exception", "drop", "none"}
    assert sum(s.is_control for s in scenarios) >= 5
    steps = max(len(p.steps) for s in scenarios for p in s.pipelines())
    assert steps >= 30


def test_numbers_beyond_an_integer_datatype_are_refused_not_wrapped(tmp_path: Path) -> None:
    body = ("traffic:\n  inputs:\n"
            "    x: {distribution: normal, params: {loc: 0, scale: 1000}, datatype: INT8}\n"
            "faults:\n  - {type: none}\n")
    with pytest.raises(ScenarioError, match=r"traffic\.inputs\.x: .*is not a INT8 \(range -128 to 127\)"):
        load_scenario(write(tmp_path, body))
    wide = CSV.replace("{column: amount}", "{column: amount, datatype: INT8}")
    (tmp_path / "rows.csv").write_text("amount,kind\n1.5,a\n300,b\n")
    path = tmp_path / "s.yaml"
    path.write_text("name: s\npipeline: p.yaml\nsteps: some.module\n" + wide
                    + "faults:\n  - {type: none}\n")
    with pytest.raises(ScenarioError, match=r"300\.0 is not a INT8"):
        load_scenario(path)
    assert as_datatype(np.array([1.7, -128.0]), "INT8").tolist() == [1, -128]
    with pytest.raises(ValueError, match="nan is not a INT64"):
        as_datatype(np.array([np.nan]), "INT64")
    assert np.isnan(as_datatype(np.array([np.nan]), "FP32")[0])
