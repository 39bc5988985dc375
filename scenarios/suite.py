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
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from scenarios.localise import localise
from scenarios.result import ScenarioResult
from scenarios.runner import execute
from scenarios.spec import load_scenario

BUILTIN = Path(__file__).resolve().parent / "builtin"
ALL = "ALL"
SUMMARY_COLUMNS = ["scenario", "method", "runs", "top1", "top3", "specificity", "seconds",
                   "request_top1", "request_specificity"]


def discover(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no scenario files (*.yaml) in {directory}")
    return files


def run_suite(files: Sequence[Path], methods: Sequence[str], repeats: int, out: Path, *,
              transport: str = "embedded", bootstrap: str | None = None,
              healthy: int | None = None, incident: int | None = None, requests: int = 0,
              log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
              ) -> list[ScenarioResult]:
    """Run every scenario ``repeats`` times (seeds: the scenario's seed + 0, 1, ...), and
    rank each run with every method (and explain ``requests`` of its incident requests one
    at a time with those that can)."""
    results: list[ScenarioResult] = []
    for file in files:
        scenario = load_scenario(file).with_counts(healthy, incident)
        for repeat in range(repeats):
            seed = scenario.traffic.seed + repeat
            execution = asyncio.run(execute(scenario, out / scenario.name / f"seed-{seed}", seed=seed,
                                            transport=transport, bootstrap=bootstrap))
            line = []
            for method in methods:
                result = localise(execution, method, requests)
                results.append(result)
                outcome = ("ok" if result.correct else "miss") if result.control else (
                    f"#{result.rank}" if result.rank else "miss")
                if result.explained:
                    e = result.explained
                    outcome += (f", {e['quiet']}/{e['requests']} requests quiet" if result.control
                                else f", {e['named']}/{e['requests']} requests named")
                line.append(f"{method} {outcome} ({result.seconds:.2f} s)")
            log(f"{scenario.name} seed {seed} ({execution.rate:,.0f} req/s): " + ", ".join(line))
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


def write(results: Sequence[ScenarioResult], summary: pd.DataFrame, out: Path) -> list[Path]:
    """``suite_runs.csv``, ``suite_summary.csv`` and ``suite.json`` (both plus every result)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "suite_runs.csv", out / "suite_summary.csv", out / "suite.json"]
    runs_frame(results).to_csv(paths[0], index=False)
    summary.to_csv(paths[1], index=False)
    doc = {"summary": json.loads(summary.to_json(orient="records")),
           "results": [r.to_json() for r in results]}
    paths[2].write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return paths
