"""``flowcause run-scenario`` and ``flowcause suite``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from scenarios.spec import ScenarioError
from scenarios.transports import TRANSPORTS, TransportUnavailable

DEFAULT_METHOD = "flowcause"


def _methods(names: list[str]) -> list[str]:
    """``names`` if every one is a method that compares two windows, else exit with a message."""
    import causal

    usable = [m for m, cls in causal.METHODS.items() if "shift" in cls.modes]
    unknown = [m for m in names if m not in causal.METHODS]
    if unknown:
        raise SystemExit(f"flowcause: unknown method {', '.join(unknown)} (one of {', '.join(usable)})")
    single = [m for m in names if m not in usable]
    if single:
        raise SystemExit(f"flowcause: {', '.join(single)} explains single requests and cannot "
                         f"compare a scenario's two windows (use one of {', '.join(usable)})")
    return names


def _check_tracing_settings() -> None:
    """A malformed tracing variable (``FLOWCAUSE_TRACE_*``, ``OTEL_TRACES_*``) stops the command
    with its name before anything runs."""
    from tracing.config import TracingConfig

    try:
        TracingConfig.from_env()
    except ValueError as exc:
        print(f"flowcause: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _quiet_kafka_client() -> None:
    """aiokafka warns about every leader election while a run's fresh topics settle; only its
    errors matter here."""
    logging.getLogger("aiokafka").setLevel(logging.ERROR)


def cmd_run_scenario(args: argparse.Namespace) -> int:
    from scenarios import report
    from scenarios.localise import localise
    from scenarios.result import format_ranking
    from scenarios.runner import execute
    from scenarios.spec import load_scenario

    method = _methods([args.method])[0]
    _check_tracing_settings()
    _quiet_kafka_client()
    out: Path | None = None
    try:
        scenario = load_scenario(args.file).with_counts(args.healthy, args.incident)
        out = Path(args.out or Path("out") / scenario.name)
        execution = asyncio.run(execute(scenario, out, seed=args.seed, transport=args.transport,
                                        bootstrap=args.bootstrap, progress=not args.quiet))
    except (ScenarioError, TransportUnavailable) as exc:
        print(f"flowcause: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = (f"; {out / 'store'} holds the requests sent so far (no result.json or report.md)"
                 if out is not None else "")
        print(f"\nflowcause: interrupted{where}", file=sys.stderr)
        return 130
    phases = scenario.phases
    print(f"{scenario.name}: {execution.sent} requests ({phases.warmup} warm-up, {phases.healthy} "
          f"healthy, {phases.incident} incident) in {execution.seconds:.1f} s, "
          f"{execution.rate:,.0f} requests/s, {execution.errors} errors, {execution.lost} lost",
          file=sys.stderr)
    result = localise(execution, method)
    print(format_ranking(result))
    result_path, report_path = report.write(result, out, scenario.description)
    print(f"trace store {execution.store}, result {result_path}, report {report_path}")
    return 0


def cmd_suite(args: argparse.Namespace) -> int:
    from engine.steps import StepNotFound
    from scenarios import suite

    methods = _methods(args.methods or [DEFAULT_METHOD])
    if args.repeats < 1:
        print(f"flowcause: --repeats {args.repeats}: a suite runs each scenario at least once",
              file=sys.stderr)
        return 2
    if args.requests < 0:
        print(f"flowcause: --requests {args.requests}: the number of requests to explain is 0 "
              "or more", file=sys.stderr)
        return 2
    _check_tracing_settings()
    _quiet_kafka_client()
    out = Path(args.out)
    try:
        scenarios = suite.prepare(suite.discover(Path(args.dir)), args.healthy, args.incident)
    except (ScenarioError, StepNotFound, FileNotFoundError) as exc:
        print(f"flowcause: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nflowcause: interrupted while checking the scenarios; nothing ran", file=sys.stderr)
        return 130
    planned = len(scenarios) * args.repeats
    results: list[Any] = []

    def save(partial: bool) -> list[Path]:
        return suite.write(results, suite.summarise(results), out, partial=partial, planned=planned)

    def kept() -> str:
        return f"kept {len(results) // len(methods)} of {planned} runs in {out / 'suite.json'} " \
               "(marked partial)"

    try:
        suite.run_suite(scenarios, methods, args.repeats, out, transport=args.transport,
                        bootstrap=args.bootstrap, requests=args.requests, results=results,
                        after_run=lambda _: save(partial=True))
    except KeyboardInterrupt:
        save(partial=True)
        print(f"\nflowcause: interrupted; {kept()}", file=sys.stderr)
        return 130
    except (ScenarioError, TransportUnavailable) as exc:
        if results:
            save(partial=True)
        print(f"flowcause: {exc}" + (f"\nflowcause: {kept()}" if results else ""), file=sys.stderr)
        return 2
    summary = suite.summarise(results)
    print(suite.format_table(summary))
    paths = save(partial=False)
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transport", choices=TRANSPORTS, default="embedded",
                   help="embedded bus (default) or Apache Kafka")
    p.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="Kafka bootstrap servers (default: $FLOWCAUSE_KAFKA_BOOTSTRAP)")
    p.add_argument("--healthy", type=int, metavar="N", help="requests in the healthy phase "
                   "(default: the scenario's)")
    p.add_argument("--incident", type=int, metavar="N", help="requests in the incident phase")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("run-scenario", help="run a fault-injection scenario and localise "
                              "its fault")
    p.add_argument("file", metavar="FILE", help="scenario YAML")
    p.add_argument("--method", default=DEFAULT_METHOD, help="ranking method (causal.METHODS)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: out/<scenario>)")
    p.add_argument("--seed", type=int, help="traffic and fault seed (default: the scenario's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_run_scenario)

    p = subparsers.add_parser("suite", help="run every scenario of a directory and score the "
                              "methods")
    p.add_argument("dir", nargs="?", default=str(Path(__file__).resolve().parent / "builtin"),
                   metavar="DIR", help="scenario directory (default: the built-in scenarios)")
    p.add_argument("--methods", nargs="+", metavar="M", help="ranking methods (default: flowcause)")
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="runs per scenario, with seeds seed, seed+1, ...")
    p.add_argument("--out", default="out/suite", metavar="DIR", help="where runs and tables go")
    p.add_argument("--requests", type=int, default=0, metavar="N",
                   help="also explain N incident requests of each run one at a time, with the "
                   "methods that can (default: 0)")
    _common(p)
    p.set_defaults(func=cmd_suite)
