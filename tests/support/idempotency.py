"""The idempotency-key cache the platform stand-ins share (the Stripe proxy in front of localstripe, the
fake Chargebee and Zuora APIs; Recurly keeps no keys, so its fake has none).

One implementation of what the platforms document, parameterised by what differs between them:

| | Stripe | Chargebee | Zuora |
|---|---|---|---|
| header | `Idempotency-Key` | `chargebee-idempotency-key` | `Idempotency-Key` |
| methods | POST | POST | POST, PATCH |
| scope | the account (API key) | the site | the tenant |
| kept | 24 h | 30 min window (API docs) | 24 h |
| same key, other parameters | 400 `idempotency_error` | undocumented (fake: 400) | the saved answer |
| same key, other endpoint | 400 `idempotency_error` | separate key per endpoint | 422 |
| same key while the first runs | 409 `idempotency_key_in_use` | — | 409 |
| replay header | `Idempotent-Replayed: true` | `chargebee-idempotency-replayed: true` | none |

A server asks `begin(...)` before it executes a request: `Proceed` (execute it, then `finish` with the
answer, or `forget` when no answer may be saved), `Replay` (send the stored answer, nothing executes) or
`Conflict` (answer the platform's error). The clock is injectable (`ManualClock`) so tests can show a key
expiring without waiting a day.

    cache = IdempotencyCache(ttl_seconds=24 * 3600)
    match cache.begin("sk_test_1", "wf-1:pay:1", "POST", "/v1/invoices/in_1/pay", fingerprint):
        case Proceed() as p: ...; cache.finish(p, status, headers, body)
        case Replay(stored): ...
        case Conflict(reason): ...
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

STRIPE_TTL = 24 * 3600.0
CHARGEBEE_TTL = 30 * 60.0
ZUORA_TTL = 24 * 3600.0


def form_fingerprint(body: bytes) -> str:
    """Form-encoded parameters (Stripe, Chargebee) in a canonical order: the same parameters sent in
    another order are the same request."""
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return json.dumps(sorted(pairs))


def json_fingerprint(body: bytes) -> str:
    """A JSON body in canonical form (key order and spacing do not matter)."""
    if not body:
        return ""
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return body.decode("utf-8", "replace")


class ManualClock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Stored:
    """The first answer given for a key: replayed as it was."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class Proceed:
    """Execute the request, then `finish` (or `forget`) with this token."""

    slot: tuple[str, ...]


@dataclass(frozen=True)
class Replay:
    stored: Stored


@dataclass(frozen=True)
class Conflict:
    reason: Literal["in_flight", "other_parameters", "other_endpoint"]
    first_method: str
    first_path: str


@dataclass
class _Entry:
    method: str
    path: str
    fingerprint: str
    created: float
    answer: Stored | None = None  # None: the first request is still executing


@dataclass
class IdempotencyCache:
    """Keys per scope (an account, a site, a tenant), each kept `ttl_seconds` after it was first used.

    `compare_parameters`: a key reused with other parameters is a conflict (Stripe) rather than a replay
    (Zuora, which documents no comparison). `endpoint_bound`: the key belongs to the endpoint it was first
    used on and another endpoint is a conflict (Stripe, Zuora); otherwise a key is separate per endpoint."""

    ttl_seconds: float
    compare_parameters: bool = True
    endpoint_bound: bool = True
    clock: Callable[[], float] = time.time
    replays: int = 0
    conflicts: int = 0
    _entries: dict[tuple[str, ...], _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _slot(self, scope: str, key: str, method: str, path: str) -> tuple[str, ...]:
        return (scope, key) if self.endpoint_bound else (scope, key, method, path)

    def begin(
        self, scope: str, key: str, method: str, path: str, fingerprint: str
    ) -> Proceed | Replay | Conflict:
        now = self.clock()
        slot = self._slot(scope, key, method, path)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is not None and now - entry.created >= self.ttl_seconds:
                del self._entries[slot]  # pruned: the key may be used again, as a new request
                entry = None
            if entry is None:
                self._entries[slot] = _Entry(method, path, fingerprint, now)
                return Proceed(slot)
            conflict: Literal["in_flight", "other_parameters", "other_endpoint"] | None = None
            if (entry.method, entry.path) != (method, path):
                conflict = "other_endpoint"
            elif entry.answer is None:
                conflict = "in_flight"
            elif self.compare_parameters and entry.fingerprint != fingerprint:
                conflict = "other_parameters"
            if conflict is not None:
                self.conflicts += 1
                return Conflict(conflict, entry.method, entry.path)
            assert entry.answer is not None
            self.replays += 1
            return Replay(entry.answer)

    def finish(self, token: Proceed, status: int, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        """Save the first answer for the key (replayed from now on)."""
        with self._lock:
            entry = self._entries.get(token.slot)
            if entry is not None and entry.answer is None:
                entry.answer = Stored(status, tuple(headers), body)

    def forget(self, token: Proceed) -> None:
        """No answer is saved (the endpoint never began, e.g. authentication failed): the key is free."""
        with self._lock:
            entry = self._entries.get(token.slot)
            if entry is not None and entry.answer is None:
                del self._entries[token.slot]

    def keys(self, scope: str | None = None) -> list[str]:
        """The live keys (of one scope), for assertions."""
        now = self.clock()
        with self._lock:
            return [
                slot[1]
                for slot, e in self._entries.items()
                if (scope is None or slot[0] == scope) and now - e.created < self.ttl_seconds
            ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.replays = self.conflicts = 0
