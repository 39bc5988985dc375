"""The ``flowcause`` command line. Sub-commands of other packages register themselves here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import select
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.compile import PipelineInvalid, compile_pipelines
from engine.engine import Engine, RequestError
from engine.lineage import parent_or_sampled
from engine.spec import Pipeline, SpecError, load_pipelines
from engine.steps import StepNotFound, StepRegistry
from engine.validate import validate

if TYPE_CHECKING:
    from tracing.config import Tracing

# The modules whose ``register(subparsers)`` adds sub-commands, and the commands each adds.
# Only the chosen command's module is imported: the others pull in the causal methods,
# Streamlit and the rest, seconds of start-up that ``validate``, ``run`` and ``serve`` do not
# need. Without a known command (``--help``, a typo) every module is, to list them all.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "tracing.cli": ("traces",),
    "causal.cli": ("localise",),
    "scenarios.cli": ("run-scenario", "suite"),
    "dashboard.cli": ("report", "dashboard"),
}


# the prefixes of tracing.config's variables: with none set and no --trace-* option, no tracing
TRACING_VARIABLES = ("FLOWCAUSE_TRACE_", "OTEL_TRACES_", "OTEL_SDK_")


def _load_all(files: list[str]) -> list[Pipeline]:
    pipelines: list[Pipeline] = []
    for f in files:
        pipelines += load_pipelines(Path(f))
    return pipelines


def cmd_validate(args: argparse.Namespace) -> int:
    """Each file's problems, then those across files (a pipeline defined in two), as ``run``
    and ``serve`` would load them together; ``OK`` for a file none of them is in."""
    loaded: list[Pipeline] = []
    problems: dict[str, list[str]] = {}
    for f in args.files:
        try:
            pipelines = load_pipelines(Path(f))
        except SpecError as exc:
            problems[f] = str(exc).splitlines()
            continue
        problems[f] = validate(pipelines)
        loaded += pipelines
    own = {p for found in problems.values() for p in found}
    across = [p for p in validate(loaded) if p not in own]
    status = 1 if across or own else 0
    for f in args.files:
        mine = [p for p in across if p.startswith(f"{Path(f)}:")]
        across = [p for p in across if p not in mine]
        found = problems[f] + mine
        print("\n".join(found) if found else f"{f}: OK")
    print(*across, sep="\n", end="\n" if across else "")  # problems no file line names
    return status


def _model_map(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        step, sep, model = pair.partition("=")
        if not sep or not step or not model:
            raise SystemExit(f"--model expects STEP=MODEL, got {pair!r}")
        out[step] = model
    return out


def cmd_run(args: argparse.Namespace) -> int:
    pipelines = _load_all(args.pipelines)
    compiled = compile_pipelines(pipelines)
    target = args.pipeline or pipelines[0].name
    where = "stdin" if args.input == "-" else args.input
    try:
        text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text()
        request = json.loads(text)
    except OSError as exc:
        raise RequestError(f"cannot read the request file {where}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request in {where} is not JSON: {exc}") from None
    requests = request if isinstance(request, list) else [request]
    registry = StepRegistry.from_module(args.models)
    # stdout is the answer: spans a console exporter prints go to stderr (the exporter takes
    # the stdout of when it is made), and in this process (a few requests need no other)
    with contextlib.redirect_stdout(sys.stderr):
        tracing = _tracing(args, process=False)
    if isinstance(tracing, int):
        return tracing

    async def main() -> list[dict[str, Any]]:
        async with Engine(compiled, registry, models=_model_map(args.model),
                          observers=[tracing.collector] if tracing else [],
                          sampler=tracing.sampler if tracing else parent_or_sampled) as engine:
            try:
                results = await asyncio.gather(*(
                    engine.infer(target, r, result_of=args.result_of, timeout=args.timeout)
                    for r in requests
                ))
            except TimeoutError:  # an OSError, reported by main; without a message of its own
                raise TimeoutError(f"timed out after {args.timeout:g} s waiting for pipeline "
                                   f"{args.result_of or target!r}") from None
        return [r.to_json() for r in results]

    try:
        out = asyncio.run(main())
    finally:
        if tracing is not None:  # everything recorded is in the store once this returns
            tracing.collector.close()
    print(json.dumps(out if isinstance(request, list) else out[0], indent=2))
    return 0 if all("error" not in o for o in out) else 1


def at_least_one(text: str) -> int:
    """A whole number, at least 1, as an argparse type (``serve --partitions``,
    ``--transaction-timeout-ms``, ``localise --top``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def request_id(text: str) -> str:
    """A request id, as an argparse type (``traces --request``, ``report --request``): an
    empty one would be taken for no ``--request`` at all."""
    if not text:
        raise argparse.ArgumentTypeError("a request id cannot be empty")
    return text


def _tracing(args: argparse.Namespace, process: bool | None) -> Tracing | None | int:
    """The tracing the ``--trace-*`` options and the environment ask for (None: none), or
    exit code 2 after a one-line error (a malformed setting, a tracing process that failed
    to start). ``process`` None leaves the choice to ``$FLOWCAUSE_TRACE_PROCESS``."""
    if not (args.trace_store or args.trace_exporter
            or any(name.startswith(TRACING_VARIABLES) for name in os.environ)):
        return None  # nothing asked: spare the start-up of importing OpenTelemetry and Arrow
    from tracing.config import TracingConfig, build

    try:
        return build(TracingConfig.from_env(store=args.trace_store, exporter=args.trace_exporter,
                                            process=process))
    except (ValueError, RuntimeError) as exc:
        print(f"flowcause: {exc}", file=sys.stderr)
        return 2


def _add_tracing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace-store", metavar="DIR",
                   help="record every step into this trace store (default: $FLOWCAUSE_TRACE_STORE)")
    p.add_argument("--trace-exporter", choices=("none", "console", "otlp"),
                   help="span exporter (default: $OTEL_TRACES_EXPORTER, else none); spans "
                        "are made for sampled requests ($OTEL_TRACES_SAMPLER, default "
                        "parentbased_always_on)")


def cmd_serve(args: argparse.Namespace) -> int:
    """Run pipelines on Kafka as one worker of a consumer group until SIGTERM/SIGINT, or
    until its transport stops working (exit 1)."""
    import logging
    import signal

    from aiokafka.errors import KafkaError

    from engine.kafka import KafkaTransport
    from engine.topics import Topics

    compiled = compile_pipelines(_load_all(args.pipelines),
                                 Topics(prefix=args.prefix, namespace=args.namespace))
    registry = StepRegistry.from_module(args.models)
    tracing = _tracing(args, process=args.trace_process or None)
    if isinstance(tracing, int):
        return tracing

    async def main() -> BaseException | None:
        transport = KafkaTransport(args.bootstrap, group_id=args.group, partitions=args.partitions,
                                   exactly_once=args.exactly_once, step_inputs=args.step_inputs,
                                   worker_id=args.worker_id,
                                   transaction_timeout_ms=args.transaction_timeout_ms)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with Engine(compiled, registry, transport=transport, models=_model_map(args.model),
                          results=False, observers=[tracing.collector] if tracing else [],
                          sampler=tracing.sampler if tracing else parent_or_sampled):
            print(f"serving {', '.join(compiled.pipelines)} on {args.bootstrap} "
                  f"(group {args.group}, {args.partitions} partitions)", flush=True)
            stopped = asyncio.create_task(stop.wait())
            failed = asyncio.create_task(transport.wait_failure())
            await asyncio.wait((stopped, failed), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            failure = None if not failed.done() else failed.result()
            failed.cancel()
            if failure is not None:
                logging.getLogger("engine.cli").error("the Kafka transport stopped working; "
                                                      "stopping the worker", exc_info=failure)
        print(f"stopped: {transport.stats}", flush=True)
        return failure

    try:
        failure = asyncio.run(main())
    except KafkaError as exc:  # cannot reach the broker, unusable topics: one line, no traceback
        print(f"flowcause: Kafka at {args.bootstrap}: {exc}", file=sys.stderr)  # names the class
        return 2
    finally:
        if tracing is not None:
            tracing.collector.close()
    if failure is not None:
        print(f"flowcause: the Kafka transport stopped working: {type(failure).__name__}: "
              f"{failure}", file=sys.stderr)
        return 1
    return 0


class _DefaultsShown(argparse.HelpFormatter):
    """Each option's help ends with its default, where it has one worth showing (not None,
    False or empty) and the text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (action.default in (None, False, [], argparse.SUPPRESS) or "default" in text
                or not action.option_strings and action.nargs != "?"):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class _Parser(argparse.ArgumentParser):
    """Every sub-command's parser shows the defaults (:class:`_DefaultsShown`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsShown)
        super().__init__(*args, **kwargs)


def _modules_for(argv: list[str] | None) -> list[str]:
    """The command modules to import for ``argv``: the one that adds its command, else all."""
    words = sys.argv[1:] if argv is None else argv
    command = next((w for w in words if not w.startswith("-")), None)
    owners = [m for m, commands in COMMAND_MODULES.items() if command in commands]
    own = {"validate", "run", "serve"}
    return [] if command in own else owners or list(COMMAND_MODULES)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv`` (default ``sys.argv[1:]``), with every command's options
    where that command is run."""
    parser = argparse.ArgumentParser(
        prog="flowcause",
        description="Causal fault localisation and observability for ML dataflow pipelines.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    p = sub.add_parser("validate", help="check Pipeline YAML files; prints OK or each problem")
    p.add_argument("files", nargs="+", metavar="FILE", help="Pipeline YAML files")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run pipelines on the embedded bus and print the output tensors")
    p.add_argument("pipelines", nargs="+", metavar="PIPELINE.yaml",
                   help="Pipeline YAML files (chained pipelines together)")
    p.add_argument("--models", required=True, metavar="MODULE",
                   help="module (dotted name or .py file) with the step code")
    p.add_argument("--input", required=True, metavar="REQUEST.json",
                   help="OIP v2 request JSON (or a list of them); - reads stdin")
    p.add_argument("--pipeline", help="pipeline to send to (default: the first one loaded)")
    p.add_argument("--result-of", metavar="PIPELINE",
                   help="print this (chained) pipeline's output instead of the target's")
    p.add_argument("--model", action="append", default=[], metavar="STEP=MODEL",
                   help="run MODEL's code for STEP (repeatable)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait per request")
    _add_tracing_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="run pipelines on Kafka as one worker of a consumer group")
    p.add_argument("pipelines", nargs="+", metavar="PIPELINE.yaml",
                   help="Pipeline YAML files (chained pipelines together)")
    p.add_argument("--models", required=True, metavar="MODULE",
                   help="module (dotted name or .py file) with the step code")
    p.add_argument("--model", action="append", default=[], metavar="STEP=MODEL",
                   help="run MODEL's code for STEP (repeatable)")
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port")
    p.add_argument("--group", default="flowcause", help="consumer group shared by the workers")
    p.add_argument("--partitions", type=at_least_one, default=4,
                   help="partitions of every topic (at least 1)")
    p.add_argument("--prefix", default="seldon", help="topic prefix")
    p.add_argument("--namespace", default="default", help="topic namespace")
    p.add_argument("--exactly-once", action="store_true", help="Kafka transactions per batch")
    p.add_argument("--worker-id", metavar="NAME",
                   help="with --exactly-once: a name unique in the group and kept across "
                        "restarts (e.g. a StatefulSet pod name); a restarted worker then aborts "
                        "its predecessor's open transaction at once (default: random)")
    p.add_argument("--transaction-timeout-ms", type=at_least_one, default=60000,
                   metavar="MS",
                   help="with --exactly-once: how long the broker keeps a dead worker's "
                        "transaction open (and read_committed readers waiting); must exceed "
                        "the longest poll")
    p.add_argument("--step-inputs", action="store_true",
                   help="also write each step's joined inputs to model.<step>.inputs (Seldon layout)")
    _add_tracing_options(p)
    p.add_argument("--trace-process", action="store_true",
                   help="build spans and write the store in a process of their own "
                        "(default: $FLOWCAUSE_TRACE_PROCESS)")
    p.set_defaults(func=cmd_serve)

    for name in _modules_for(argv):
        importlib.import_module(name).register(sub)
    return parser


def _stdout_unread() -> bool:
    """Whether standard output is a pipe nothing reads any more (``flowcause traces S | head``
    after ``head`` exited): polling a pipe's write end reports an error then. A
    BrokenPipeError from anything else (a socket, the tracing process's pipe) is a failure."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no file behind it (a test's capture)
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser(argv).parse_args(argv)
        code = int(args.func(args))
        sys.stdout.flush()  # a reader gone shows here, not at the interpreter's exit
        return code
    except BrokenPipeError as exc:
        if not _stdout_unread():
            print(f"flowcause: {exc}", file=sys.stderr)
            return 2
        # quietly, as a command killed by SIGPIPE; stdout goes to devnull so that the flush at
        # exit does not fail again (the advice of the Python docs, module signal)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # the shell's code for SIGPIPE
    except (SpecError, PipelineInvalid, RequestError, StepNotFound, OSError,
            json.JSONDecodeError) as exc:
        print(f"flowcause: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's code for SIGINT
        print("flowcause: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
