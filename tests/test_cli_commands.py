"""The command table of ``flowcause``: each command's module is imported only when that
command runs, and every command shows its options' defaults."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import COMMAND_MODULES, build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_names_the_commands_each_module_registers() -> None:
    for module, commands in COMMAND_MODULES.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert tuple(sub.choices) == commands, module


def test_validate_imports_none_of_the_other_commands_modules() -> None:
    code = ("import sys; from engine.cli import main; "
            f"assert main(['validate', {str(ROOT / 'examples/scoring/pipeline.yaml')!r}]) == 0; "
            "print(sorted(m for m in ('causal', 'dashboard', 'scenarios', 'streamlit', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    assert out.strip().endswith("[]")


@pytest.mark.parametrize("command", ["traces", "localise", "suite", "dashboard"])
def test_each_command_parses_with_only_its_module(command: str) -> None:
    parser = build_parser([command, "--help"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert command in sub.choices
    assert set(sub.choices) >= {"validate", "run", "serve"}


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser(["serve", "--help"]).parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "topic prefix (default: seldon)" in text
    assert "(default: 4)" in text and "(default: None)" not in text
