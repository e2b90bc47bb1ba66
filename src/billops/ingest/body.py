"""The one JSON parser of every webhook route: bounded, strict, and safe to store.

`parse_json(body, max_depth=…)` answers `WebhookRejected(400)` saying what is wrong, or the parsed
value. The size limit is applied earlier, while the body is read (`routes.read_limited`, 413). Then:

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

import json
import math
import re
from typing import Any

from billops.errors import WebhookRejected

DEFAULT_MAX_DEPTH = 64

# A JSON string, unrolled-loop form (linear, no backtracking); `\\.` also skips an escaped quote.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
_OPEN = frozenset("[{")
NUL = "contains a NUL character (raw or escaped as \\u0000), which BillOps does not accept"


def _reject(why: str) -> WebhookRejected:
    return WebhookRejected(f"body {why}", status=400)


def decode_utf8(body: bytes) -> str:
    """The body as text, or a 400: strict UTF-8 without a byte-order mark."""
    if body.startswith(b"\xef\xbb\xbf"):
        raise _reject("starts with a UTF-8 byte-order mark (send UTF-8 without a BOM)")
    if body.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in body[:2]:
        raise _reject("is not UTF-8 (it looks like UTF-16 or UTF-32)")
    try:
        return body.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise _reject(f"is not UTF-8 (invalid byte at offset {exc.start})") from None


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
            bad = _BAD_CHAR.search(s)
            if bad is None:
                continue
            if bad.group() == "\x00":
                raise _reject(NUL)
            raise _reject(f"contains a lone surrogate (\\u{ord(bad.group()):04x}), which is not text")


def parse_json(body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse a webhook body under the rules above, or raise `WebhookRejected(400)` with the reason."""
    text = decode_utf8(body)
    if "\x00" in text:
        raise _reject(NUL)
    if nesting_depth(text, max_depth) > max_depth:
        raise _reject(f"nests arrays and objects more than {max_depth} levels deep")
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:  # not expected after the depth check; never a 500 in any case
        raise _reject(f"nests arrays and objects more than {max_depth} levels deep") from None
    except ValueError as exc:
        raise _reject(f"is not valid JSON: {str(exc)[:200]}") from None
    if "\\u" in text:  # only an escape can put a NUL or a surrogate in valid JSON
        _check_strings(value)
    return value
