"""Trace stores written by ``flowcause run-scenario``: the run's ``result.json`` beside the
store says which windows were healthy and faulty, the target pipeline and the scenario, so
a report or the dashboard on such a store needs no other option."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import scenarios
from engine.spec import Pipeline
from scenarios.report import RESULT_FILE
from scenarios.spec import load_scenario

BUILTIN = Path(scenarios.__file__).parent / "builtin"


@dataclass(frozen=True)
class ScenarioRun:
    result: dict[str, Any]  # result.json

    @property
    def target(self) -> str:
        return str(self.result["target"])

    def window(self, name: str) -> str:
        """The run's ``reference`` or ``incident`` window as ``T0..T1``."""
        start, end = self.result["windows"][name]
        return f"{start}..{end}"

    def pipelines(self) -> list[Pipeline]:
        """The pipelines of the built-in scenario of this run's name ([] if none has it)."""
        for file in sorted(BUILTIN.glob("*.yaml")):
            doc = yaml.safe_load(file.read_text(encoding="utf-8"))
            if isinstance(doc, dict) and doc.get("name") == self.result.get("scenario"):
                return load_scenario(file).pipelines()
        return []


def scenario_run(store: str | Path) -> ScenarioRun | None:
    """The run that wrote ``store`` (``DIR/store`` with ``DIR/result.json``), if any."""
    path = Path(store).resolve().parent / RESULT_FILE
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return ScenarioRun(result) if isinstance(result, dict) and "windows" in result else None
