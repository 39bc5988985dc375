"""How ``flowcause dashboard`` tells the Streamlit script what to show.

A Streamlit script has no command line of its own, so the options travel in environment
variables: ``FLOWCAUSE_STORE`` (the trace store) and ``FLOWCAUSE_PIPELINES`` (pipeline spec
files, ``os.pathsep``-separated). This module imports nothing heavy: the CLI reads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

STORE_ENV, PIPELINES_ENV = "FLOWCAUSE_STORE", "FLOWCAUSE_PIPELINES"


@dataclass(frozen=True)
class Settings:
    store: str
    pipeline_files: tuple[str, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        files = tuple(f for f in env.get(PIPELINES_ENV, "").split(os.pathsep) if f)
        return cls(env.get(STORE_ENV, ""), files)

    def to_env(self) -> dict[str, str]:
        return {STORE_ENV: self.store, PIPELINES_ENV: os.pathsep.join(self.pipeline_files)}
