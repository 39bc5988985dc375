"""Fixes of the causal module's audit: id columns in small windows, text columns empty in one
window, BOOL columns read two ways, noisy regimes in one request's threshold, values beyond
float32, DoWhy's targets, and the command line's refusals."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import causal
from causal.cli import register
from causal.encoding import fit_encoding
from causal.mechanisms import ContinuousMechanism
from engine.cli import main
from tests.test_causal_cli import BASE, DATA, ROOT

CHAIN = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "p"},
         "spec": {"steps": [{"name": "a", "inputs": ["p.inputs.x"]},
                            {"name": "b", "inputs": ["a"]}],
                  "output": {"steps": ["b"]}}}
ONE_STEP = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "p"},
            "spec": {"steps": [{"name": "a", "inputs": ["p.inputs.x"]}],
                     "output": {"steps": ["a"]}}}


def via_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as pandas reads it back from a CSV file (an empty text column is float NaN,
    a BOOL column with blanks is text)."""
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)))


# ------------------------------------------------------------------ 1. ids and hashes


def chain_with_ids(n: int, start: int, rng: np.random.Generator, off: float = 0.0
                   ) -> pd.DataFrame:
    x = rng.normal(size=n)
    y = 2 * x + 0.1 * rng.normal(size=n)
    z = y + 1 + off + 0.1 * rng.normal(size=n)
    digest = [hashlib.sha1(str(start + i).encode()).hexdigest()[:16] for i in range(n)]
    return pd.DataFrame({"p.inputs.x": x, "a.outputs.y": y, "a.outputs.img.hash": digest,
                         "a.outputs.id": [f"req-{start + i}" for i in range(n)],
                         "b.outputs.z": z, "p.outputs.z": z})


def test_ids_and_hashes_are_no_nodes_however_small_a_window() -> None:
    rng = np.random.default_rng(0)
    reference, incident = chain_with_ids(200, 0, rng), chain_with_ids(40, 1000, rng, off=1.0)
    for frames in [(reference, incident), (reference, incident.iloc[:1]),
                   (reference.iloc[:20], incident.iloc[:5])]:
        nodes = causal.graph_for(CHAIN, *frames).nodes
        assert "a.outputs.img.hash" not in nodes
    # an id column: more than 50 values over the windows together, whatever one window holds
    assert "a.outputs.id" not in causal.graph_for(CHAIN, reference, incident.iloc[:1]).nodes
    # a hash as b's parent made every incident request "out of support" for b
    for k in range(3):
        ranking = causal.explain_request(CHAIN, reference, incident.iloc[k], bootstrap=0)
        assert not ranking.no_fault and ranking.top.step == "b"
    shift = causal.localise(CHAIN, reference, incident, bootstrap=0)
    assert not shift.no_fault and shift.top.step == "b"


# ------------------------------------------------------- 2. a text column empty in a window


def labelled(n: int, rng: np.random.Generator, broken: bool = False) -> pd.DataFrame:
    x = rng.normal(size=n)
    label = np.where(x > 0, "cat", "dog").astype(object)
    status = np.array(["ok"] * n, dtype=object)
    if broken:  # the step fails on every request: no label at all
        label[:] = None
        status[:] = "error"
    return pd.DataFrame({"p.inputs.x": x, "a.status": status, "a.outputs.label": label,
                         "p.outputs.label": label})


def test_a_text_column_empty_in_one_window_is_still_text() -> None:
    rng = np.random.default_rng(0)
    reference, incident = via_csv(labelled(100, rng)), via_csv(labelled(100, rng, broken=True))
    assert pd.api.types.is_float_dtype(incident["a.outputs.label"])  # as pandas reads it
    shift = causal.localise(ONE_STEP, reference, incident, bootstrap=0)
    assert not shift.no_fault and shift.top.step == "a"
    one = causal.explain_request(ONE_STEP, reference, incident.iloc[0], bootstrap=0)
    assert not one.no_fault and one.top.step == "a"
    # the encoding codes an all-NaN series beside text levels as "absent"
    enc = fit_encoding(["a.outputs.label"], [reference, incident])
    assert enc.levels[0] == [None, "cat", "dog"]
    assert (enc.encode(incident)[:, 0] == 0).all()
    assert set(enc.encode(reference)[:, 0]) == {1.0, 2.0}


def test_one_request_that_lacks_a_text_output_keeps_its_types() -> None:
    rng = np.random.default_rng(1)
    reference = labelled(100, rng)
    request = labelled(1, rng).iloc[0].copy()
    request["a.outputs.label"] = np.nan  # a Series: the frame's types are lost, then inferred
    request["p.outputs.label"] = np.nan
    ranking = causal.explain_request(ONE_STEP, reference, request, bootstrap=0)
    assert ranking.details["reference_rows"] == 100


# ----------------------------------------------------- 3. a BOOL column read in two ways


def flags(n: int, rng: np.random.Generator, skipped: int = 0) -> pd.DataFrame:
    x = rng.normal(size=n)
    flag = pd.Series(x > 0, dtype=object)
    flag[:skipped] = None
    return via_csv(pd.DataFrame({"p.inputs.x": x, "a.outputs.flag": flag,
                                 "p.outputs.flag": flag}))


def test_a_bool_column_that_is_text_in_the_other_window() -> None:
    rng = np.random.default_rng(0)
    reference, incident = flags(100, rng), flags(100, rng, skipped=20)
    assert reference["a.outputs.flag"].dtype == bool and incident["a.outputs.flag"].dtype != bool
    for method in ("flowcause", "zscore"):
        ranking = causal.localise(ONE_STEP, reference, incident, method, bootstrap=0) \
            if method == "flowcause" else causal.localise(ONE_STEP, reference, incident, method)
        assert not ranking.no_fault and ranking.top.step == "a"
    enc = fit_encoding(["a.outputs.flag"], [reference, incident])
    assert enc.levels[0] == [None, "False", "True"]
    codes = enc.encode(reference)[:, 0]
    assert ((codes == 2) == reference["a.outputs.flag"].to_numpy()).all()


# ------------------------------------------------------- 4. a noisy regime, one request

NOISY = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "p"},
         "spec": {"steps": [{"name": "a", "inputs": ["p.inputs.x", "p.inputs.kind"]},
                            {"name": "b", "inputs": ["a.outputs.y"]}],
                  "output": {"steps": ["b"]}}}


def noisy_regime(n: int, rng: np.random.Generator, b_off: float = 0.0, share: float = 0.03
                 ) -> pd.DataFrame:
    """Step a is 20 times noisier on the rare requests of kind 1."""
    x = rng.normal(size=n)
    kind = (rng.random(n) < share).astype(float)
    y = x + np.where(kind == 1, 2.0, 0.1) * rng.normal(size=n)
    z = y + b_off + 0.1 * rng.normal(size=n)
    return pd.DataFrame({"p.inputs.x": x, "p.inputs.kind": kind, "a.outputs.y": y,
                         "b.outputs.z": z, "p.outputs.z": z})


def test_one_request_threshold_does_not_depend_on_the_seed_with_a_noisy_regime() -> None:
    rng = np.random.default_rng(1)  # the audit's data: seed 0 set the threshold at 39.7
    reference, incident = noisy_regime(300, rng), noisy_regime(10, rng, b_off=1.0)
    thresholds = []
    for seed in (0, 10, 11):
        ranking = causal.explain_request(NOISY, reference, incident.iloc[0], seed=seed,
                                         bootstrap=0, shapley=False)
        assert not ranking.no_fault and ranking.top.step == "b"  # b is 10 sigma off
        thresholds.append(ranking.threshold)
    assert max(thresholds) < 2 * min(thresholds)


def test_each_regime_of_enough_rows_has_its_own_residual_spread() -> None:
    rng = np.random.default_rng(2)
    frame = noisy_regime(2000, rng, share=0.2)
    graph = causal.graph_for(NOISY, frame)
    enc = fit_encoding(graph.nodes, [frame])
    X = enc.encode(frame)
    node = graph.index["a.outputs.y"]
    mech = ContinuousMechanism(enc, node, [graph.index[p] for p in graph.parents["a.outputs.y"]],
                               X)
    _, spread = mech._noise_scale(X)
    kind = frame["p.inputs.kind"].to_numpy() == 1
    assert np.allclose(spread[kind], 2.0, rtol=0.2) and np.allclose(spread[~kind], 0.1, rtol=0.2)
    # a request of the noisy kind 2 of its sigmas off is not a surprise
    surprise = mech.surprise(X)
    assert np.quantile(surprise[kind], 0.99) < 4


# ------------------------------------------------------ 5. values beyond float32's range

LATENCIES = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline",
             "metadata": {"name": "p"},
             "spec": {"steps": [{"name": "a", "inputs": ["p.inputs.x"]},
                                {"name": "b", "inputs": ["a.outputs.y"]}],
                      "output": {"steps": ["b"]}}}


def scaled(n: int, rng: np.random.Generator, scale: float, b_off: float = 0.0) -> pd.DataFrame:
    x = rng.normal(size=n)
    y = 2 * x + 0.1 * rng.normal(size=n)
    z = y + 1 + b_off + 0.1 * rng.normal(size=n)
    return pd.DataFrame({"p.inputs.x": x * scale, "a.outputs.y": y * scale,
                         "a.latency_ms": rng.uniform(5, 6, n), "a.status": "ok",
                         "b.outputs.z": z * scale, "p.outputs.z": z * scale})


@pytest.mark.parametrize("scale", [1e39, 1e165, 1e300])
def test_values_beyond_float32_rank_as_ordinary_ones(scale: float) -> None:
    results = []
    for s in (1.0, scale):
        rng = np.random.default_rng(0)
        reference, incident = scaled(150, rng, s), scaled(150, rng, s, b_off=1.0)
        shift = causal.localise(LATENCIES, reference, incident, bootstrap=0)
        one = causal.explain_request(LATENCIES, reference, incident.iloc[0], bootstrap=0)
        assert not shift.no_fault and shift.top.step == "b"
        assert not one.no_fault and one.top.step == "b"
        results.append((shift.top.score, one.top.score))
    assert np.allclose(results[0], results[1], rtol=1e-3)


@pytest.mark.parametrize("scale", [1e165, 1e300])
def test_a_bend_is_learned_whatever_the_values_magnitude(scale: float) -> None:
    """The leave-one-out errors that decide on hinge terms are squares: at 1e154 and beyond
    they overflowed, and no fit looked better than another."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    frame = pd.DataFrame({"p.inputs.x": x, "a.outputs.y": np.maximum(x, 0.0)})
    spec = {**ONE_STEP, "spec": {"steps": [{"name": "a", "inputs": ["p.inputs.x"]}]}}
    graph = causal.graph_for(spec, frame)
    models, errors = [], []
    for s in (1.0, scale):
        enc = fit_encoding(graph.nodes, [frame * s])
        X = enc.encode(frame * s)
        mech = ContinuousMechanism(enc, graph.index["a.outputs.y"], [graph.index["p.inputs.x"]],
                                   X)
        models.append(mech.model)
        errors.append(np.abs(mech._residual(X)).max() / s)
    assert models == ["hinge", "hinge"] and np.isclose(errors[0], errors[1], rtol=1e-6)


# --------------------------------------------------------- 6. every target of DoWhy

TWO_OUTPUTS = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline",
               "metadata": {"name": "p"},
               "spec": {"steps": [{"name": "a", "inputs": ["p.inputs.x"]},
                                  {"name": "b", "inputs": ["p.inputs.x"]}],
                        "output": {"steps": ["a", "b"]}}}


def two_outputs(n: int, rng: np.random.Generator, off: float = 0.0) -> pd.DataFrame:
    """The fault (``off``) is in step b, which only the second output depends on."""
    x = rng.normal(size=n)
    u, v = x + 0.1 * rng.normal(size=n), -x + off + 0.1 * rng.normal(size=n)
    return pd.DataFrame({"p.inputs.x": x, "a.outputs.u": u, "b.outputs.v": v,
                         "p.outputs.u": u, "p.outputs.v": v})


def test_dowhy_anomaly_attributes_to_every_target() -> None:
    rng = np.random.default_rng(0)
    reference, request = two_outputs(60, rng), two_outputs(1, rng, off=10.0).iloc[0]
    assert len(causal.graph_for(TWO_OUTPUTS, reference).targets) == 2
    ranking = causal.explain_request(TWO_OUTPUTS, reference, request, method="dowhy-anomaly",
                                     num_distribution_samples=200)
    assert not ranking.no_fault and ranking.top.step == "b"
    assert set(ranking.details["target_it_score"]) == {"p.outputs.u", "p.outputs.v"}


def test_dowhy_shift_runs_once_per_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """DoWhy's own estimate takes far too long for a unit test: a stand-in says which
    targets it was asked about, and blames b.outputs.v wherever it is an ancestor."""
    from causal.methods.dowhy_gcm import _gcm

    asked: list[str] = []

    def distribution_change(model: Any, old: Any, new: Any, target: str, **_: Any
                            ) -> tuple[dict[str, float], dict[str, bool], None, None]:
        asked.append(target)
        nodes = list(model.graph.nodes)
        return ({n: 1.0 if n == "b.outputs.v" else 0.1 for n in nodes},
                {n: n == "b.outputs.v" for n in nodes}, None, None)

    monkeypatch.setattr(_gcm(), "distribution_change", distribution_change)
    rng = np.random.default_rng(0)
    ranking = causal.localise(TWO_OUTPUTS, two_outputs(30, rng), two_outputs(30, rng, off=2.0),
                              method="dowhy-shift", test="approx")
    assert asked == ["p.outputs.u", "p.outputs.v"]
    assert not ranking.no_fault and ranking.top.step == "b"
    assert ranking.top.evidence["target"] == "p.outputs.v"


# ------------------------------------------------------------- 7, 8. the command line


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flowcause")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.mark.parametrize("extra, says", [
    (["--method", "dowhy-shift", "--request", "3"], "dowhy-shift cannot explain one request"),
    (["--method", "dowhy-anomaly"], "dowhy-anomaly cannot compare two windows"),
    (["--option", "top_k=9"], "top_k must be between 1 and 5"),
    (["--option", "bogus=1"], "flowcause has no option bogus"),
    (["--option", "bogus"], "--option expects KEY=VALUE"),
])
def test_localise_refuses_bad_options_in_one_line(extra: list[str], says: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    windows = ["--reference", str(DATA / "normal_0.csv"), "--incident",
               str(DATA / "broken_app_0.csv")]
    assert run([*BASE, *windows, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowcause: ") and says in err and len(err.splitlines()) == 1
    # refused before any window is read
    assert run([*BASE, "--reference", "no.csv", "--incident", "no.csv", *extra]) == 2


def test_localise_turns_a_method_failing_on_its_option_into_exit_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*BASE, "--reference", str(DATA / "normal_0.csv"), "--incident",
                str(DATA / "broken_app_0.csv"), "--option", "alpha=\"high\""]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowcause: option of flowcause: ") and len(err.splitlines()) == 1


def test_report_refuses_a_method_that_cannot_compare_windows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert main(["report", "--pipeline", str(ROOT / "scenarios" / "pipelines" / "insurance_claims.yaml"),
                 "--reference", str(DATA / "normal_0.csv"), "--incident", str(DATA / "broken_app_0.csv"),
                 "--layout", str(ROOT / "causal" / "layouts" / "insurance_claims.yaml"),
                 "--method", "dowhy-anomaly", "--out", str(out)]) == 2
    assert "cannot compare two windows" in capsys.readouterr().err
    assert not out.exists()


def test_docs_synopsis_names_every_localise_option() -> None:
    parser = argparse.ArgumentParser(prog="flowcause")
    register(parser.add_subparsers(dest="command"))
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = {o for a in sub.choices["localise"]._actions for o in a.option_strings
               if o.startswith("--") and o != "--help"}
    docs = (ROOT / "docs" / "causal.md").read_text(encoding="utf-8")
    synopsis = re.search(r"```sh\nflowcause localise(.*?)```", docs, re.S)
    assert synopsis is not None
    assert options == set(re.findall(r"--[a-z]+", synopsis.group(1)))


# ================================================ the second audit: the command's errors
# (each test fails on the code before these fixes)

CYCLIC = """apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: cyc
spec:
  allowCycles: true
  maxStepRevisits: 3
  steps:
    - name: a
      inputs: [cyc.inputs.x, b.outputs.y]
      inputsJoinType: any
    - name: b
      inputs: [a.outputs.y]
  output:
    steps: [b]
"""
DANGLING = """apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: lin
spec:
  steps:
    - name: a
      inputs: [lin.inputs.x]
    - name: b
      inputs: [zz.outputs.y]
  output:
    steps: [b]
"""
INSURANCE = [*BASE]  # the published pipeline and layout, as in tests/test_causal_cli.py


def write_case(tmp_path: Path, spec: str, pipeline: str, n: int = 60) -> list[str]:
    """A spec file and a reference/incident CSV pair for it: the localise arguments."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    frame = pd.DataFrame({f"{pipeline}.inputs.x": x, "a.outputs.y": x, "b.outputs.y": 2 * x,
                          f"{pipeline}.outputs.y": 2 * x})
    (tmp_path / "p.yaml").write_text(spec, encoding="utf-8")
    frame.to_csv(tmp_path / "w.csv", index=False)
    return ["localise", "--pipeline", str(tmp_path / "p.yaml"), "--reference",
            str(tmp_path / "w.csv"), "--incident", str(tmp_path / "w.csv")]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("flowcause: ") and len(err.splitlines()) == 1, err
    return err


def test_a_cyclic_pipeline_is_refused_in_one_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run(write_case(tmp_path, CYCLIC, "cyc")) == 2
    err = one_line_error(capsys)
    assert "cycle (a -> b -> a)" in err and "allowCycles" in err
    # the Python API: a ValueError (the dashboard catches those), of a class of its own
    frame = pd.read_csv(tmp_path / "w.csv")
    with pytest.raises(causal.GraphError, match="cycle"):
        causal.graph_for(str(tmp_path / "p.yaml"), frame)
    assert issubclass(causal.GraphError, ValueError)


def test_a_spec_that_does_not_validate_is_reported_as_validate_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(write_case(tmp_path, DANGLING, "lin")) == 2
    err = one_line_error(capsys)
    assert f"{tmp_path / 'p.yaml'}:10: pipeline 'lin': step 'b'" in err and "'zz'" in err
    # refused before any window is read
    args = write_case(tmp_path, DANGLING, "lin")
    args[args.index("--reference") + 1] = str(tmp_path / "none.csv")
    assert run(args) == 2


def test_a_bad_time_in_a_store_window_names_it(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(causal.WindowError, match="'garbage' in store:.* is no time"):
        causal.frames.read_window(f"store:{tmp_path}@garbage..", ["p"])
    with pytest.raises(causal.WindowError, match="'inf' .* is no time"):
        causal.frames.read_window(f"store:{tmp_path}@..inf", ["p"])
    with pytest.raises(SystemExit, match=r"^flowcause: 'garbage' in store:"):
        run([*INSURANCE, "--reference", f"store:{tmp_path}@garbage..",
             "--incident", f"store:{tmp_path}"])


def test_window_ends_read_as_iso_times_or_epoch_seconds() -> None:
    from causal.frames import _time

    assert _time("", "s") is None
    assert _time("1700000000", "s") == pd.Timestamp("2023-11-14T22:13:20Z")
    assert _time("2026-01-01T02:00:00+02:00", "s") == pd.Timestamp("2026-01-01T00:00:00Z")


def test_infinities_in_the_reference_are_missing_values() -> None:
    from tracing.layout import load_layout

    lay = load_layout(ROOT / "causal" / "layouts" / "insurance_claims.yaml")
    spec = str(DATA.parent / "insurance_claims.yaml")
    reference = pd.read_csv(DATA / "normal_0.csv")
    incident = pd.read_csv(DATA / "broken_app_0.csv")
    with_inf, with_nan = reference.copy(), reference.copy()
    with_inf.loc[5, "input"], with_inf.loc[9, "output"] = np.inf, -np.inf
    with_nan.loc[5, "input"], with_nan.loc[9, "output"] = np.nan, np.nan
    ranked = [causal.localise(spec, ref, incident, layout=lay, bootstrap=0)
              for ref in (with_inf, with_nan)]
    assert not ranked[0].no_fault and ranked[0].top.step == "classify_claim_complexity"
    assert [c.score for c in ranked[0].candidates] == [c.score for c in ranked[1].candidates]
    # the same in the incident window and in one request: missing values, not numbers
    both = causal.localise(spec, with_inf, with_inf, layout=lay, bootstrap=0)
    assert both.no_fault
    one = causal.explain_request(spec, with_inf, incident.iloc[[0]], layout=lay, bootstrap=0)
    assert one.details["reference_rows"] == len(reference)
    request = reference.iloc[[20]].copy()
    request["input"] = np.inf
    as_inf = causal.explain_request(spec, reference, request, layout=lay, bootstrap=0)
    request["input"] = np.nan
    as_nan = causal.explain_request(spec, reference, request, layout=lay, bootstrap=0)
    assert [c.score for c in as_inf.candidates] == [c.score for c in as_nan.candidates]
    assert as_inf.top.step == "insurance_claims" and as_inf.top.evidence["value"] is None


def test_only_options_refused_by_the_method_are_called_options(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A method failing on the windows (numpy's LinAlgError is a ValueError) with no option
    given is no "option of" error: exit 1, naming what failed."""
    def fails(*_: Any, **__: Any) -> None:
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr("causal.cli.localise", fails)
    windows = ["--reference", str(DATA / "normal_0.csv"), "--incident",
               str(DATA / "broken_app_0.csv")]
    with pytest.raises(SystemExit, match="^flowcause: flowcause could not rank these windows: "
                                         "LinAlgError: SVD did not converge$"):
        run([*INSURANCE, *windows])
    # with options given, they may be what it tripped over: exit 2, naming them
    assert run([*INSURANCE, *windows, "--option", "seed=3"]) == 2
    err = one_line_error(capsys)
    assert "option of" not in err and "with the options seed=3" in err


@pytest.mark.parametrize("option, says", [
    ("null_splits=0", "null_splits must be a whole number >= 1"),
    ("bootstrap=-5", "bootstrap must be a whole number >= 0"),
    ("min_rows=0", "min_rows must be a whole number >= 1"),
    ("alpha=1.5", "alpha must be a number between 0 and 1"),
])
def test_flowcause_refuses_option_values_it_cannot_run_with(
        option: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*INSURANCE, "--reference", "no.csv", "--incident", "no.csv",
                "--option", option]) == 2
    err = one_line_error(capsys)
    assert err.startswith("flowcause: option of flowcause: ") and says in err
    key, _, value = option.partition("=")
    with pytest.raises(ValueError, match=says):
        causal.make_method("flowcause", **{key: float(value) if "." in value else int(value)})


def tiny(n: int) -> pd.DataFrame:
    return pd.read_csv(DATA / "normal_0.csv").iloc[:n]


@pytest.mark.parametrize("n_ref, n_inc", [(2, 500), (5, 500), (500, 5)])
def test_windows_too_small_to_judge_say_so_rather_than_no_fault(n_ref: int, n_inc: int) -> None:
    from tracing.layout import load_layout

    lay = load_layout(ROOT / "causal" / "layouts" / "insurance_claims.yaml")
    spec = str(DATA.parent / "insurance_claims.yaml")
    incident = pd.read_csv(DATA / "broken_app_0.csv").iloc[:n_inc]
    ranking = causal.localise(spec, tiny(n_ref), incident, layout=lay)
    assert not ranking.judged and not ranking.no_fault and not ranking.candidates
    assert ranking.verdict == "not enough data to judge"
    doc = ranking.to_dict()
    assert doc["judged"] is False and doc["verdict"] == "not enough data to judge"
    assert "min_rows" in doc["details"]["not_judged"]
    assert ranking.table().startswith("method flowcause (shift), ")
    assert "not enough data to judge: no node could be compared" in ranking.table()


def test_a_request_against_a_tiny_reference_is_not_judged() -> None:
    from tracing.layout import load_layout

    lay = load_layout(ROOT / "causal" / "layouts" / "insurance_claims.yaml")
    spec = str(DATA.parent / "insurance_claims.yaml")
    request = pd.read_csv(DATA / "normal_1.csv").iloc[[3]]
    ranking = causal.explain_request(spec, tiny(5), request, layout=lay)
    assert not ranking.judged and not ranking.no_fault
    assert "the reference holds 5 requests" in ranking.details["not_judged"]
    # enough rows: judged as before
    judged = causal.explain_request(spec, tiny(200), request, layout=lay, bootstrap=0)
    assert judged.judged and judged.verdict in ("fault", "no fault")


def test_normal_windows_are_judged_and_quiet() -> None:
    from tracing.layout import load_layout

    lay = load_layout(ROOT / "causal" / "layouts" / "insurance_claims.yaml")
    ranking = causal.localise(str(DATA.parent / "insurance_claims.yaml"),
                              pd.read_csv(DATA / "normal_0.csv"),
                              pd.read_csv(DATA / "normal_1.csv"), layout=lay, bootstrap=0)
    assert ranking.judged and ranking.no_fault and ranking.verdict == "no fault"
    assert ranking.details["judged_channels"] > 0 and ranking.to_dict()["judged"] is True


def test_the_cli_prints_the_not_judged_verdict(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    tiny(5).to_csv(tmp_path / "ref.csv", index=False)
    windows = ["--reference", str(tmp_path / "ref.csv"), "--incident",
               str(DATA / "broken_app_0.csv")]
    assert run([*INSURANCE, *windows]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("not enough data to judge: no node could be compared "
                                        "on at least 10 requests (min_rows) of each window "
                                        "(reference 5, incident 500 requests)")
    assert run([*INSURANCE, *windows, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "not enough data to judge" and doc["no_fault"] is False


def test_top_below_one_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    windows = ["--reference", str(DATA / "normal_0.csv"), "--incident",
               str(DATA / "broken_app_0.csv")]
    with pytest.raises(SystemExit) as exc:
        run([*INSURANCE, *windows, "--top", "-1"])
    assert exc.value.code == 2 and "--top: must be at least 1" in capsys.readouterr().err
    assert run([*INSURANCE, *windows, "--top", "1", "--option", "bootstrap=0"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3  # verdict, header, one row
    ranking = causal.Ranking("m", "shift", [causal.Candidate("n", "s", 1.0)] * 3, False)
    assert len(ranking.table(-1).splitlines()) == 2  # the API: no row, not all but the last


def test_an_unknown_request_is_a_one_line_flowcause_error() -> None:
    with pytest.raises(SystemExit, match="^flowcause: request 'nope' is not in the incident"):
        run([*INSURANCE, "--reference", str(DATA / "normal_0.csv"), "--incident",
             str(DATA / "normal_1.csv"), "--request", "nope"])


def test_request_values_are_shown_so_that_close_ones_differ() -> None:
    rows = [causal.Candidate("n", f"s{v}", 1.0, evidence={"value": v, "ks": 0.123456})
            for v in (1999.0, 2000.0, 2000.5, 1234567.891, float("nan"))]
    text = causal.Ranking("m", "anomaly", rows, False).table()
    for shown in ("value=1999,", "value=2000,", "value=2000.5,", "value=1.23457e+06,",
                  "value=nan,"):
        assert shown in text
    assert text.count("ks=0.123") == 5  # statistics stay short
