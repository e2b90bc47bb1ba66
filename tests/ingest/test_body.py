"""The bounded JSON parser of every webhook route (billops.ingest.body): what it refuses, with which
reason, and that everything else parses exactly as `json.loads` would."""

from __future__ import annotations

import inspect
import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billops.errors import WebhookRejected
from billops.ingest.body import nesting_depth, parse_json


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests arrays and objects more than 64 levels deep"),
        (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "more than 64 levels deep"),
        (b"[" * 200_000, "more than 64 levels deep"),  # unterminated: still no recursion
        (b"[" * 65 + b"]" * 65, "more than 64 levels deep"),
        ('{"a": 1}'.encode("utf-16"), "body is not UTF-8 (it looks like UTF-16 or UTF-32)"),
        ('{"a": 1}'.encode("utf-16-le"), "body is not UTF-8 (it looks like UTF-16 or UTF-32)"),
        ('{"a": 1}'.encode("utf-32"), "body is not UTF-8"),
        (b'\xef\xbb\xbf{"a": 1}', "byte-order mark"),
        (b'{"a": "caf\xe9"}', "body is not UTF-8 (invalid byte at offset 10)"),
        (b'{"a": "\xed\xa0\x80"}', "body is not UTF-8"),  # a surrogate encoded as UTF-8
        (b'{"id": "evt_\\ud800"}', "lone surrogate (\\ud800)"),
        (b'{"id": "\\udfffx"}', "lone surrogate (\\udfff)"),
        (b'{"k\\udc00": 1}', "lone surrogate"),
        (b'[["\\ud83d"]]', "lone surrogate"),
        (b'{"a": "\\u0000"}', "NUL character"),
        (b'{"a\\u0000": 1}', "NUL character"),
        (b'{"a": "x\x00y"}', "NUL character"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": 1e400}', "too large"),
        (b'{"a": ' + b"9" * 5000 + b"}", "not valid JSON: Exceeds the limit"),
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
    ],
)
def test_refused_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(WebhookRejected) as err:
        parse_json(body)
    assert err.value.status == 400 and reason in err.value.message


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"id": "\\ud83d\\ude00"}', {"id": "\U0001f600"}),  # a surrogate pair is one character
        (b'{"id": "\\\\ud800"}', {"id": "\\ud800"}),  # an escaped backslash, then text
        (b'{"a": "[[[[{{{{"}', {"a": "[[[[{{{{"}),  # brackets inside strings do not nest
        (b'{"a": "\\"[[["}', {"a": '"[[['}),  # nor after an escaped quote
        (b"[" * 64 + b"]" * 64, json.loads(b"[" * 64 + b"]" * 64)),
        ('{"name": "Ærø 東京"}'.encode(), {"name": "Ærø 東京"}),
        (b'{"a": 1.5e300, "b": -0.0}', {"a": 1.5e300, "b": -0.0}),
    ],
)
def test_accepted_as_json_loads_reads_it(body: bytes, value: Any) -> None:
    assert parse_json(body) == value


def test_depth_limit_is_a_parameter() -> None:
    assert parse_json(b"[[[1]]]", max_depth=3) == [[[1]]]
    with pytest.raises(WebhookRejected, match="more than 2 levels deep"):
        parse_json(b"[[[1]]]", max_depth=2)


def test_deep_bodies_are_refused_without_recursion(monkeypatch: pytest.MonkeyPatch) -> None:
    """The depth check is a loop, not recursion, and it runs before `json.loads` (which is never
    reached): with almost no stack left above this frame, bodies half a megabyte deep (closed,
    unterminated, inside objects) are still refused with a 400."""

    def not_reached(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("json.loads was called on a body that is too deep")

    monkeypatch.setattr(json, "loads", not_reached)
    bodies = (b"[" * 500_000, b"[" * 250_000 + b"]" * 250_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    depth = len(inspect.stack(0))
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 40)
    try:
        for body in bodies:
            with pytest.raises(WebhookRejected, match="levels deep"):
                parse_json(body)
    finally:
        sys.setrecursionlimit(old)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _has_bad_text(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_bad_text(k) or _has_bad_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_bad_text(v) for v in value)
    return False


@settings(max_examples=300, deadline=None)
@given(value=json_values, ascii_only=st.booleans())
def test_any_json_value_parses_back_or_is_refused_for_a_stated_reason(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # a raw lone surrogate cannot even be sent as UTF-8
        return
    assert nesting_depth(text, 1000) == _depth(value)
    if _has_bad_text(value):
        with pytest.raises(WebhookRejected, match=r"NUL character|lone surrogate"):
            parse_json(body)
    else:
        assert parse_json(body) == value
