"""The scored suite: every scenario of a directory, run with several seeds, each run ranked by
every method, and the table of how well each method did.

Per scenario and method: **top-1** / **top-3** (share of fault runs whose ground truth is the
first / among the first three suspects), **specificity** (share of no-fault control runs
for which the method said "no fault") and mean **seconds** per localisation. With
``requests``, methods that explain single requests also explain that many incident requests
of each run one at a time: **request top-1** (share of a fault run's requests whose
explanation names the ground truth first; bounded by the share of requests the fault
reached) and **request specificity** (share of a control's requests with "no fault"). The
``ALL`` rows pool every run of the suite. Each traffic run is recorded once and ranked by every
method, so the methods see identical traces.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from engine.steps import StepNotFound
from scenarios.localise import localise
from scenarios.result import ScenarioResult
from scenarios.runner import check, execute
from scenarios.spec import Scenario, ScenarioError, load_scenario

BUILTIN = Path(__file__).resolve().parent / "builtin"
ALL = "ALL"
SUMMARY_COLUMNS = ["scenario", "method", "runs", "top1", "top3", "specificity", "seconds",
                   "request_top1", "request_specificity"]


def discover(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no scenario files (*.yaml) in {directory}")
    return files


def prepare(files: Sequence[Path], healthy: int | None = None,
            incident: int | None = None) -> list[Scenario]:
    """Every file loaded and checked with the counts it will run with (and everything a run
    checks before it sends anything, :func:`scenarios.runner.check`), before the first run:
    a bad file is found before any run's time is spent. Names must be unique: they name the
    output directories and the table's rows. All problems are reported together."""
    scenarios: list[Scenario] = []
    problems: list[str] = []
    first: dict[str, Path] = {}
    for file in files:
        try:
            scenario = load_scenario(file).with_counts(healthy, incident)
            check(scenario)
        except (ScenarioError, StepNotFound) as exc:
            text = str(exc)
            problems.append(text if str(file) in text else f"{file}: {text}")
            continue
        if scenario.name in first:
            problems.append(f"{file}: scenario name {scenario.name!r} is also the name in "
                            f"{first[scenario.name]}: names in a suite must differ (they name "
                            "its output directories and table rows)")
            continue
        first[scenario.name] = file
        scenarios.append(scenario)
    if problems:
        raise ScenarioError("\n".join(problems))
    return scenarios


def run_suite(files: Sequence[Path] | Sequence[Scenario], methods: Sequence[str], repeats: int, out: Path, *,
              transport: str = "embedded", bootstrap: str | None = None,
              healthy: int | None = None, incident: int | None = None, requests: int = 0,
              log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
              results: list[ScenarioResult] | None = None,
              after_run: Callable[[list[ScenarioResult]], None] | None = None,
              ) -> list[ScenarioResult]:
    """Run every scenario ``repeats`` times (seeds: the scenario's seed + 0, 1, ...), and
    rank each run with every method (and explain ``requests`` of its incident requests one
    at a time with those that can).

    ``files`` are checked first, all of them (:func:`prepare`); scenarios already prepared
    are taken as they are. The results of each finished run (one per method)
    are appended to ``results`` (a new list if None) and ``after_run`` is called with it,
    so a caller keeps every finished run if a later one fails or is interrupted."""
    scenarios = ([f for f in files if isinstance(f, Scenario)]
                 if all(isinstance(f, Scenario) for f in files)
                 else prepare([Path(f) for f in files if not isinstance(f, Scenario)], healthy,
                              incident))
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise ScenarioError("scenario names in a suite must differ: "
                            + ", ".join(sorted({n for n in names if names.count(n) > 1})))
    results = [] if results is None else results
    for scenario in scenarios:
        for repeat in range(repeats):
            seed = scenario.traffic.seed + repeat
            execution = asyncio.run(execute(scenario, out / scenario.name / f"seed-{seed}", seed=seed,
                                            transport=transport, bootstrap=bootstrap))
            line, run = [], []
            for method in methods:
                result = localise(execution, method, requests)
                run.append(result)
                outcome = ("ok" if result.correct else "miss") if result.control else (
                    f"#{result.rank}" if result.rank else "miss")
                if result.explained:
                    e = result.explained
                    outcome += (f", {e['quiet']}/{e['requests']} requests quiet" if result.control
                                else f", {e['named']}/{e['requests']} requests named")
                line.append(f"{method} {outcome} ({result.seconds:.2f} s)")
            results.extend(run)  # a run counts once every method has ranked it
            log(f"{scenario.name} seed {seed} ({execution.rate:,.0f} req/s): " + ", ".join(line))
            if after_run is not None:
                after_run(results)
    return results


def _mean(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None


def _share(hits: pd.Series, counts: pd.Series) -> float | None:
    return float(hits.sum() / counts.sum()) if counts.sum() else None


def summarise(results: Sequence[ScenarioResult]) -> pd.DataFrame:
    """One row per (scenario, method), then one ``ALL`` row per method."""
    runs = runs_frame(results)
    rows = []
    groups = [*runs.groupby(["scenario", "method"], sort=False),
              *(((ALL, m), g) for m, g in runs.groupby("method", sort=False))]
    for (scenario, method), g in groups:
        faults, controls = g[~g["control"]], g[g["control"]]
        rows.append({"scenario": scenario, "method": method, "runs": len(g),
                     "top1": _mean(faults["hit1"].astype(float)),
                     "top3": _mean(faults["hit3"].astype(float)),
                     "specificity": _mean(controls["no_fault"].astype(float)),
                     "seconds": _mean(g["seconds"]),
                     "request_top1": _share(faults["requests_named"], faults["requests_explained"]),
                     "request_specificity": _share(controls["requests_quiet"],
                                                   controls["requests_explained"])})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


RUN_COLUMNS = ["scenario", "seed", "method", "transport", "control", "ground_truth",
               "top_suspect", "rank", "hit1", "hit3", "no_fault", "seconds",
               "requests_per_second", "requests_explained", "requests_named", "requests_quiet"]


def runs_frame(results: Sequence[ScenarioResult]) -> pd.DataFrame:
    """One row per localisation."""
    return pd.DataFrame([{
        "scenario": r.scenario, "seed": r.seed, "method": r.method, "transport": r.transport,
        "control": r.control, "ground_truth": ";".join(r.ground_truth),
        "top_suspect": r.suspects[0]["name"] if r.suspects else "", "rank": r.rank,
        "hit1": bool(r.hit(1)), "hit3": bool(r.hit(3)), "no_fault": r.no_fault,
        "seconds": r.seconds, "requests_per_second": r.requests.get("per_second"),
        "requests_explained": r.explained.get("requests", 0),
        "requests_named": r.explained.get("named", 0),
        "requests_quiet": r.explained.get("quiet", 0),
    } for r in results], columns=RUN_COLUMNS)


def format_table(summary: pd.DataFrame) -> str:
    def cell(v: object, kind: str) -> str:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return "-"
        return f"{v:.3f}" if kind == "share" else f"{v:.2f}" if kind == "seconds" else str(v)

    header = ["scenario", "method", "runs", "top-1", "top-3", "specificity", "s/localisation",
              "request top-1", "request specificity"]
    kinds = ["text", "text", "text", "share", "share", "share", "seconds", "share", "share"]
    rows = [[cell(r[c], k) for c, k in zip(SUMMARY_COLUMNS, kinds, strict=True)]
            for r in summary.to_dict("records")]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths,
                                                                                          strict=True)))
    out = [line, "-" * len(line)]
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous and row[0] == ALL:
            out.append("-" * len(line))
        previous = row[0]
        out.append("  ".join(v.ljust(w) if i < 2 else v.rjust(w)
                             for i, (v, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(out)


def write(results: Sequence[ScenarioResult], summary: pd.DataFrame, out: Path, *,
          partial: bool = False, planned: int | None = None) -> list[Path]:
    """``suite_runs.csv``, ``suite_summary.csv`` and ``suite.json`` (both plus every result).

    ``suite.json`` says whether the suite finished: ``partial`` (true while it runs, and
    after a failure or an interrupt), ``runs`` (traffic runs finished, each ranked by every
    method) and ``planned`` (runs the suite was to make). Each file is replaced whole, so
    an interrupt never leaves half a file."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "suite_runs.csv", out / "suite_summary.csv", out / "suite.json"]
    methods = len({r.method for r in results}) or 1
    doc = {"partial": partial, "runs": len(results) // methods, "planned": planned,
           "summary": json.loads(summary.to_json(orient="records")),
           "results": [r.to_json() for r in results]}
    texts = [runs_frame(results).to_csv(index=False), summary.to_csv(index=False),
             json.dumps(doc, indent=2, default=str) + "\n"]
    for path, text in zip(paths, texts, strict=True):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths
