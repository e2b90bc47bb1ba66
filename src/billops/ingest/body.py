"""The one JSON parser of every webhook route: bounded, strict, and safe to store.

`parse_json(body, max_depth=…)` answers `WebhookRejected(400)` saying what is wrong, or the parsed
value; the parsing itself is `billops.jsontext`, shared with the /api bodies. The size limit is
applied earlier, while the body is read (`routes.read_limited`, 413). Then:

- strict UTF-8: a byte-order mark, UTF-16/UTF-32 and invalid UTF-8 bytes are refused (the platforms
  send UTF-8 without a BOM; `json.loads` on bytes would otherwise guess UTF-16 and accept it);
- nesting depth: brackets outside strings are counted in one linear pass before `json.loads` runs,
  so a deeply nested body is refused without recursion (no RecursionError, no stack to blow);
- no NUL character anywhere, raw or escaped (`\\u0000`): PostgreSQL cannot store it in text, and
  SQLite and PostgreSQL must accept the same events;
- no lone surrogate anywhere, escaped (`\\ud800`) included (raw ones are already invalid UTF-8): a
  lone surrogate cannot be encoded again, so it could be neither stored nor answered;
- `NaN`, `Infinity`, `-Infinity` and numbers too large for a float are refused (not JSON, and not
  storable in PostgreSQL's `jsonb`); integers longer than Python's limit (4,300 digits) too.
"""

from __future__ import annotations

from typing import Any

from billops.errors import WebhookRejected
from billops.jsontext import JsonRefused, bad_char, loads_text, nesting_depth
from billops.jsontext import decode_utf8 as _decode

__all__ = ["DEFAULT_MAX_DEPTH", "decode_utf8", "nesting_depth", "parse_json"]

DEFAULT_MAX_DEPTH = 64
NUL = "contains a NUL character (raw or escaped as \\u0000), which BillOps does not accept"


def _reject(why: str) -> WebhookRejected:
    return WebhookRejected(f"body {why}", status=400)


def decode_utf8(body: bytes) -> str:
    """The body as text, or a 400: strict UTF-8 without a byte-order mark."""
    try:
        return _decode(body)
    except JsonRefused as exc:
        raise _reject(exc.reason) from None


def _check_strings(value: Any) -> None:
    """No NUL and no lone surrogate in any key or string value (iterative: the depth is bounded, but no
    recursion is needed at all)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings: list[str] = [item]
        elif isinstance(item, dict):
            strings = list(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for s in strings:
            bad = bad_char(s)
            if bad is None:
                continue
            if bad == "\x00":
                raise _reject(NUL)
            raise _reject(f"contains a lone surrogate (\\u{ord(bad):04x}), which is not text")


def parse_json(body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse a webhook body under the rules above, or raise `WebhookRejected(400)` with the reason."""
    text = decode_utf8(body)
    if "\x00" in text:
        raise _reject(NUL)
    try:
        value = loads_text(text, max_depth=max_depth)
    except JsonRefused as exc:
        raise _reject(exc.reason) from None
    if "\\u" in text:  # only an escape can put a NUL or a surrogate in valid JSON
        _check_strings(value)
    return value
