"""``flowcause localise``: rank the steps behind a shift between two windows, or behind one
bad request (``--request``)."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

from causal import METHODS, explain_request, graph_for, localise, make_method
from causal.frames import WindowError, check_nodes, check_same_columns, is_csv, read_window
from causal.graph import GraphError, spec_problems
from engine.cli import at_least_one
from engine.spec import load_pipelines
from engine.validate import first_problem
from tracing.layout import LayoutError, load_layout

MODES = {"shift": "compare two windows", "anomaly": "explain one request (--request)"}


class OptionError(ValueError):
    """Options the command cannot run with: exit 2 (windows it cannot rank: exit 1)."""


class SpecProblem(ValueError):
    """Pipelines that cannot be localised (they do not validate, or have a cycle): exit 2,
    as ``flowcause run`` refuses pipelines that do not validate."""


def _options(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` method options; values are read as JSON when they parse (numbers,
    booleans), else kept as strings."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def check_method(method: str, mode: str, opts: dict[str, object]) -> None:
    """Refuse, before any window is read, a method that cannot do ``mode`` or does not take
    ``opts`` (a name it has no option of, or a value it rejects)."""
    cls = METHODS[method]
    if mode not in cls.modes:
        able = ", ".join(m for m, c in METHODS.items() if mode in c.modes)
        raise OptionError(f"{method} cannot {MODES[mode]}; it can only "
                          f"{' or '.join(MODES[m] for m in sorted(cls.modes))} "
                          f"(methods that can: {able})")
    known = inspect.signature(cls).parameters
    unknown = [key for key in opts if key not in known]
    if unknown:
        raise OptionError(f"{method} has no option {', '.join(unknown)} "
                          f"(its options: {', '.join(known)})")
    try:
        make_method(method, **opts)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"option of {method}: {exc}") from None


def cmd_localise(args: argparse.Namespace) -> int:
    try:
        return _localise(args)
    except WindowError as exc:  # the data, not the options: exit 1, as `flowcause report`
        raise SystemExit(f"flowcause: {exc}") from None
    except (OptionError, SpecProblem, GraphError, LayoutError) as exc:  # what was asked
        print(f"flowcause: {exc}", file=sys.stderr)
        return 2


def _localise(args: argparse.Namespace) -> int:
    opts = _options(args.option)
    check_method(args.method, "shift" if args.request is None else "anomaly", opts)
    pipelines = [p for f in args.pipeline for p in load_pipelines(Path(f))]
    problems = spec_problems(pipelines)  # as `flowcause validate` reports them
    if problems:
        raise SpecProblem(first_problem(problems))
    names = [p.name for p in pipelines]
    layout = load_layout(args.layout) if args.layout else None
    reference = read_window(args.reference, names, layout)
    incident = read_window(args.incident, names, layout)
    graph = graph_for(pipelines, reference, incident, layout=layout)
    if is_csv(args.reference) and is_csv(args.incident):  # after the plainer "no node" error
        check_nodes(graph.nodes, {"reference": reference, "incident": incident})
        check_same_columns(graph.nodes, (args.reference, reference), (args.incident, incident))
    row = None
    if args.request is not None:
        index = incident.index.astype(str)
        if args.request not in set(index):
            raise WindowError(f"request {args.request!r} is not in the incident window")
        row = incident[index == args.request].iloc[:1]
    try:
        ranking = (localise(graph, reference, incident, args.method, **opts) if row is None
                   else explain_request(graph, reference, row, args.method, **opts))
    except WindowError:
        raise
    except (TypeError, ValueError) as exc:  # numpy's LinAlgError is a ValueError, too
        # "option of" only for what make_method refuses (check_method); a method failing
        # while it runs may have tripped over the options given, else over the windows
        if opts:
            given = ", ".join(f"{k}={v!r}" for k, v in opts.items())
            raise OptionError(f"{args.method} failed with the options {given}: {exc}") from None
        raise WindowError(f"{args.method} could not rank these windows: "
                          f"{type(exc).__name__}: {exc}") from None
    if args.format == "json":
        print(ranking.to_json(indent=2))
    else:
        print(ranking.table(args.top))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "localise", help="rank the steps that caused a shift between two windows (or one "
        "bad request)", description="Rank the steps behind a shift between two windows, or "
        "behind one bad request (--request).")
    p.add_argument("--pipeline", action="append", required=True, metavar="P.yaml",
                   help="pipeline spec; repeat for chained pipelines")
    p.add_argument("--reference", required=True, metavar="REF",
                   help="normal traffic: CSV file(s) (glob allowed) or store:PATH@T0..T1")
    p.add_argument("--incident", required=True, metavar="INC",
                   help="traffic to explain, same forms as --reference")
    p.add_argument("--method", default="flowcause", choices=sorted(METHODS),
                   help="ranking method")
    p.add_argument("--layout", metavar="FILE",
                   help="column layout of the data (e.g. causal/layouts/insurance_claims.yaml)")
    p.add_argument("--request", metavar="ID",
                   help="explain this one incident request (its request id; for CSV its row "
                        "number from 0, counted over the window's files in name order)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="a table, or the ranking as JSON")
    p.add_argument("--top", type=at_least_one, default=10, metavar="N",
                   help="rows of the text table (at least 1)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, e.g. alpha=0.05 or num_samples=500 (repeatable)")
    p.set_defaults(func=cmd_localise)
