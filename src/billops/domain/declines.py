"""Classify a decline into the canonical taxonomy using the versioned data file `declines.yaml`.

The most restrictive signal wins (hard > needs_new_card > try_later > soft), and the returned
`Decline.reason` says which rule decided, so a human can see why a payment is (not) retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from billops.domain.billing import Decline, DeclineCategory
from billops.errors import ConfigError

BUILTIN = Path(__file__).resolve().parent.parent / "data" / "declines.yaml"
_SEVERITY = {
    DeclineCategory.soft: 0,
    DeclineCategory.try_later: 1,
    DeclineCategory.needs_new_card: 2,
    DeclineCategory.hard: 3,
}


@dataclass(frozen=True)
class MacRule:
    category: DeclineCategory
    never_retry: bool = False
    retry_after_hours: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Taxonomy:
    version: str
    codes: dict[str, DeclineCategory]
    unknown_category: DeclineCategory
    advice_codes: dict[str, DeclineCategory]
    mastercard_advice: dict[str, MacRule]
    visa_category_1: frozenset[str] = field(default_factory=frozenset)

    def classify(
        self,
        code: str | None,
        *,
        raw_code: str | None = None,
        message: str | None = None,
        advice_code: str | None = None,
        network_advice_code: str | None = None,
        network_decline_code: str | None = None,
        network: str | None = None,
    ) -> Decline:
        code = (code or "").strip().lower() or "generic_decline"
        network = (network or "").lower() or None
        if code in self.codes:
            category = self.codes[code]
            reason = f"decline code {code} is {category.value}"
        else:
            category = self.unknown_category
            reason = f"decline code {code} is not in the taxonomy; treated as {category.value}"
        never_retry = category == DeclineCategory.hard
        retry_after: float | None = None

        def tighten(new: DeclineCategory, why: str) -> None:
            nonlocal category, reason
            if _SEVERITY[new] > _SEVERITY[category]:
                category, reason = new, why

        if advice_code:
            adv = self.advice_codes.get(advice_code.lower())
            if adv is not None:
                tighten(adv, f"advice code {advice_code} means {adv.value}")
        mac = (network_advice_code or "").strip().zfill(2) if network_advice_code else None
        if mac and (network in (None, "mastercard")) and mac in self.mastercard_advice:
            rule = self.mastercard_advice[mac]
            tighten(rule.category, f"Mastercard advice {mac}: {rule.note}")
            never_retry = never_retry or rule.never_retry
            retry_after = rule.retry_after_hours
        ndc = (network_decline_code or "").strip().upper() or None
        if ndc and network == "visa" and ndc in self.visa_category_1:
            tighten(DeclineCategory.hard, f"Visa category 1 response {ndc}: the issuer will never approve")
            never_retry = True
        if category == DeclineCategory.hard:
            never_retry = True
        return Decline(
            code=code,
            category=category,
            raw_code=raw_code if raw_code is not None else code,
            message=message,
            advice_code=advice_code,
            network_advice_code=mac,
            network_decline_code=ndc,
            network=network,
            retry_after_hours=retry_after,
            never_retry=never_retry,
            reason=reason,
            taxonomy_version=self.version,
        )


def parse_taxonomy(raw: Any, source: str) -> Taxonomy:
    try:
        codes: dict[str, DeclineCategory] = {}
        for cat, names in raw["codes"].items():
            category = DeclineCategory(cat)
            for name in names:
                if name in codes:
                    raise ConfigError(f"{source}: decline code {name} listed twice")
                codes[str(name)] = category
        macs = {
            str(k).zfill(2): MacRule(
                category=DeclineCategory(v["category"]),
                never_retry=bool(v.get("never_retry", False)),
                retry_after_hours=v.get("retry_after_hours"),
                note=str(v.get("note", "")),
            )
            for k, v in (raw.get("mastercard_advice") or {}).items()
        }
        return Taxonomy(
            version=str(raw["version"]),
            codes=codes,
            unknown_category=DeclineCategory(raw.get("unknown_category", "soft")),
            advice_codes={str(k): DeclineCategory(v) for k, v in (raw.get("advice_codes") or {}).items()},
            mastercard_advice=macs,
            visa_category_1=frozenset(str(c).upper() for c in raw.get("visa_category_1") or []),
        )
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"decline taxonomy {source}: {exc!r}") from exc


@lru_cache(maxsize=8)
def load_taxonomy(path: str = "builtin") -> Taxonomy:
    p = BUILTIN if path == "builtin" else Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"decline taxonomy {p}: not found") from exc
    return parse_taxonomy(raw, str(p))
