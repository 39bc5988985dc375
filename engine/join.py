"""Join state of one node: per (request, generation), which slots have delivered what.

Pure bookkeeping, no I/O and no clock of its own: the node processor offers arrivals and
asks for expiries. Semantics (Seldon Core v2, plus definitive absence):

- inputs ``inner``: every input slot must deliver; ``any``: the first slot whose projection
  is non-empty; ``outer``: what has arrived when all slots resolved or the window closed;
- triggers gate the node (their tensors are not passed): ``inner`` all present, ``any`` one
  present, ``outer`` one present when the window closes;
- a slot resolves as *absent* when its producer announced that it produced nothing for this
  request (it was skipped or failed), so that routed branches end at once, not by timeout;
- a node whose projected inputs are empty does not run (*skip*); an ``inner`` join still
  missing a partner when the window closes ends in a *timeout*.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from engine.compile import NodePlan
from engine.record import Record
from engine.spec import JoinType
from engine.tensors import Tensor

# (request id, generation, trace id): a request sent again with the same id but in a trace of
# its own (a retry after the client gave up) joins apart from the first attempt
Key = tuple[str, int, str]

UPSTREAM_FAILED = "upstream "  # how a skip caused by a failure upstream begins
_FAILED_SKIP = f"skipped: {UPSTREAM_FAILED}"
FIRE = "fire"
SKIP = "skip"
TIMEOUT = "timeout"
_PENDING = "pending"


@dataclass(slots=True)
class Outcome:
    kind: str  # FIRE | SKIP | TIMEOUT
    tensors: tuple[Tensor, ...] = ()
    records: tuple[Record, ...] = ()  # the data records it was made from
    reason: str = ""
    arrived_s: float = 0.0


def project(plan: NodePlan, arrivals: list[Record | None], only: int | None = None) -> list[Tensor]:
    out: list[Tensor] = []
    for i, slot in enumerate(plan.slots):
        record = arrivals[i]
        if record is None or record.kind != "data" or (only is not None and i != only):
            continue
        for pick in slot.input_picks:
            pick.apply(record.tensors, out)
    return out


def _inputs_status(plan: NodePlan, arrivals: list[Record | None], closing: bool) -> tuple[str, int | None]:
    """(status, slot index for ``any``) of the inputs join."""
    join = plan.inputs_join
    idx = [i for i, s in enumerate(plan.slots) if s.input_picks]
    if not idx:
        return FIRE, None
    resolved = [arrivals[i] is not None for i in idx]
    if join is JoinType.ANY:
        for i in idx:
            rec = arrivals[i]
            if rec is not None and rec.kind == "data" and any(
                p.present(rec.tensors) for p in plan.slots[i].input_picks
            ):
                return FIRE, i
        return (SKIP if all(resolved) else (TIMEOUT if closing else _PENDING)), None
    if join is JoinType.INNER:
        if any(arrivals[i] is not None and arrivals[i].kind != "data" for i in idx):
            return SKIP, None
        if all(resolved):
            return FIRE, None
        return (TIMEOUT if closing else _PENDING), None
    if all(resolved) or closing:  # outer
        return FIRE, None
    return _PENDING, None


def _trigger_status(plan: NodePlan, arrivals: list[Record | None], closing: bool) -> str:
    states: list[bool | None] = []
    for i, slot in enumerate(plan.slots):
        rec = arrivals[i]
        for pick in slot.trigger_picks:
            if rec is None:
                states.append(None)
            else:
                states.append(rec.kind == "data" and pick.present(rec.tensors))
    if not states:
        return FIRE
    join = plan.triggers_join
    if join is JoinType.INNER:
        if any(s is False for s in states):
            return SKIP
        return FIRE if all(states) else (TIMEOUT if closing else _PENDING)
    if any(states):
        return FIRE
    if all(s is not None for s in states) or (closing and join is JoinType.OUTER):
        return SKIP
    return TIMEOUT if closing else _PENDING


def decide(plan: NodePlan, arrivals: list[Record | None], closing: bool = False) -> Outcome | None:
    """The node's decision for one key, or None while it must keep waiting."""
    trig = _trigger_status(plan, arrivals, closing)
    inputs, only = _inputs_status(plan, arrivals, closing)
    if SKIP in (trig, inputs):
        return Outcome(SKIP, reason=absence_reason(arrivals))
    if TIMEOUT in (trig, inputs):
        missing = [plan.slots[i].origin for i, a in enumerate(arrivals) if a is None]
        return Outcome(TIMEOUT, reason=f"join window closed waiting for {', '.join(missing)}")
    if _PENDING in (trig, inputs):
        return None
    tensors = project(plan, arrivals, only)
    if not tensors and any(s.input_picks for s in plan.slots):
        return Outcome(SKIP, reason="projected inputs are empty")
    used = tuple(
        a for i, a in enumerate(arrivals)
        if a is not None and a.kind == "data" and (only is None or i == only or not plan.slots[i].input_picks)
    )
    return Outcome(FIRE, tuple(tensors), used)


def caused_by_failure(notice: str | None) -> bool:
    """Whether an absence notice's text (``error: ...``, ``skipped: <reason>``) stands for a
    failure: a node's own error, or a skip that one upstream caused. Skips keep saying so
    all the way down, so that an output stage knows an error record explains its skip."""
    return notice is not None and notice.startswith(("error", _FAILED_SKIP))


def absence_reason(arrivals: list[Record | None]) -> str:
    for a in arrivals:
        if a is not None and a.kind == "absent" and caused_by_failure(a.error):
            return f"{UPSTREAM_FAILED}{a.lineage.origin} failed"
    return "branch not taken"


class JoinTable:
    """Pending keys of one multi-slot node, oldest first, plus decided keys whose other
    slots may still deliver (a late partner of an ``any`` join, or of a window that closed):
    those are remembered until every slot delivered or a window passed, so that a late
    partner is dropped instead of starting a new join. A key decided with every slot
    delivered is forgotten at once: nothing more can come for it (duplicates after a crash
    are the processor's to drop), and remembering every request for a whole window would
    hold memory in proportion to the request rate times the window."""

    def __init__(self, plan: NodePlan) -> None:
        self.plan = plan
        self.pending: OrderedDict[Key, tuple[float, list[Record | None]]] = OrderedDict()
        self.decided: OrderedDict[Key, tuple[float, set[int]]] = OrderedDict()
        # In a cycle: slots whose records only ever arrive at generation 0 (the plan's
        # gen0_only); for a later generation they count as absent.
        self.gen0_only = plan.gen0_only

    def _remember(self, key: Key, arrivals: list[Record | None], now: float) -> None:
        waiting = {i for i, a in enumerate(arrivals) if a is None}
        if waiting:
            self.decided[key] = (now, waiting)

    def offer(self, key: Key, slot: int, record: Record, now: float) -> Outcome | None:
        late = self.decided.get(key)
        if late is not None:  # a late partner: drop it
            late[1].discard(slot)
            if not late[1]:
                del self.decided[key]
            return None
        entry = self.pending.get(key)
        if entry is None:
            entry = (now, [None] * len(self.plan.slots))
            if key[1] and self.gen0_only:
                notice = Record(record.lineage, kind="absent",
                                error="skipped: only fed at generation 0")
                for i in self.gen0_only:
                    if i != slot:
                        entry[1][i] = notice
            self.pending[key] = entry
        arrivals = entry[1]
        if arrivals[slot] is not None:
            return None  # duplicate delivery
        arrivals[slot] = record
        outcome = decide(self.plan, arrivals)
        if outcome is not None:
            del self.pending[key]
            self._remember(key, arrivals, now)
            outcome.arrived_s = entry[0]
        return outcome

    def expire(self, now: float) -> list[tuple[Key, Outcome, list[Record | None]]]:
        """Close the windows that ended by ``now``; forget decisions older than a window."""
        window = self.plan.window_s
        closed = []
        while self.pending:
            key, (first, arrivals) = next(iter(self.pending.items()))
            if first + window > now:
                break
            del self.pending[key]
            outcome = decide(self.plan, arrivals, closing=True)
            assert outcome is not None
            outcome.arrived_s = first
            self._remember(key, arrivals, now)
            closed.append((key, outcome, arrivals))
        while self.decided:
            key, (when, _) = next(iter(self.decided.items()))
            if when + window > now:
                break
            del self.decided[key]
        return closed

    def next_deadline(self) -> float | None:
        deadlines = []
        if self.pending:
            deadlines.append(next(iter(self.pending.values()))[0] + self.plan.window_s)
        if self.decided:
            deadlines.append(next(iter(self.decided.values()))[0] + self.plan.window_s)
        return min(deadlines) if deadlines else None

    def __len__(self) -> int:
        return len(self.pending)
