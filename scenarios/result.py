"""The outcome of one localisation of one scenario run, as JSON and as text."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from causal.result import load_note

TOP = 10


@dataclass
class ScenarioResult:
    scenario: str
    seed: int
    transport: str
    method: str
    target: str
    pipelines: list[str]
    ground_truth: list[str]  # suspects (steps; a pipeline's name: its inputs); empty for a control
    suspects: list[dict[str, Any]]  # distinct suspects, best first: name + its best candidate
    no_fault: bool  # the ranking's verdict
    rank: int | None  # of the ground truth among the suspects
    seconds: float  # localisation time
    ranking: dict[str, Any]  # Ranking.to_dict()
    faults: list[dict[str, Any]] = field(default_factory=list)
    requests: dict[str, Any] = field(default_factory=dict)
    windows: dict[str, list[str]] = field(default_factory=dict)
    store: str = ""
    # incident requests explained one at a time (scenarios.localise.explain_requests):
    # requests, named (ground truth first), quiet ("no fault"); empty when not asked for
    explained: dict[str, int] = field(default_factory=dict)

    @property
    def control(self) -> bool:
        return not self.ground_truth

    def hit(self, k: int) -> bool | None:
        """Ground truth within the top ``k`` suspects (None for a control)."""
        if self.control:
            return None
        return self.rank is not None and self.rank <= k

    @property
    def load_correction(self) -> str:
        """What the ranking said of its machine-load correction (:func:`load_note`)."""
        return load_note(self.ranking.get("details") or {})

    @property
    def correct(self) -> bool:
        """Top-1 hit, or for a control: "no fault" said."""
        return self.no_fault if self.control else bool(self.hit(1))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update({"control": self.control, "hit@1": self.hit(1), "hit@3": self.hit(3),
                    "correct": self.correct})
        return out


def percent(confidence: float | None) -> str:
    return "-" if confidence is None else f"{confidence:.0%}"


def label(result: ScenarioResult, name: str) -> str:
    """A suspect as a person reads it: a pipeline's name stands for its inputs."""
    return f"{name} (pipeline inputs)" if name in result.pipelines else name


def verdict(result: ScenarioResult) -> str:
    if result.ranking.get("judged") is False:  # neither a fault nor "no fault" was claimed
        return (f"{'not counted as correct' if result.control else 'missed'}: not enough data "
                "to judge")
    if result.control:
        return "correct: no fault found" if result.no_fault else "false alarm: a fault was reported"
    if result.no_fault:
        return "missed: the ranking found no fault"
    if result.rank is None:
        return "missed: ground truth not ranked"
    return f"ground truth ranked #{result.rank}" + (" (hit)" if result.rank == 1 else "")


def format_ranking(result: ScenarioResult, top: int = TOP) -> str:
    """The ranked suspects with their best candidate, ground truth marked."""
    lines = [f"{result.scenario} (seed {result.seed}, {result.transport}, method {result.method}, "
             f"{result.seconds:.2f} s):"]
    if result.no_fault:
        lines.append("  the ranking says: no fault")
    shown = result.suspects[:top]
    width = max([len(label(result, s["name"])) for s in shown] + [10])
    for rank, s in enumerate(shown, 1):
        mark = "  <- ground truth" if s["name"] in result.ground_truth else ""
        lines.append(f"  {rank:>2}. {label(result, s['name']):<{width}}  score {s['score']:>9.4g}  "
                     f"confidence {percent(s['confidence']):>4}  ({s['node']}){mark}")
    truth = ", ".join(label(result, t) for t in result.ground_truth) or "none (control)"
    lines.append(f"  ground truth: {truth}; {verdict(result)}")
    if result.load_correction:
        lines.append(f"  {result.load_correction}")
    return "\n".join(lines)
