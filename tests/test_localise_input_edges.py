"""``flowcause localise`` on inputs a user may get wrong: method options given as strings
(``--option shapley=False``)."""

from __future__ import annotations

import pandas as pd
import pytest

import causal
from engine.spec import load_pipelines
from tests.test_causal_cli import BASE, DATA, REFERENCE, ROOT, run
from tracing.layout import load_layout

NORMAL = str(DATA / "normal_0.csv")
SPEC = REFERENCE / "insurance_claims.yaml"
LAYOUT = ROOT / "causal" / "layouts" / "insurance_claims.yaml"


def one_line(capsys: pytest.CaptureFixture[str], says: str, code: int,
             argv: list[str]) -> None:
    """``argv`` ends with exit ``code`` and one line ``flowcause: ...`` holding ``says``."""
    try:
        got = run(argv)
        err = capsys.readouterr().err
    except SystemExit as exc:  # how cmd_localise ends with exit 1
        got, err = 1, f"{exc.code}\n"
    assert got == code, err
    assert err.startswith("flowcause: ") and says in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("method, option", [
    ("flowcause", "shapley=False"), ("flowcause", "shapley=maybe"), ("flowcause", "shapley=1"),
    ("flowcause", "seed=abc"), ("flowcause", "top_k=true"), ("zscore", "alpha=\"0.1\""),
    ("random", "seed=-1"), ("dowhy-shift", "num_samples=\"500\""),
    ("dowhy-shift", "test_samples=0"), ("dowhy-shift", "target=3"),
])
def test_options_of_the_wrong_type_are_refused_when_the_method_is_made(
        capsys: pytest.CaptureFixture[str], method: str, option: str) -> None:
    key, _, value = option.partition("=")
    one_line(capsys, f"option of {method}: {key} must be", 2,
             [*BASE, "--reference", "no.csv", "--incident", "no.csv", "--method", method,
              "--option", option])


def test_shapley_false_turns_shapley_off() -> None:
    pipelines, layout = load_pipelines(SPEC), load_layout(LAYOUT)
    reference, incident = pd.read_csv(DATA / "normal_0.csv"), pd.read_csv(DATA / "broken_app_0.csv")
    ranking = causal.localise(pipelines, reference, incident, layout=layout, bootstrap=0,
                              shapley=False)
    assert "shapley" not in ranking.top.evidence
