"""``flowcause run --trace-store/--trace-exporter``: the requests a run sends are recorded in
a trace store and get spans, and stdout stays the JSON answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tracing.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "scoring"
RUN = ["-m", "engine.cli", "run", str(EXAMPLE / "pipeline.yaml"),
       "--models", str(EXAMPLE / "steps.py"), "--input", str(EXAMPLE / "request.json")]


def _env(**extra: str) -> dict[str, str]:
    """This environment without tracing settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWCAUSE_TRACE_", "OTEL_"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_run_records_the_request_and_prints_spans_on_stderr(tmp_path: Path) -> None:
    store = tmp_path / "store"
    done = subprocess.run([sys.executable, *RUN, "--trace-store", str(store),
                           "--trace-exporter", "console"],
                          capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)  # the answer alone: the spans went elsewhere
    trace_id = answer["parameters"]["traceparent"].split("-")[1]
    spans = [line for line in done.stderr.splitlines() if '"trace_id"' in line]
    assert spans and all(f"0x{trace_id}" in line for line in spans)

    frame = TraceStore(store).frame("scoring")
    assert list(frame.index) == [answer["id"]]
    assert frame.loc[answer["id"], "score.status"] == "ok"
    assert frame.loc[answer["id"], "approve.status"] == "skipped"  # the router sent it to review
    records = TraceStore(store).records(answer["id"])
    assert set(records["trace_id"]) == {trace_id}


def test_run_without_tracing_imports_neither_opentelemetry_nor_arrow() -> None:
    code = ("import sys; from engine.cli import main; "
            f"assert main({RUN[2:]!r}) == 0; "
            "print(sorted(m for m in ('opentelemetry', 'pyarrow', 'tracing') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]")


def test_a_malformed_tracing_setting_stops_run_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, *RUN],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=_env(FLOWCAUSE_TRACE_STORE=str(tmp_path / "store"),
                                   FLOWCAUSE_TRACE_MAX_VALUES="many"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == ("flowcause: FLOWCAUSE_TRACE_MAX_VALUES='many' is not a valid "
                                   "integer >= 0")


def test_every_tracing_variable_asks_for_tracing() -> None:
    """The command line skips importing tracing when no variable of tracing.config is set: it
    tells them by prefix, which must cover every one."""
    from engine.cli import TRACING_VARIABLES
    from tracing.config import ENV

    assert all(variable.startswith(TRACING_VARIABLES) for variable, _, _ in ENV.values())
