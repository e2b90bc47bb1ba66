"""Grounding: a draft may state only what the facts say.

`check(kind, output, facts)` returns human-readable problems (empty when the draft is grounded). They
are shown to the model on its one retry ("Your draft had these problems: …") and recorded when the
template draft replaces it. The checks are deliberately literal:

- every money amount (symbol or ISO code before/after, or a bare 2-decimal number) equals `facts.amount`;
- every date (month-name, ISO, numeric d/m/y or m/d/y) is `failed_date`, `next_retry_date` or a retry;
- every invoice reference ("invoice INV-0042", "#1234", tokens shaped like the invoice number) is
  `facts.invoice_number`; every "<Name> plan" is `facts.plan_name`;
- no URL at all, no `{…}` slot other than {first_name} and {card_update_link}, the card-update slot
  present where the customer must act, the email's tone equal to the decision's, an SMS ≤ 320 chars.

Strings we gave the model ourselves (reasons, next steps, why a retry is blocked, the plan and company
names) are grounded by
definition and removed before scanning, so a "0.35" inside a model reason is not taken for an amount.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel

from billops.domain.billing import ZERO_DECIMAL
from billops.drafting.schema import LINK_SLOT, SLOTS, DraftFacts, EmailDraft, SmsDraft

NEEDS_LINK = frozenset({"urgent_email", "card_update_email", "sms"})

_SYMBOLS: dict[str, set[str]] = {
    "US$": {"usd"},
    "CA$": {"cad"},
    "C$": {"cad"},
    "A$": {"aud"},
    "AU$": {"aud"},
    "NZ$": {"nzd"},
    "HK$": {"hkd"},
    "S$": {"sgd"},
    "R$": {"brl"},
    "$": {"usd", "cad", "aud", "nzd", "hkd", "sgd", "mxn", "clp", "cop", "ars", "twd"},
    "€": {"eur"},
    "£": {"gbp"},
    "¥": {"jpy", "cny"},
    "₹": {"inr"},
    "₩": {"krw"},
    "₺": {"try"},
    "₪": {"ils"},
    "zł": {"pln"},
    "kr": {"sek", "nok", "dkk", "isk"},
    "CHF": {"chf"},
}
_ISO = frozenset(
    [
        "USD",
        "EUR",
        "GBP",
        "JPY",
        "CAD",
        "AUD",
        "NZD",
        "CHF",
        "SEK",
        "NOK",
        "DKK",
        "ISK",
        "PLN",
        "CZK",
        "HUF",
        "RON",
        "BGN",
        "INR",
        "BRL",
        "MXN",
        "SGD",
        "HKD",
        "ZAR",
        "CNY",
        "KRW",
        "TRY",
        "ILS",
        "AED",
        "SAR",
        "RUB",
        "THB",
        "IDR",
        "MYR",
        "PHP",
        "TWD",
        "CLP",
        "COP",
        "PEN",
        "ARS",
        "NGN",
        "KES",
        "EGP",
        "VND",
        "UAH",
    ]
)
_SYM = "|".join(re.escape(s) for s in sorted(_SYMBOLS, key=len, reverse=True) if not s.isalpha())
_NUM = r"\d{1,3}(?:[,.' ]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_AMOUNT = re.compile(
    rf"(?P<pre>(?:{_SYM})|\b(?:[A-Z]{{3}})\b)\s?(?P<n1>{_NUM})(?![\d%])"
    rf"|(?<![\w.,:/-])(?P<n2>{_NUM})\s?(?P<post>(?:{_SYM})|\b[A-Z]{{3}}\b|kr\b|zł)"
    rf"|(?<![\w.,:/$€£¥-])(?P<n3>\d{{1,3}}(?:,\d{{3}})*\.\d{{2}}|\d+\.\d{{2}})(?![\d%]|\.\d)"
)

_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for m in names
}
_MON = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DATE_PATTERNS = [
    ("iso", re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b")),
    (
        "mdy",
        re.compile(
            rf"\b(?P<mon>{_MON})\.?\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(?P<y>\d{{4}})\b)?", re.I
        ),
    ),
    (
        "dmy",
        re.compile(
            rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mon>{_MON})\b\.?(?:,?\s+(?P<y>\d{{4}})\b)?",
            re.I,
        ),
    ),
    ("num", re.compile(r"(?<![\d/.-])(?P<a>\d{1,2})[/.](?P<b>\d{1,2})[/.](?P<y>\d{4}|\d{2})(?![\d/.])")),
]
_URL = re.compile(
    r"\b(?:https?://|ftp://|www\.)\S+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|io|co|app|dev)(?:/\S*)?\b", re.I
)
_SLOT = re.compile(r"\{[^{}]*\}")
_INVOICE_WORD = re.compile(
    r"\binvoices?\s+(?:number\s+|no\.?\s*|num\.?\s+|nr\.?\s+|ref(?:erence)?\s+)?#?\s*(?P<ref>[A-Za-z0-9][\w-]*)",
    re.I,
)
_HASH_REF = re.compile(r"(?<![\w&])#\s?(?P<ref>[A-Za-z0-9][\w-]*)")
_PLAN = re.compile(r"(?P<words>(?:\b[A-Z0-9][\w&+'.-]*\s+){1,4})[Pp]lan\b")
_GENERIC = {"your", "the", "this", "that", "our", "a", "an", "current", "same", "payment", "subscription",
            "billing", "installment", "instalment", "new", "my"}  # fmt: skip


def check(kind: str, output: BaseModel, facts: DraftFacts) -> list[str]:
    """Problems that make this draft ungrounded, in words a model (and a human) can act on."""
    text = "\n".join(_strings(output))
    errors: list[str] = []
    for m in _URL.finditer(text):
        errors.append(f"contains a web address ({m.group(0)!r}): write {LINK_SLOT} instead, never a URL")
    for m in _SLOT.finditer(text):
        if m.group(0) not in SLOTS:
            errors.append(
                f"contains the placeholder {m.group(0)!r}: only {{first_name}} and {LINK_SLOT} are allowed"
            )
    if kind in NEEDS_LINK and LINK_SLOT not in text:
        errors.append(f"does not contain {LINK_SLOT} where the customer should update their card")
    if isinstance(output, EmailDraft) and output.tone != facts.tone:
        errors.append(f"tone is {output.tone!r} but the decision asks for {facts.tone!r}")
    if isinstance(output, SmsDraft) and len(output.body) > 320:
        errors.append(f"the SMS is {len(output.body)} characters long; at most 320 are allowed")
    scan = _without_quoted_facts(text, facts)
    errors += _check_amounts(scan, facts)
    errors += _check_dates(scan, facts)
    errors += _check_invoices(scan, facts)
    errors += _check_plans(scan, facts)
    return list(dict.fromkeys(errors))


def _strings(value: object) -> list[str]:
    if isinstance(value, BaseModel):
        return [s for v in value.__dict__.values() for s in _strings(v)]
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _without_quoted_facts(text: str, facts: DraftFacts) -> str:
    quoted = [*facts.reasons, *facts.next_steps, facts.retry_blocked or "", facts.network_advice or ""]
    quoted += [facts.plan_name or "", facts.company or ""]  # "2 × Pro (at $24.50 / month)" is a name
    for q in sorted((q for q in quoted if len(q) >= 4), key=len, reverse=True):
        text = text.replace(q, " ")
    for slot in SLOTS:
        text = text.replace(slot, " ")
    return text


# ------------------------------------------------------------------ amounts


def _to_minor(number: str, currency: str) -> int | None:
    s = number.replace("'", "").replace(" ", "")
    if "," in s and "." in s:
        dec = "," if s.rfind(",") > s.rfind(".") else "."
        s = s.replace("." if dec == "," else ",", "").replace(",", ".")
    elif "," in s:
        head, _, tail = s.rpartition(",")
        s = s.replace(",", "") if len(tail) == 3 else f"{head.replace(',', '')}.{tail}"
    elif s.count(".") > 1 or (s.count(".") == 1 and len(s.rpartition(".")[2]) == 3):
        s = s.replace(".", "")
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    exp = 0 if currency.lower() in ZERO_DECIMAL else 2
    return int(value.scaleb(exp).to_integral_value())


def _check_amounts(text: str, facts: DraftFacts) -> list[str]:
    errors = []
    cur = facts.currency.lower()
    for m in _AMOUNT.finditer(text):
        marker = m.group("pre") or m.group("post")
        number = m.group("n1") or m.group("n2") or m.group("n3")
        if marker is not None and marker.isalpha() and marker.upper() not in _ISO and marker not in _SYMBOLS:
            continue  # three capitals that are not a currency ("UTC", "MAC")
        if marker is not None:
            currencies = _SYMBOLS.get(marker, {marker.lower()})
            if cur not in currencies:
                errors.append(
                    f"mentions the amount {m.group(0).strip()!r} in another currency than {facts.amount}"
                )
                continue
        if _to_minor(number, cur) != facts.amount_minor:
            errors.append(f"mentions the amount {m.group(0).strip()!r}, but the amount is {facts.amount}")
    return errors


# ------------------------------------------------------------------ dates


def _dates_in(text: str) -> list[tuple[str, list[tuple[int | None, int, int]]]]:
    """(the text of each date, its possible (year, month, day) readings)."""
    found: list[tuple[str, list[tuple[int | None, int, int]]]] = []
    taken: list[tuple[int, int]] = []
    for style, pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            g = m.groupdict()
            y = int(g["y"]) if g.get("y") else None
            if y is not None and y < 100:
                y += 2000
            if style == "num":
                a, b = int(g["a"]), int(g["b"])
                readings = [(y, b, a), (y, a, b)]
            elif style == "iso":
                readings = [(y, int(g["m"]), int(g["d"]))]
            else:
                readings = [(y, _MONTHS[g["mon"].lower()], int(g["d"]))]
            readings = [r for r in readings if _valid(r)]
            if readings:
                taken.append((m.start(), m.end()))
                found.append((m.group(0), readings))
    return found


def _valid(r: tuple[int | None, int, int]) -> bool:
    try:
        date(r[0] or 2000, r[1], r[2])
    except ValueError:
        return False
    return True


def _check_dates(text: str, facts: DraftFacts) -> list[str]:
    allowed: set[tuple[int | None, int, int]] = set()
    for given in [facts.failed_date, facts.next_retry_date, *facts.retries]:
        for _, readings in _dates_in(given or ""):
            allowed.update(readings)
    md = {(m, d) for _, m, d in allowed}
    names = ", ".join(x for x in [facts.failed_date, facts.next_retry_date, *facts.retries] if x)
    errors = []
    for shown, readings in _dates_in(text):
        ok = any((r in allowed) if r[0] is not None else ((r[1], r[2]) in md) for r in readings)
        if not ok:
            errors.append(f"mentions the date {shown!r}, which is not one of the given dates ({names})")
    return errors


# ------------------------------------------------------------------ invoices and plans


def _check_invoices(text: str, facts: DraftFacts) -> list[str]:
    want = facts.invoice_number.lstrip("#").lower()
    refs = [m.group("ref") for m in _INVOICE_WORD.finditer(text)] + [
        m.group("ref") for m in _HASH_REF.finditer(text)
    ]
    number = facts.invoice_number
    if re.search(r"[A-Za-z]", number) and re.search(r"\d", number):
        shape = "".join(r"\d+" if part.isdigit() else re.escape(part) for part in re.split(r"(\d+)", number))
        refs += re.findall(rf"(?<![\w-]){shape}(?![\w-])", text, flags=re.I)
    errors = []
    for ref in refs:
        ref = ref.rstrip(".-_")
        if any(c.isdigit() for c in ref) and ref.lower() != want:
            errors.append(f"mentions invoice {ref!r}, but the invoice number is {facts.invoice_number}")
    return errors


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def _check_plans(text: str, facts: DraftFacts) -> list[str]:
    want = _norm(facts.plan_name or "")
    want_short = want[: -len(" plan")] if want.endswith(" plan") else want
    errors = []
    for m in _PLAN.finditer(text):
        words = m.group("words").split()
        while words and words[0].lower() in _GENERIC:
            words = words[1:]
        if not words:
            continue
        said = _norm(" ".join(words))
        if want and (said in (want_short, want) or said.endswith(" " + want_short)):
            continue
        if want:
            errors.append(f"mentions the {' '.join(words)!r} plan, but the plan is {facts.plan_name!r}")
        else:
            errors.append(f"mentions the {' '.join(words)!r} plan, but no plan name was given")
    return errors
