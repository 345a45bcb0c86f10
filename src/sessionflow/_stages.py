"""Migration stages and the rules for moving between them. No I/O.

The stages follow LaunchDarkly's migration flags, with one fenced stage, ``cutover``,
between ``shadow`` and ``live`` (see docs/migration.md): while nodes roll from a stage where
the old store is authoritative to one where the new store is, writes go to both stores
synchronously and must pass both version checks, so an acknowledged write can never be
hidden behind a concurrent write to the other store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

Side = Literal["old", "new"]


class Stage(enum.StrEnum):
    """Where a migrating backend reads, writes and takes its answers from."""

    OFF = "off"
    DUALWRITE = "dualwrite"
    SHADOW = "shadow"
    CUTOVER = "cutover"
    LIVE = "live"
    RAMPDOWN = "rampdown"
    COMPLETE = "complete"

    @property
    def position(self) -> int:
        """The stage's position, from 0 (off) to 6 (complete)."""
        return ORDER.index(self)

    @property
    def authority(self) -> Side:
        """The store whose answer is the truth (in ``cutover``, the new store wins a tie)."""
        return "old" if self.position <= Stage.SHADOW.position else "new"

    @property
    def mirrors(self) -> bool:
        """True if writes are copied to the other store after the authority accepted them."""
        return self in (Stage.DUALWRITE, Stage.SHADOW, Stage.LIVE, Stage.RAMPDOWN)

    @property
    def fenced(self) -> bool:
        """True if writes go to both stores synchronously and must pass both checks."""
        return self is Stage.CUTOVER

    @property
    def compares(self) -> bool:
        """True if a sample of reads is compared with the other store."""
        return self in (Stage.SHADOW, Stage.LIVE)

    @property
    def single(self) -> bool:
        """True if only one store is used at all."""
        return self in (Stage.OFF, Stage.COMPLETE)

    def next(self) -> Stage | None:
        """Return the stage after this one, or None after ``complete``."""
        return ORDER[self.position + 1] if self.position + 1 < len(ORDER) else None

    def previous(self) -> Stage | None:
        """Return the stage before this one (None before ``off``; ``complete`` has no way back)."""
        if self is Stage.COMPLETE or self.position == 0:
            return None
        return ORDER[self.position - 1]


ORDER: tuple[Stage, ...] = tuple(Stage)


def parse_stage(text: str) -> Stage:
    """Return the stage named `text`; raise `ValueError` naming the valid stages otherwise."""
    try:
        return Stage(text)
    except ValueError:
        names = ", ".join(stage.value for stage in ORDER)
        raise ValueError(f"unknown stage {text!r}; stages are {names}") from None


@dataclass(frozen=True, slots=True)
class FleetState:
    """What the controller knows when it decides whether a stage change is safe."""

    stage: Stage
    """The stage in the control record."""
    process_stages: tuple[Stage, ...]
    """The stage each live process reported in its last heartbeat."""
    backfill_finished: bool
    repair_depth: int
    verification_passed: bool


def refusal(state: FleetState, target: Stage) -> str | None:  # noqa: PLR0911 - one per rule
    """Return why moving the fleet from `state.stage` to `target` is unsafe, or None.

    Moves go one stage at a time. Every live process must run the current stage before
    the next change (a rolling window spans at most two adjacent stages). Entering
    ``cutover`` needs a finished backfill, an empty repair queue and a passed verification.
    """
    current = state.stage
    if target is current:
        return f"the fleet is already at {current}"
    if target not in (current.next(), current.previous()):
        if current is Stage.COMPLETE:
            return "complete is final: the old store may already be gone"
        return f"{current} can only move to an adjacent stage, not to {target}"
    lagging = sorted({str(s) for s in state.process_stages if s is not current})
    if lagging:
        return f"processes not converged on {current}: some still run {', '.join(lagging)}"
    if target.position > current.position >= Stage.CUTOVER.position and state.repair_depth:
        return f"the repair queue holds {state.repair_depth} key(s); run migrate repair"
    if target is Stage.CUTOVER and current is Stage.SHADOW:
        if not state.backfill_finished:
            return "the backfill has not finished"
        if state.repair_depth:
            return f"the repair queue holds {state.repair_depth} key(s); run migrate repair"
        if not state.verification_passed:
            return "no passing verification since the backfill; run migrate verify"
    return None
