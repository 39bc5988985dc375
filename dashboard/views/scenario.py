"""The scenario page: run a built-in scenario with a chosen fault and watch it being
localised while its incident traffic flows.

The run happens in a background thread of the dashboard's process (``scenarios.runner``),
writing its own trace store in a temporary directory. Starting another run in the same
session removes the previous run's directory (once its thread has ended), so a session keeps
one, the run it shows; those left are removed when the dashboard stops.

Every refresh ranks what that store holds so far — reference: the healthy phase, incident:
every request after it — through the same cached :func:`dashboard.context.report` as the
root-cause page; the warm-up requests a run starts with belong to neither window.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st
import yaml

import scenarios
from dashboard import context
from dashboard.dag import dag_svg, step_graph
from dashboard.html_report import verdict
from dashboard.report import graph_ranks, shift_methods
from dashboard.settings import Settings
from dashboard.views.common import show_verdict
from dashboard.views.rca import ranking_table
from scenarios.runner import Execution, execute
from scenarios.spec import INPUT_FAULTS, INPUTS, PARAMS, Fault, Scenario, load_scenario

BUILTIN = Path(scenarios.__file__).parent / "builtin"
MIN_INCIDENT = 30  # incident requests recorded before the first ranking
REFRESH_S = 1.5


@dataclass
class LiveRun:
    """A scenario run in a background thread."""

    scenario: Scenario
    out: Path
    method: str
    thread: threading.Thread | None = None
    execution: Execution | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def store(self) -> Path:
        return self.out / "store"

    @property
    def target(self) -> str:
        return self.scenario.target or self.scenario.pipelines()[0].name

    def start(self) -> LiveRun:
        def run() -> None:
            try:
                self.execution = asyncio.run(execute(self.scenario, self.out, progress=False))
            except Exception as exc:  # shown on the page; the dashboard keeps running
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, name=f"scenario-{self.scenario.name}", daemon=True)
        self.thread.start()
        return self

    def discard(self) -> None:
        """Removes the run's temporary directory, once its thread has ended (a run still
        going is left to finish in the background, then its directory is removed)."""
        def remove() -> None:
            self.done.wait()
            shutil.rmtree(self.out, ignore_errors=True)

        if self.done.is_set():
            remove()
        else:
            threading.Thread(target=remove, name=f"discard-{self.out.name}", daemon=True).start()


def fault_choice(scenario: Scenario) -> Fault | None:
    """The fault to inject, chosen on the page (default: the scenario's first fault)."""
    builtin = scenario.faults[0]
    steps = [INPUTS, *(s.name for p in scenario.pipelines() for s in p.steps)]
    left, middle = st.columns(2)
    step = left.selectbox("Faulty step", steps, index=steps.index(builtin.step))
    types = [t for t in PARAMS if step != INPUTS or t in INPUT_FAULTS]
    kind = middle.selectbox("Fault", types, index=types.index(builtin.type) if builtin.type in types else 0)
    same = step == builtin.step and kind == builtin.type
    default = yaml.safe_dump(builtin.params.model_dump(), default_flow_style=True).strip() if same else "{}"
    text = st.text_input("Fault parameters (YAML)", default, key=f"params-{step}-{kind}")
    try:
        return Fault.model_validate({"step": step, "type": kind, "params": yaml.safe_load(text) or {}})
    except (yaml.YAMLError, ValueError) as exc:
        st.error(f"fault: {exc}")
        return None


def live(run: LiveRun) -> None:
    """The run's progress and the current ranking."""
    scenario, target, phases = run.scenario, run.target, run.scenario.phases
    warmup, healthy = phases.warmup, phases.warmup + phases.healthy  # positions where phases end
    total = healthy + phases.incident
    if run.error:
        st.error(f"the run failed: {run.error}")
    if not run.store.is_dir():
        st.info("Starting…")
        return
    version = context.store_version(str(run.store))
    recorded = len(context.frame(str(run.store), target, "..", version))
    state = "finished" if run.done.is_set() else "running"
    st.progress(min(recorded / total, 1.0), text=f"{state}: {recorded} of {total} requests recorded")
    truth = ", ".join(scenario.ground_truth) or "none (control)"
    st.caption(f"store `{run.store}`; injected fault on: **{truth}**")
    incident = recorded - healthy
    if incident < MIN_INCIDENT:
        st.info(f"Waiting for incident traffic ({max(incident, 0)} of {MIN_INCIDENT} requests).")
        return
    try:
        report = context.report(str(run.store), target, tuple(scenario.pipelines()),
                                f"requests:{warmup}..{healthy}", f"requests:{healthy}..", run.method,
                                "", version)
    except ValueError as exc:  # windows or a pipeline the ranking cannot use: the message says why
        st.error(str(exc))
        return
    show_verdict(report, verdict(report))
    for spec in report.comparison.pipelines:
        st.image(dag_svg(step_graph(spec), ranks=graph_ranks(report, spec)), caption=spec.name)
    st.dataframe(ranking_table(report), hide_index=True)


def _live_fragment(run: LiveRun) -> None:
    """Re-runs itself every :data:`REFRESH_S` while the scenario runs; one full rerun when
    it has finished, so the page stops refreshing."""
    def body() -> None:
        live(run)
        if run.done.is_set() and st.session_state.get("scenario_refreshing"):
            st.session_state["scenario_refreshing"] = False
            st.rerun()

    refreshing = not run.done.is_set()
    st.session_state["scenario_refreshing"] = refreshing
    st.fragment(body, run_every=REFRESH_S if refreshing else None)()


def render(settings: Settings) -> None:
    st.title("Scenario")
    files = {f.stem: f for f in sorted(BUILTIN.glob("*.yaml"))}
    if not files:
        st.warning(f"No built-in scenarios in {BUILTIN}.")
        return
    name = context.option("scenario", list(files), "Built-in scenario", "scenario_file", sidebar=False)
    scenario = load_scenario(files[name])
    st.caption(scenario.description)
    fault = fault_choice(scenario)
    left, middle, right = st.columns(3)
    healthy = left.number_input("Healthy requests", 2, 100_000, scenario.phases.healthy, step=100,
                                key="scenario_healthy")
    incident = middle.number_input("Incident requests", MIN_INCIDENT, 100_000, scenario.phases.incident,
                                   step=100, key="scenario_incident")
    method = right.selectbox("Method", shift_methods(), key="scenario_method")
    if st.button("Run the scenario", type="primary", disabled=fault is None, key="scenario_start") \
            and fault is not None:
        chosen = scenario.model_copy(update={"faults": [fault]}).with_counts(int(healthy), int(incident))
        previous: Any = st.session_state.get("scenario_run")
        if previous is not None:
            previous.discard()  # one temporary store per session: the run shown
        out = Path(tempfile.mkdtemp(prefix=f"flowcause-{scenario.name}-"))
        atexit.register(shutil.rmtree, out, ignore_errors=True)  # the last one, when the server stops
        st.session_state["scenario_run"] = LiveRun(chosen, out, method).start()
    run: Any = st.session_state.get("scenario_run")
    if run is not None:
        st.subheader(f"Run of {run.scenario.name}")
        _live_fragment(run)
    else:
        st.info("Choose a fault and run the scenario: its traces go to a temporary store and the "
                "ranking below updates as the incident traffic arrives.")
