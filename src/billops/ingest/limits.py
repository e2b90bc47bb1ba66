"""Limits on what an accepted webhook stores, checked before any transaction starts, so that SQLite
(which does not enforce column lengths) and PostgreSQL (which would fail mid-transaction) accept and
refuse exactly the same events, each refusal a 400 that names the field.

- the event id: 1–255 characters; the event type: 1–120 (the inbox's columns);
- every object id the mirror stores (`id` and each `…_id` of the customer, subscription, invoice,
  payment attempt and payment method): at most 255 characters, not blank;
- the other mirrored text columns: customer email ≤ 320, subscription status ≤ 40, decline code ≤ 80,
  card fingerprint ≤ 120;
- none of them may hold a control character (U+0000–U+001F, U+007F–U+009F) or a lone surrogate.

Lengths count characters (code points), as PostgreSQL's `varchar(n)` does.
"""

from __future__ import annotations

import re
from typing import Any

from billops.domain import CanonicalEvent
from billops.errors import WebhookRejected

EVENT_ID_MAX = 255
EVENT_TYPE_MAX = 120
OBJECT_ID_MAX = 255
_OTHER_LIMITS = {  # (object, field) -> the column's length
    ("customer", "email"): 320,
    ("subscription", "status"): 40,
}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_OBJECTS = ("customer", "subscription", "invoice", "attempt", "payment_method")


def check_text(field: str, value: str, max_chars: int) -> None:
    """One stored identifier: not blank, at most `max_chars` characters, no control character."""
    if not value.strip():
        raise WebhookRejected(f"{field} is blank", status=400)
    if len(value) > max_chars:
        raise WebhookRejected(
            f"{field} is {len(value)} characters long; at most {max_chars} are accepted", status=400
        )
    bad = _CONTROL.search(value)
    if bad is not None:
        raise WebhookRejected(
            f"{field} contains the control character U+{ord(bad.group()):04X}, which is not accepted",
            status=400,
        )


def check_event_id(event_id: str) -> None:
    check_text("event id", event_id, EVENT_ID_MAX)


def check_event(event: CanonicalEvent) -> None:
    """Every identifier of `event` that BillOps stores, or a 400 naming the first one out of bounds."""
    check_event_id(event.event_id)
    check_text("event type", event.event_type, EVENT_TYPE_MAX)
    for name in _OBJECTS:
        obj = getattr(event, name)
        if obj is None:
            continue
        for field, value in obj:
            if not isinstance(value, str):
                continue
            if field == "id" or field.endswith("_id"):
                check_text(f"{name}.{field}", value, OBJECT_ID_MAX)
            elif (name, field) in _OTHER_LIMITS:
                _optional(f"{name}.{field}", value, _OTHER_LIMITS[(name, field)])
        decline: Any = getattr(obj, "decline", None)
        if decline is not None:
            _optional(f"{name}.decline.code", decline.code, 80)
        card: Any = getattr(obj, "card", None)
        if card is not None and card.fingerprint is not None:
            _optional(f"{name}.card.fingerprint", card.fingerprint, 120)


def _optional(field: str, value: str, max_chars: int) -> None:
    """A column that may be empty: only its length and characters are checked."""
    if value:
        check_text(field, value, max_chars)
