"""What a scenario run leaves in its output directory besides the trace store:
``result.json`` and a short Markdown report (a fuller HTML report can replace
:func:`markdown` without touching the runner)."""

from __future__ import annotations

import json
from pathlib import Path

from scenarios.result import ScenarioResult, label, percent, verdict

RESULT_FILE = "result.json"
REPORT_FILE = "report.md"


def markdown(result: ScenarioResult, description: str = "") -> str:
    r = result.requests
    truth = ", ".join(label(result, t) for t in result.ground_truth)
    note = result.load_correction
    lines = [
        f"# Scenario {result.scenario}",
        "",
        description.strip(),
        "",
        f"- seed {result.seed}, transport {result.transport}, method `{result.method}`",
        f"- pipelines: {', '.join(result.pipelines)} (traffic into {result.target})",
        f"- requests: {r.get('healthy')} healthy, then {r.get('incident')} with the faults; "
        f"{r.get('errors')} errors, {r.get('lost')} lost; {r.get('per_second')} requests/s",
        f"- reference window {' .. '.join(result.windows.get('reference', []))}",
        f"- incident window {' .. '.join(result.windows.get('incident', []))}",
        f"- ground truth: {truth or 'none (no-fault control)'}",
        f"- **{verdict(result)}** (localised in {result.seconds:.2f} s)",
        *([f"- {note}"] if note else []),
        "",
        "| rank | suspect | best candidate | score | confidence | |",
        "|---:|---|---|---:|---:|---|",
    ]
    for rank, s in enumerate(result.suspects, 1):
        mark = "ground truth" if s["name"] in result.ground_truth else ""
        lines.append(f"| {rank} | {label(result, s['name'])} | `{s['node']}` | {s['score']:.4g} | "
                     f"{percent(s['confidence'])} | {mark} |")
    lines += ["", "## Faults", ""]
    for f in result.faults:
        params = ", ".join(f"{k}={v}" for k, v in f["params"].items() if v not in (None, {}, []))
        lines.append(f"- `{f['type']}` on `{f['step']}` from incident request {f['start']}"
                     + (f" ({params})" if params else ""))
    return "\n".join(lines) + "\n"


def write(result: ScenarioResult, out: Path, description: str = "") -> tuple[Path, Path]:
    """Write ``result.json`` and ``report.md`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    result_path, report_path = out / RESULT_FILE, out / REPORT_FILE
    result_path.write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    report_path.write_text(markdown(result, description))
    return result_path, report_path
