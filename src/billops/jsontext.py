"""Bounded, strict JSON from untrusted bytes: the one parser behind the webhook routes and the /api bodies.

`loads(data, max_depth=…)` answers the parsed value or raises `JsonRefused(reason)`, where the reason
completes "the body …" ("is not UTF-8 (…)", "nests arrays and objects more than N levels deep", …);
each caller turns it into its own 4xx. The rules:

- strict UTF-8: a byte-order mark, UTF-16/UTF-32 and invalid UTF-8 bytes are refused (`json.loads` on
  bytes would otherwise guess UTF-16 and accept it);
- nesting depth: brackets outside strings are counted in one linear pass before `json.loads` runs, so
  a deeply nested body is refused without recursion (no RecursionError, no stack to blow);
- `NaN`, `Infinity`, `-Infinity` and numbers too large for a float are refused (not JSON, and not
  storable in PostgreSQL's `jsonb`); integers longer than Python's limit (4,300 digits) too.

What a caller does about NUL characters and lone surrogates in strings differs (a webhook refuses the
body, the API reports each string as a validation problem); `bad_char(s)` finds them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# A JSON string, unrolled-loop form (linear, no backtracking); `\\.` also skips an escaped quote.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
_OPEN = frozenset("[{")


class JsonRefused(ValueError):
    """Untrusted JSON that BillOps does not accept; `reason` completes "the body …"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_utf8(data: bytes) -> str:
    """The bytes as text: strict UTF-8 without a byte-order mark, else `JsonRefused`."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise JsonRefused("starts with a UTF-8 byte-order mark (send UTF-8 without a BOM)")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:2]:
        raise JsonRefused("is not UTF-8 (it looks like UTF-16 or UTF-32)")
    try:
        return data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"is not UTF-8 (invalid byte at offset {exc.start})") from None


def nesting_depth(text: str, limit: int) -> int:
    """How deeply `text` nests arrays and objects, counting brackets outside strings; it stops counting
    as soon as the depth exceeds `limit` (and answers limit + 1). One linear pass: the strings and
    everything but brackets are removed by regular expressions, then the brackets are counted."""
    depth = deepest = 0
    for ch in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        depth += 1 if ch in _OPEN else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def loads_text(text: str, *, max_depth: int) -> Any:
    """Parse decoded text under the depth and number rules, or raise `JsonRefused`."""
    too_deep = f"nests arrays and objects more than {max_depth} levels deep"
    if nesting_depth(text, max_depth) > max_depth:
        raise JsonRefused(too_deep)
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:  # not expected after the depth check; never a 500 in any case
        raise JsonRefused(too_deep) from None
    except ValueError as exc:  # JSONDecodeError included
        raise JsonRefused(f"is not valid JSON: {str(exc)[:200]}") from None


def loads(data: bytes, *, max_depth: int) -> Any:
    """Decode (strict UTF-8) and parse (bounded depth, finite numbers), or raise `JsonRefused`."""
    return loads_text(decode_utf8(data), max_depth=max_depth)


def bad_char(s: str) -> str | None:
    """The first NUL character or lone surrogate in `s`, or None."""
    found = _BAD_CHAR.search(s)
    return None if found is None else found.group()
