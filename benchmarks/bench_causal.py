"""``make bench-causal``: top-1 accuracy and time of every shift method on synthetic pipelines.

For each size (about 10, 100 and 1000 nodes) it draws incidents with one injected fault
(:mod:`causal.synthetic`: a shifted input, an offset or flipped weight in a step, a moved
router threshold; always upstream of the pipeline output), ranks each with every method
that compares windows, and prints, side by side, how often the faulty step came first and
the seconds per incident. DoWhy runs in a child process per incident with a time budget
(``--dowhy-budget``): an incident it does not finish in time counts as a miss and its
time as "> budget"; once it runs out of time at a size, its remaining incidents of that
size are skipped. The speed ratio is DoWhy's mean time over ours, on the same incidents,
measured in this run.

Targets (issue): flowcause's top-1 >= DoWhy's and >= 50x faster; <= 5 s per incident at
100 nodes and <= 60 s at 1000 nodes, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import warnings
from dataclasses import dataclass, field

import causal
from causal.synthetic import make_incident

OURS = "flowcause"
DOWHY = "dowhy-shift"
BASELINES = ("zscore", "first-anomalous", "random")
TARGET_SECONDS = {100: 5.0, 1000: 60.0}
TARGET_SPEEDUP = 50.0
IMPORT_SLACK = 120.0  # seconds a DoWhy child may spend importing and drawing data


@dataclass
class Tally:
    hits: int = 0
    runs: int = 0
    seconds: list[float] = field(default_factory=list)
    timeouts: int = 0

    def add(self, hit: bool, seconds: float) -> None:
        self.hits += hit
        self.runs += 1
        self.seconds.append(seconds)

    def accuracy(self) -> str:
        return f"{self.hits}/{self.runs}" if self.runs else "-"

    def time(self, budget: float) -> str:
        if self.timeouts:
            return f"> {budget:.0f}"
        return f"{statistics.mean(self.seconds):.2f}" if self.seconds else "-"


def rank(n_nodes: int, seed: int, method: str, rows: int) -> tuple[str, str, float]:
    """(true step, top step, seconds) of ``method`` on incident ``seed`` of this size."""
    incident = make_incident(n_nodes, seed, rows)
    graph = causal.build_graph(incident.pipeline.spec, incident.reference.columns)
    ranking = causal.localise(graph, incident.reference, incident.incident, method=method)
    top = ranking.top.step if ranking.top and not ranking.no_fault else ""
    return incident.fault.step, top, ranking.seconds


def rank_dowhy(n_nodes: int, seed: int, rows: int, budget: float
               ) -> tuple[str, str, float] | None:
    """Like :func:`rank` for DoWhy, in a child process (its own session, so that DoWhy's
    worker processes go with it); None when over ``budget`` seconds."""
    cmd = [sys.executable, __file__, "--dowhy-child", f"{n_nodes},{seed},{rows}"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = child.communicate(timeout=budget + IMPORT_SLACK)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return None
    truth, top, seconds = json.loads(out.strip().splitlines()[-1])
    return None if seconds > budget else (truth, top, seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,100,1000", help="graph sizes (nodes)")
    p.add_argument("--incidents", default="10,4,2", help="incidents per size")
    p.add_argument("--rows", type=int, default=500, help="requests per window")
    p.add_argument("--dowhy-budget", type=float, default=600.0,
                   help="seconds DoWhy may take per incident")
    p.add_argument("--dowhy-child", help=argparse.SUPPRESS)  # NODES,SEED,ROWS: one DoWhy run
    args = p.parse_args(argv)
    if args.dowhy_child:
        n_nodes, seed, rows = (int(v) for v in args.dowhy_child.split(","))
        print(json.dumps(rank(n_nodes, seed, DOWHY, rows)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(s) for s in args.incidents.split(",")]
    methods = [OURS, DOWHY, *BASELINES]
    table: dict[int, dict[str, Tally]] = {}
    for n_nodes, count in zip(sizes, counts, strict=True):
        tallies = table.setdefault(n_nodes, {m: Tally() for m in methods})
        for seed in range(count):
            line = [f"{n_nodes} nodes, incident {seed}:"]
            for method in [OURS, *BASELINES]:
                truth, top, seconds = rank(n_nodes, seed, method, args.rows)
                tallies[method].add(top == truth, seconds)
                line.append(f"{method} {'hit' if top == truth else 'miss'} {seconds:.2f}s")
            if tallies[DOWHY].timeouts:
                line.append("dowhy skipped (out of time at this size)")
            else:
                result = rank_dowhy(n_nodes, seed, args.rows, args.dowhy_budget)
                if result is None:
                    tallies[DOWHY].timeouts += 1
                    tallies[DOWHY].runs += 1
                    line.append(f"dowhy > {args.dowhy_budget:.0f}s")
                else:
                    truth, top, seconds = result
                    tallies[DOWHY].add(top == truth, seconds)
                    line.append(f"dowhy {'hit' if top == truth else 'miss'} {seconds:.1f}s")
            print("  ".join(line), flush=True)
    print()
    print(report(table, methods, args.dowhy_budget))
    return 0


def report(table: dict[int, dict[str, Tally]], methods: list[str], budget: float) -> str:
    head = ["nodes"] + [f"{m} top-1 | s" for m in methods] + ["speed-up vs DoWhy"]
    rows = [head]
    verdicts = []
    for n_nodes, tallies in table.items():
        ours, dowhy = tallies[OURS], tallies[DOWHY]
        mine = statistics.mean(ours.seconds)
        if dowhy.timeouts:
            spent = dowhy.seconds + [budget] * dowhy.timeouts
            speedup = f"> {statistics.mean(spent) / mine:.0f}x"
        elif dowhy.seconds:
            speedup = f"{statistics.mean(dowhy.seconds) / mine:.0f}x"
        else:
            speedup = "-"
        rows.append([str(n_nodes)] + [f"{tallies[m].accuracy()} | {tallies[m].time(budget)}"
                                      for m in methods] + [speedup])
        if dowhy.runs:
            verdicts.append(f"{n_nodes} nodes: top-1 ours {ours.hits}/{ours.runs} vs DoWhy "
                            f"{dowhy.hits}/{dowhy.runs} "
                            f"({'ok' if ours.hits >= dowhy.hits else 'BELOW'}); speed-up "
                            f"{speedup} ({'ok' if _fast_enough(mine, dowhy, budget) else 'BELOW'}"
                            f" target {TARGET_SPEEDUP:.0f}x)")
        if n_nodes in TARGET_SECONDS:
            worst = max(ours.seconds)
            verdicts.append(f"{n_nodes} nodes: ours at most {worst:.2f} s per incident "
                            f"(target <= {TARGET_SECONDS[n_nodes]:.0f} s: "
                            f"{'ok' if worst <= TARGET_SECONDS[n_nodes] else 'MISSED'})")
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([*lines, "", *verdicts])


def _fast_enough(mine: float, dowhy: Tally, budget: float) -> bool:
    spent = dowhy.seconds + [budget] * dowhy.timeouts
    return statistics.mean(spent) / mine >= TARGET_SPEEDUP


if __name__ == "__main__":
    warnings.simplefilter("ignore")  # DoWhy and scikit-learn deprecation chatter
    sys.exit(main())
