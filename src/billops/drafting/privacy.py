"""Data minimisation for prompts.

The allow-list (`schema.DraftFacts`) is the real protection: names, emails, phone numbers, addresses,
card digits and customer free text are simply not fields of it. `redact` is the second belt: every
string that does enter a prompt is scrubbed for things that look like personal data, in case one of
our own strings (a reason from a model, a next step from a rule) ever carried some.
"""

from __future__ import annotations

import re
from typing import Any

from billops.drafting.schema import DraftFacts

# Order matters: URLs first (they may contain emails and digits), then emails, IBANs, international
# phone numbers (before cards: a +country number is as long as a card), cards, national phones.
_URL_QUERY = re.compile(r"\b(?:https?://|www\.)[^\s?#]*\?\S*", re.IGNORECASE)
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+"
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
# 12–19 digits, optionally grouped by single spaces or dashes (Luhn-valid or not: we do not care).
_CARD = re.compile(r"(?<![\w.,+])\d(?:[ -]?\d){11,18}(?![\w])")
# International (+…) numbers, and national numbers written in the usual groupings.
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?!\w)")
_PHONE = re.compile(
    r"(?<![\w])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\w)"
    r"|(?<![\w])0\d{2,4}[ .-]?\d{3,4}[ .-]?\d{3,4}(?!\w)"
)
_STREET_WORDS = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|square|sq|"
    "terrace|parkway|pkwy|highway|hwy|strasse|straße|rue|via|calle"
)
_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[a-z]?\s+(?:[A-Z][\w'.-]*\s+){{0,4}}(?:{_STREET_WORDS})\b\.?"
    rf"|\b(?:rue|via|calle)\s+(?:[\w'-]+\s+){{0,4}}\d{{1,5}}\b",
    re.IGNORECASE,
)

_RULES: list[tuple[re.Pattern[str], str]] = [
    (_URL_QUERY, "[redacted url]"),
    (_EMAIL, "[redacted email]"),
    (_IBAN, "[redacted iban]"),
    (_PHONE_INTL, "[redacted phone]"),
    (_CARD, "[redacted card]"),
    (_PHONE, "[redacted phone]"),
    (_ADDRESS, "[redacted address]"),
]


def redact(text: str) -> str:
    """Replace anything that looks like an email, phone number, card number, IBAN, street address or
    a URL with a query string by a `[redacted …]` marker."""
    for pattern, marker in _RULES:
        text = pattern.sub(marker, text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def prompt_payload(facts: DraftFacts) -> dict[str, Any]:
    """The facts as they enter a prompt: the allow-listed fields, every string redacted."""
    return {k: _scrub(v) for k, v in facts.model_dump(mode="json").items()}
