"""Fixes from the scenario audit: a swap on mixed tensors, a suite that checks every file
first and keeps every finished run (also on Ctrl-C), one-line traffic errors, typos in a
fault's tensors, a previous run's result beside a new store, duplicate scenario names."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from engine.steps import make_runnable
from scenarios import cli, suite, traffic
from scenarios.faults import Injection, transform, wrap_step
from scenarios.runner import execute
from scenarios.spec import Fault, ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
FLOWCAUSE = Path(sys.executable).parent / "flowcause"

STEPS = '''
import numpy as np

def src(inputs):
    x = float(inputs["x"].reshape(-1)[0])
    return {"f": np.array([x, x + 1.0]), "i": np.array([int(round(x * 10))], dtype=np.int64),
            "c": np.array(["a" if x > 0 else "b"], dtype=object)}

def down(inputs):
    return {"y": np.array([float(inputs["f"].sum()) + float(inputs["i"][0])])}

STEPS = {"src": src, "down": down}
'''

# `down` reads two of src's tensors by name, and the pipeline outputs src whole: what src
# outputs is known only when it runs.
PIPELINE = '''
  metadata: {name: mini}
  spec:
    steps:
      - name: src
      - name: down
        inputs: [src.outputs.f, src.outputs.i]
    output:
      steps: [src, down]
'''


def scenario_file(directory: Path, name: str, fault: str, *, phases: str = "",
                  rate: str = "null", traffic_spec: str = "") -> Path:
    """A small scenario on the `mini` pipeline (steps.py beside it)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "steps.py").write_text(STEPS)
    source = traffic_spec or "inputs:\n    x: {distribution: normal, params: {loc: 0.0, scale: 1.0}}"
    text = (f"name: {name}\npipeline:{textwrap.indent(PIPELINE, '  ')}\nsteps: steps.py\n"
            f"traffic:\n  seed: 0\n  rate: {rate}\n  {source}\n"
            f"phases: {phases or '{warmup: 5, healthy: 40, incident: 40}'}\n"
            f"faults:\n{textwrap.indent(fault.strip(), '  ')}\n")
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def flowcause(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="flowcause")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def injection(**fault: object) -> Injection:
    i = Injection.create(Fault.model_validate(fault), 0, 0)
    i.active = True
    return i


# -- 1: swap applies to the tensors of its kind -------------------------------------------
def test_swap_without_tensors_leaves_numbers_to_numeric_pairs() -> None:
    arrays = {"f": np.array([1.0, 2.0]), "i": np.array([1, 3], dtype=np.int64),
              "c": np.array(["a", "b"], dtype=object), "u": np.array(["a", "1"]),
              "ok": np.array([True, False])}
    out = transform(injection(step="src", type="shift",
                              params={"scale": 2.0, "offset": 1.0, "swap": {"a": "q", 1: 5}}),
                    arrays)
    assert np.allclose(out["f"], [11.0, 5.0])  # 1 -> 5, then * 2 + 1
    assert out["i"].tolist() == [11, 7] and out["i"].dtype == np.int64
    assert out["c"].tolist() == ["q", "b"]
    assert out["u"].tolist() == ["q", "5"]  # a string tensor takes every pair, as text
    assert out["ok"].tolist() == [True, False]  # booleans are left alone


def test_shift_with_a_text_swap_on_mixed_outputs_raises_nothing(tmp_path: Path) -> None:
    file = scenario_file(tmp_path, "f_shift",
                         "- step: src\n  type: shift\n  params: {scale: 2.0, offset: 1.0, swap: {a: q}}")
    execution = asyncio.run(execute(load_scenario(file), tmp_path / "out", progress=False))
    assert execution.errors == 0


# -- 2 and 7: a suite checks every file first ---------------------------------------------
def test_a_bad_file_late_in_a_suite_stops_it_before_the_first_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenarios = tmp_path / "s"
    scenario_file(scenarios, "a_noise", "- step: src\n  type: noise\n  params: {std: 5.0}")
    scenario_file(scenarios, "zz_bad", "- step: src\n  type: explode")
    code = flowcause("suite", str(scenarios), "--out", str(tmp_path / "out"))
    assert code == 2
    err = capsys.readouterr().err
    assert "zz_bad.yaml" in err and "faults.0.type" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # no run was made


def test_counts_are_checked_before_the_first_run(tmp_path: Path) -> None:
    scenarios = tmp_path / "s"
    scenario_file(scenarios, "a_noise", "- step: src\n  type: noise\n  params: {std: 5.0}")
    scenario_file(scenarios, "b_late", "- step: src\n  type: noise\n  start: 30\n  params: {std: 5.0}")
    with pytest.raises(ScenarioError, match="b_late.yaml: .*faults.0.start 30 is not below"):
        suite.run_suite(suite.discover(scenarios), ["flowcause"], 1, tmp_path / "out", incident=20)
    assert not (tmp_path / "out").exists()


def test_duplicate_names_in_a_suite_are_refused(tmp_path: Path) -> None:
    scenarios = tmp_path / "s"
    scenario_file(scenarios, "one", "- step: src\n  type: noise\n  params: {std: 5.0}")
    text = (scenarios / "one.yaml").read_text()
    (scenarios / "two.yaml").write_text(text)
    with pytest.raises(ScenarioError, match="scenario name 'one' is also the name in .*one.yaml"):
        suite.prepare(suite.discover(scenarios))


def test_every_finished_run_is_kept_when_a_later_run_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenarios = tmp_path / "s"
    scenario_file(scenarios, "a_noise", "- step: src\n  type: noise\n  params: {std: 5.0}")
    # src's outputs are unknown before it runs, so the typo shows only in the run
    scenario_file(scenarios, "b_typo", "- step: src\n  type: shift\n  params: {tensors: [ff], scale: 9}")
    code = flowcause("suite", str(scenarios), "--out", str(tmp_path / "out"))
    assert code == 2
    err = capsys.readouterr().err
    assert "faults.0.params.tensors: ff" in err and "kept 1 of 2 runs" in err
    doc = json.loads((tmp_path / "out" / "suite.json").read_text())
    assert doc["partial"] is True and doc["runs"] == 1 and doc["planned"] == 2
    assert [r["scenario"] for r in doc["results"]] == ["a_noise"]
    assert "a_noise" in (tmp_path / "out" / "suite_runs.csv").read_text()


def test_a_finished_suite_is_not_partial(tmp_path: Path) -> None:
    scenarios = tmp_path / "s"
    scenario_file(scenarios, "a_noise", "- step: src\n  type: noise\n  params: {std: 5.0}")
    assert flowcause("suite", str(scenarios), "--out", str(tmp_path / "out")) == 0
    doc = json.loads((tmp_path / "out" / "suite.json").read_text())
    assert doc["partial"] is False and doc["runs"] == doc["planned"] == 1


# -- 3: Ctrl-C keeps the finished runs ----------------------------------------------------
def test_ctrl_c_during_a_suite_keeps_the_finished_runs(tmp_path: Path) -> None:
    scenarios = tmp_path / "s"
    # about 1.2 s per run at 100 requests/s
    scenario_file(scenarios, "slow", "- step: src\n  type: noise\n  params: {std: 5.0}",
                  rate="100", phases="{warmup: 5, healthy: 60, incident: 60}")
    out = tmp_path / "out"
    process = subprocess.Popen([str(FLOWCAUSE), "suite", str(scenarios), "--repeats", "20",
                                "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (out / "suite.json").exists() and time.time() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.1)
        assert (out / "suite.json").exists(), "no results written after the first run"
        time.sleep(0.5)  # into the next run
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("flowcause: interrupted")]
    doc = json.loads((out / "suite.json").read_text())
    assert doc["partial"] is True and doc["planned"] == 20 and 1 <= doc["runs"] < 20
    assert f"kept {doc['runs']} of 20 runs" in line
    assert len(doc["results"]) == doc["runs"]


# -- 4: traffic settings --------------------------------------------------------------------
@pytest.mark.parametrize(("source", "expected"), [
    ("inputs:\n    x: {distribution: normal, params: {mean: 0, sd: 1}}",
     "traffic.inputs.x: params: mean, sd not a parameter of numpy.random.Generator.normal"),
    ("inputs:\n    x: {distribution: normal, shape: [-1]}",
     r"traffic.inputs.x: shape \[-1\]: every dimension must be 1 or more"),
    ("inputs:\n    x: {distribution: gamma}",
     "traffic.inputs.x: params: numpy.random.Generator.gamma needs shape"),
    ("inputs:\n    x: {distribution: normal, params: {scale: -1}}", "traffic.inputs.x: normal with params"),
    ("inputs:\n    x: {distribution: choice, params: {a: [u, v]}}", "traffic.inputs.x: choice with params"),
    ("csv: {path: data.csv, tensors: {x: {column: word}}}",
     "traffic.csv.tensors.x: column 'word' of .*data.csv is not FP64: could not convert"),
])
def test_bad_traffic_settings_are_one_line_when_loaded(tmp_path: Path, source: str,
                                                       expected: str) -> None:
    (tmp_path / "data.csv").write_text("word,n\nhello,1\n")
    file = scenario_file(tmp_path, "t", "- step: src\n  type: noise\n  params: {std: 1.0}",
                         traffic_spec=source)
    with pytest.raises(ScenarioError, match=expected) as raised:
        load_scenario(file)
    assert "Value error" not in str(raised.value)


def test_data_errors_while_drawing_traffic_name_their_source(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("n\n1\n2\n")
    file = scenario_file(tmp_path, "t", "- step: src\n  type: noise\n  params: {std: 1.0}",
                         traffic_spec="csv: {path: data.csv, tensors: {x: {column: n}}}")
    scenario = load_scenario(file)
    (tmp_path / "data.csv").write_text("n\n1\nlots\n")  # changed since it was checked
    with pytest.raises(ScenarioError, match="traffic.csv.tensors.x: column 'n' .* is not FP64"):
        traffic.batch(scenario, 10, 0)


def test_a_failing_generator_is_a_scenario_error(tmp_path: Path) -> None:
    file = scenario_file(tmp_path, "g", "- step: src\n  type: noise\n  params: {std: 1.0}",
                         traffic_spec="generator: {function: steps.py:frames, params: {kk: 1}}")
    frames = "\ndef frames(rng, n, k):\n    return {'x': rng.normal(size=(n, k))}\n"
    (tmp_path / "steps.py").write_text(STEPS + frames)  # bad params: kk instead of k
    with pytest.raises(ScenarioError, match="traffic.generator steps.py:frames .* failed: TypeError"):
        traffic.batch(load_scenario(file), 10, 0)


# -- 5: a fault's tensors must exist ---------------------------------------------------------
def test_a_typo_in_tensors_is_refused_when_the_pipeline_names_the_outputs(tmp_path: Path) -> None:
    pipeline = ROOT / "scenarios" / "pipelines" / "dag30.yaml"
    file = tmp_path / "typo.yaml"
    inputs = "\n".join(f"    x{i}: {{distribution: normal}}" for i in range(5))
    file.write_text(f"name: typo\npipeline: {pipeline}\nsteps: scenarios.steps.dag30\n"
                    f"traffic:\n  inputs:\n{inputs}\nphases: {{warmup: 5, healthy: 40, incident: 40}}\n"
                    "faults:\n  - step: node_09\n    type: shift\n"
                    "    params: {tensors: [nonexistent], scale: 100}\n")
    with pytest.raises(ScenarioError, match=r"faults.0.params.tensors: nonexistent not among the "
                       r"tensors the pipelines read from node_09 \(y09\)"):
        load_scenario(file)


def test_a_typo_in_tensors_stops_the_run_when_the_fault_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = scenario_file(tmp_path, "typo", "- step: src\n  type: shift\n  params: {tensors: [ff], scale: 9}")
    load_scenario(file)  # src's outputs are not known before it runs
    code = flowcause("run-scenario", str(file), "--out", str(tmp_path / "out"), "--quiet")
    assert code == 2
    err = capsys.readouterr().err
    assert "faults.0.params.tensors: ff: step 'src' outputs none of them (it outputs c, f, i)" in err
    assert not (tmp_path / "out" / "result.json").exists()


def test_a_router_branch_seen_before_is_no_typo() -> None:
    calls = iter([{"a": np.ones(1)}, {"b": np.ones(1)}, {"a": np.ones(1)}])
    original = make_runnable("router", lambda inputs: next(calls))
    fault = injection(step="router", type="shift", params={"tensors": ["b"], "scale": 2.0})
    fault.active = False
    step = wrap_step(original, [fault])
    step({})  # healthy calls: both branches
    step({})
    fault.active = True
    assert list(step({})) == ["a"] and fault.problem is None
    typo = injection(step="router", type="drop", params={"tensors": ["bb"]})
    step = wrap_step(make_runnable("router", lambda inputs: {"a": np.ones(1)}), [typo])
    step({})
    assert typo.problem is not None and "bb" in typo.problem


# -- 6: no stale result beside a new store ------------------------------------------------------
def test_a_run_removes_the_previous_result_files(tmp_path: Path) -> None:
    file = scenario_file(tmp_path, "f_noise", "- step: src\n  type: noise\n  params: {std: 5.0}")
    out = tmp_path / "out"
    out.mkdir()
    for stale in ("result.json", "report.md"):
        (out / stale).write_text("from the previous run")
    asyncio.run(execute(load_scenario(file), out, progress=False))
    assert not (out / "result.json").exists() and not (out / "report.md").exists()
    assert (out / "store").is_dir()


# -- polish ----------------------------------------------------------------------------------
def test_bad_fault_params_keep_their_location(tmp_path: Path) -> None:
    file = scenario_file(tmp_path, "p", "- step: src\n  type: noise\n  params: {sigma: 1}")
    with pytest.raises(ScenarioError) as raised:
        load_scenario(file)
    assert "faults.0.params.std: Field required" in str(raised.value)
    assert "faults.0.params.sigma: Extra inputs" in str(raised.value)


def test_messages_drop_the_value_error_prefix(tmp_path: Path) -> None:
    file = scenario_file(tmp_path, "v", "- step: inputs\n  type: latency\n  params: {ms: 5}")
    with pytest.raises(ScenarioError) as raised:
        load_scenario(file)
    assert "faults.0: a 'latency' fault needs a step" in str(raised.value)
    assert "Value error" not in str(raised.value)


def test_negative_requests_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = flowcause("suite", str(tmp_path), "--requests", "-3", "--out", str(tmp_path / "out"))
    assert code == 2
    assert "--requests -3" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

