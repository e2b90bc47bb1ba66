"""A failure's retry plan as the planner returns it (`timing.plan_timing`): its own module so that the
planner's helpers (card caps, exploration, the sequence judge) can use it without importing the
planner."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class TimingPlan:
    invoice_id: str
    retries: list[datetime]
    probabilities: list[float]
    recovery_probability: float
    category: str
    blocked: str | None = None
    notes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    contributions: dict[str, float] = field(default_factory=dict)
    # Exploration (recovery/explore.py): whether the first retry was moved at random, the share, the
    # propensity of these times under the mixed policy (None: not run), the planner's own times.
    explored: bool = False
    share: float = 0.0
    propensity: float | None = None
    greedy_retries: list[datetime] = field(default_factory=list)
    exploration_options: int = 0

    @property
    def score(self) -> int:
        return round(100 * self.recovery_probability)
