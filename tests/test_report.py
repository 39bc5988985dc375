"""``flowcause report`` on a scenario run's trace store and on the reference CSVs: the files
it writes, checked against what ``causal.localise`` says on the same data."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pandas as pd
import pytest

import causal
from engine.cli import main
from engine.spec import load_pipelines
from tests.scenario_run import HEALTHY, INCIDENT, ROOT, expected_ranking, injected_step, result, run_scenario
from tracing.layout import load_layout
from tracing.store import TraceStore

SPEC = ROOT / "scenarios" / "pipelines" / "insurance_claims.yaml"
REFERENCE_DATA = ROOT / ".." / "shared" / "reference" / "insurance-claims" / "data"
LAYOUT = ROOT / "causal" / "layouts" / "insurance_claims.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_scenario(tmp_path_factory.mktemp("run"))


def table_after(html: str, heading: str) -> list[list[str]]:
    """The cells of the first table after the heading that starts with ``heading``."""
    section = html[html.index(f"<h2>{heading}"):]
    table = section[:section.index("</table>")]
    return [[unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", table) if "<td" in row]


def external_references(html: str) -> list[str]:
    """Everything in the page that would make a viewer fetch something, or is a URL."""
    found = re.findall(r"(?i)\b(?:https?|ftp|wss?|file):[^\s\"'<>)]*", html)
    found += [a for a in re.findall(r'(?i)\b(?:src|href|xlink:href|action)\s*=\s*"([^"]*)"', html)
              if not a.startswith(("data:", "#"))]
    found += [u for u in re.findall(r"url\(([^)]*)\)", html) if not u.strip("'\"").startswith("#")]
    found += re.findall(r"(?i)@import|<link\b|<iframe\b", html)
    return found


def test_html_report_is_self_contained_and_names_the_injected_step_first(store: Path,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    # on a scenario run's store the pipeline and the windows default to the run's
    assert main(["report", "--store", str(store), "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert external_references(html) == []
    assert html.count("data:image/png;base64,") >= 3  # evidence plots and the timeline, inline

    expected = expected_ranking(store)
    rows = table_after(html, "Ranked candidates")
    assert [(r[1], r[2]) for r in rows] == [(c.step, c.node) for c in expected.candidates]
    assert rows[0][1] == injected_step()
    verdict = unescape(re.search(r'id="verdict">(.*?)</p>', html).group(1))  # type: ignore[union-attr]
    assert verdict.startswith(f"Suspected step: {injected_step()} ")
    # the DAG marks it as the prime suspect
    assert f'<g class="node suspect" data-node="{injected_step()}">' in html
    # lineage of an incident request in which the suspect ran, every node of it
    lineage = table_after(html, "Lineage of one request")
    request = re.search(r"Request <code>([^<]+)</code>", html).group(1)  # type: ignore[union-attr]
    records = TraceStore(store).records(request)
    assert len(lineage) == len(records)
    assert any(r[1] == injected_step() and r[2] == "ok" for r in lineage)
    run = result(store)
    assert run["windows"]["incident"][0] in html  # the data section says which windows


def test_json_and_markdown_reports_with_explicit_windows(store: Path, tmp_path: Path) -> None:
    window = ["--store", str(store), "--pipeline", str(SPEC), "--reference", f"first:{HEALTHY}",
              "--incident", f"last:{INCIDENT}"]
    assert main(["report", *window, "--out", str(tmp_path / "r.json")]) == 0
    assert main(["report", *window, "--method", "flowcause", "--out", str(tmp_path / "r.md")]) == 0
    frame = TraceStore(store).frame("insurance_claims")
    expected = causal.localise(load_pipelines(SPEC), frame.iloc[:HEALTHY], frame.iloc[-INCIDENT:])

    data = json.loads((tmp_path / "r.json").read_text())
    assert [c["node"] for c in data["ranking"]["candidates"]] == [c.node for c in expected.candidates]
    assert data["data"]["reference"]["requests"] == HEALTHY
    assert data["data"]["incident"]["requests"] == INCIDENT
    assert next(iter(data["suspects"])) == expected.candidates[0].step
    top = data["evidence"][0]
    own = {c["column"] for c in top["columns"] if c["role"] == "own"}
    assert expected.candidates[0].node in own
    steps = {row["step"]: row for row in data["steps"]["incident"]}
    ran = frame.iloc[-INCIDENT:][f"{injected_step()}.ran"]
    assert steps[injected_step()]["runs"] == int((ran == 1).sum())

    md = (tmp_path / "r.md").read_text()
    first = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert first.split("|")[2].strip() == expected.candidates[0].step


def test_report_on_the_reference_csvs(tmp_path: Path) -> None:
    normal, broken = REFERENCE_DATA / "normal_0.csv", REFERENCE_DATA / "broken_app_0.csv"
    out = tmp_path / "csv.html"
    assert main(["report", "--pipeline", str(SPEC), "--reference", str(normal), "--incident", str(broken),
                 "--layout", str(LAYOUT), "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert external_references(html) == []
    expected = causal.localise(load_pipelines(SPEC), pd.read_csv(normal), pd.read_csv(broken),
                               layout=load_layout(LAYOUT))
    rows = table_after(html, "Ranked candidates")
    assert [r[2] for r in rows] == [c.node for c in expected.candidates]
    assert "Not available: lineage needs a trace store" in html


def test_report_refuses_what_it_cannot_do(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    out = str(tmp_path / "x.html")
    assert main(["report", "--store", str(store), "--reference", "soon..later", "--out", out]) == 2
    assert "neither an ISO datetime nor epoch seconds" in capsys.readouterr().err
    assert main(["report", "--store", str(store), "--reference", "2000-01-01..2000-01-02",
                 "--out", out]) == 1
    assert "reference window holds no requests" in capsys.readouterr().err
    assert main(["report", "--reference", "a.csv", "--incident", "b.csv", "--out", out]) == 2
    assert not Path(out).exists()


def test_a_report_on_windows_too_small_to_judge_says_so(tmp_path: Path) -> None:
    """Five reference requests: the ranking cannot judge, and the report's verdict says that
    rather than "No fault found"."""
    small = tmp_path / "normal_5.csv"
    pd.read_csv(REFERENCE_DATA / "normal_0.csv").iloc[:5].to_csv(small, index=False)
    out = tmp_path / "small.html"
    assert main(["report", "--pipeline", str(SPEC), "--reference", str(small), "--incident",
                 str(REFERENCE_DATA / "broken_app_0.csv"), "--layout", str(LAYOUT),
                 "--out", str(out)]) == 0
    html = unescape(out.read_text(encoding="utf-8"))
    assert "Not enough data to judge: no node could be compared" in html
    assert "No fault found" not in html
