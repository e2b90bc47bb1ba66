"""Recovery likelihood scorers. A scorer is a pure function from features to a 0–100 score with reasons.

`RulesScorer` (`rules-v1`) is the transparent fallback used when no trained model is configured: an
additive score whose every term is printed as a reason. The learned model (a later issue) implements
the same `Scorer` protocol and its version is recorded with every decision, like this one's.

rules-v1, term by term (documented in docs/recovery.md):
  base by decline category: soft 78, try_later 82, needs_new_card 40, hard 5
  weak soft codes (generic_decline, do_not_honor, card_declined): −8; card_velocity_exceeded: −5
  each earlier attempt on this invoice: −8
  successful payments before: ≥6 +10, 3–5 +6, 1–2 +3, none −5
  failure share of earlier payments > 30 %: −10
  tenure > 365 days: +4; < 60 days: −6
  card expires within a month: −5; prepaid card: −10
  another usable stored payment method (not for hard declines): +8
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from billops.recovery.features import RecoveryFeatures

_BASE = {"soft": 78, "try_later": 82, "needs_new_card": 40, "hard": 5}
_WEAK_SOFT = {"generic_decline": -8, "do_not_honor": -8, "card_declined": -8, "card_velocity_exceeded": -5}


@dataclass(frozen=True)
class Score:
    value: int
    scorer: str
    reasons: list[str]
    contributions: dict[str, float] = field(default_factory=dict)


class Scorer(Protocol):
    version: str

    def score(self, f: RecoveryFeatures) -> Score: ...


class RulesScorer:
    version = "rules-v1"

    def score(self, f: RecoveryFeatures) -> Score:
        terms: list[tuple[str, float, str]] = []

        def add(name: str, points: float, why: str) -> None:
            if points:
                terms.append((name, points, why))

        base = _BASE[f.decline_category]
        add("decline_category", base, f"decline {f.decline_code} is {f.decline_category.replace('_', ' ')}")
        add("decline_code", _WEAK_SOFT.get(f.decline_code, 0), f"{f.decline_code} recovers less often")
        if f.attempt_number > 1:
            add(
                "attempt_number",
                -8 * (f.attempt_number - 1),
                f"already {f.attempt_number} attempts on this invoice",
            )
        s = f.past_successes
        if s >= 6:
            add("past_successes", 10, f"{s} successful payments before")
        elif s >= 3:
            add("past_successes", 6, f"{s} successful payments before")
        elif s >= 1:
            add("past_successes", 3, f"{s} successful payment(s) before")
        else:
            add("past_successes", -5, "no successful payment on record")
        total = f.past_successes + f.past_failures
        if total and f.past_failures / total > 0.3:
            add("past_failures", -10, f"{f.past_failures} of {total} earlier payments failed")
        if f.tenure_days is not None:
            if f.tenure_days > 365:
                add("tenure_days", 4, f"customer for {f.tenure_days // 365} year(s)")
            elif f.tenure_days < 60:
                add("tenure_days", -6, f"customer for only {f.tenure_days} days")
        if f.months_to_expiry is not None and 0 <= f.months_to_expiry <= 1:
            add("months_to_expiry", -5, "card expires within a month")
        if f.card_funding == "prepaid":
            add("card_funding", -10, "prepaid card")
        if f.other_usable_methods and f.decline_category != "hard":
            add("other_usable_methods", 8, f"{f.other_usable_methods} other usable payment method(s) on file")
        value = round(max(0.0, min(100.0, sum(p for _, p, _ in terms))))
        if f.never_retry:
            value = min(value, 10)
        ordered = [terms[0], *sorted(terms[1:], key=lambda t: -abs(t[1]))]
        reasons = [f"{why} ({'+' if p > 0 else ''}{p:g})" for _, p, why in ordered]
        return Score(
            value=value, scorer=self.version, reasons=reasons, contributions={n: p for n, p, _ in terms}
        )
