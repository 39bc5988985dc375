"""``flowcause report`` (an offline root-cause report) and ``flowcause dashboard``."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from dashboard.data import Comparison, choose_target, from_csv, from_store, too_few
from dashboard.runs import scenario_run
from dashboard.settings import Settings
from dashboard.windows import parse_window
from engine.cli import request_id
from engine.spec import Pipeline, SpecError, load_pipelines
from engine.validate import first_problem, validate
from tracing.layout import load_layout
from tracing.store import TraceStore

APP = Path(__file__).with_name("app.py")
FORMATS = {".html": "html", ".htm": "html", ".json": "json", ".md": "md"}


class InvalidPipeline(ValueError):
    """A spec that loads but does not validate (as ``flowcause validate`` reports it)."""


def _load(files: list[str]) -> list[Pipeline]:
    """The pipelines of ``files``; raises SpecError or :class:`InvalidPipeline`."""
    pipelines = [p for f in files for p in load_pipelines(Path(f))]
    problems = validate(pipelines)
    if problems:
        raise InvalidPipeline(first_problem(problems))
    return pipelines


def comparison(args: argparse.Namespace) -> Comparison:
    """The two windows the options name. On a store written by ``flowcause run-scenario``
    (of a built-in scenario), the pipeline and the windows default to the run's."""
    if args.store:
        store = TraceStore(args.store)
        run = scenario_run(args.store)
        pipelines = _load(args.pipeline) or (run.pipelines() if run else [])
        reference = args.reference or (run.window("reference") if run else None)
        incident = args.incident or (run.window("incident") if run else None)
        if not pipelines or not reference or not incident:
            raise ValueError("--pipeline, --reference and --incident are needed (they default only on "
                             "the store of a built-in scenario run)")
        return from_store(store, pipelines, parse_window(reference), parse_window(incident),
                          args.name or (run.target if run else None))
    if not (args.pipeline and args.reference and args.incident and args.layout):
        raise ValueError("without --store: --pipeline, and --reference and --incident as CSV files "
                         "with their --layout")
    pipelines = _load(args.pipeline)
    pipeline = next(p for p in pipelines if p.name == choose_target(pipelines, args.name))
    return from_csv(pipeline, args.reference, args.incident, load_layout(args.layout), args.layout)


def render(report: Any, fmt: str) -> str:
    from dashboard.html_report import render_html  # see cmd_report
    from dashboard.markdown_report import render_markdown
    from dashboard.report import report_json

    if fmt == "json":
        return json.dumps(report_json(report), indent=2, default=str) + "\n"
    return render_markdown(report) if fmt == "md" else render_html(report)


def cmd_report(args: argparse.Namespace) -> int:
    # imported here: the causal module and matplotlib are slow to import, and every
    # other flowcause command would pay for them
    import causal
    from dashboard.html_report import verdict
    from dashboard.report import build_report, shift_methods

    if args.method not in causal.METHODS:
        print(f"flowcause report: unknown method {args.method!r} (one of {', '.join(causal.METHODS)})",
              file=sys.stderr)
        return 2
    if args.method not in shift_methods():  # a report compares two windows
        able = ", ".join(shift_methods())
        print(f"flowcause report: {args.method} explains single requests and cannot compare two "
              f"windows (use one of {able})", file=sys.stderr)
        return 2
    fmt = args.format or FORMATS.get(Path(args.out).suffix.lower(), "html")
    try:
        data = comparison(args)
    except ValueError as exc:  # bad options, windows, layouts or specs (a pipeline with a
        # loop, CyclicPipeline, refused before reading): the message says which
        print(f"flowcause report: {exc}", file=sys.stderr)
        return 2
    for name, frame in (("reference", data.reference), ("incident", data.incident)):
        problem = too_few(name, len(frame))
        if problem:
            print(f"flowcause report: {problem}", file=sys.stderr)
            return 1
    try:
        report = build_report(data, method=args.method, request_id=args.request)
    except ValueError as exc:  # causal.WindowError: windows the ranking cannot use; or a
        # causal graph it refuses (a cycle the spec checks missed): the message says why
        print(f"flowcause report: {exc}", file=sys.stderr)
        return 1
    if args.request is not None and data.store is not None and not report.lineage:
        # as flowcause traces --request: the store has no such request (exit 1, as a window
        # that cannot be ranked: the data, not the options, decide it)
        print(f"flowcause report: no records for request {args.request!r} in the store", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report, fmt), encoding="utf-8")
    print(f"{out}: {verdict(report)} [{report.ranking.method}; {len(data.reference)} reference, "
          f"{len(data.incident)} incident requests]")
    return 0


def dashboard_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line. Usage statistics are off: they would be sent to a
    server on the internet."""
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.address", args.host, "--server.port", str(args.port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal"]


def tcp_port(text: str) -> int:
    """A port to serve on, 1 to 65535, as an argparse type. Not 0: Streamlit would take a
    free port, but the address printed would say :0."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {port}")
    return port


def bind_problem(host: str, port: int) -> str | None:
    """Why Streamlit cannot serve on ``host:port`` (an address this machine does not have, a
    port in use), found by binding as Streamlit binds (SO_REUSEADDR; IPv6 for an address with
    a colon) and letting go; None if it can. A port taken between this and Streamlit's bind is
    still reported, by Streamlit."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:  # socket.gaierror too: a host name that does not resolve
            return f"cannot serve on {host}:{port}: {exc.strerror or exc}"
    return None


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Becomes the Streamlit server (``exec``): signals sent to this process reach it, and
    no server outlives a stopped ``flowcause dashboard``. The spec files are loaded, and the
    address bound once, first: a problem with either is reported here (exit 2) rather than
    on every page or in a Streamlit traceback."""
    try:
        _load(args.pipeline)
    except SpecError as exc:
        print(f"flowcause dashboard: {exc.one_line()}", file=sys.stderr)
        return 2
    except InvalidPipeline as exc:
        print(f"flowcause dashboard: {exc}", file=sys.stderr)
        return 2
    problem = bind_problem(args.host, args.port)
    if problem:
        print(f"flowcause dashboard: {problem}", file=sys.stderr)
        return 2
    settings = Settings(str(Path(args.store).resolve()), tuple(str(Path(p).resolve()) for p in args.pipeline))
    print(f"flowcause dashboard on http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    command = dashboard_command(args)
    os.execve(command[0], command, {**os.environ, **settings.to_env()})


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="write a root-cause report (HTML, Markdown or JSON) comparing two windows",
        description="Rank the steps that may cause the incident and write a self-contained report. "
                    "Windows: T0..T1 (ISO datetimes or epoch seconds, either side may be empty), "
                    "first:N, last:N or requests:A..B (requests by arrival, from 0); without "
                    "--store they are CSV files "
                    "in a reference layout (--layout). On the store of a built-in scenario run, "
                    "--pipeline and the windows default to the run's.")
    p.add_argument("--store", metavar="PATH", help="trace store directory")
    p.add_argument("--pipeline", action="append", default=[], metavar="P.yaml",
                   help="pipeline spec file (repeatable)")
    p.add_argument("--name", help="target pipeline (where traffic enters), when there are several")
    p.add_argument("--reference", metavar="WINDOW|CSV", help="the healthy requests")
    p.add_argument("--incident", metavar="WINDOW|CSV", help="the suspect requests")
    p.add_argument("--layout", metavar="LAYOUT.yaml", help="column layout of the CSV files")
    p.add_argument("--method", default="flowcause", help="ranking method (one of causal.METHODS)")
    p.add_argument("--request", metavar="ID", type=request_id,
                   help="request whose lineage the report shows (one the store holds)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="report file; its suffix (.html, .md, .json) sets the format")
    p.add_argument("--format", choices=["html", "json", "md"],
                   help="default: from the --out suffix, else html")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("dashboard", help="run the Streamlit dashboard on a trace store")
    p.add_argument("--store", required=True, metavar="PATH", help="trace store directory")
    p.add_argument("--pipeline", action="append", default=[], metavar="P.yaml",
                   help="pipeline spec file(s), for the DAG and root-cause pages (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=tcp_port, default=8501, help="port to serve on (1 to 65535)")
    p.set_defaults(func=cmd_dashboard)
