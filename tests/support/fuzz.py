"""Fuzzing the webhook routes, shared by tests/ingest and benchmarks/hostile_webhooks.py.

1. Mutating real payloads: every path into a JSON tree, and one change at a path (delete the key, or
   replace the value) — `paths`, `mutate`.
2. Hostile requests: `TARGETS` names every webhook route of the four platforms (Zuora three times: HTTP
   Basic, HMAC over the raw body, HMAC over body fields) with the settings that configure it
   (`target_settings`), and `build(target, cls, event_id)` makes one request of a hostile class
   (`HOSTILE`) or of a valid one (`VALID`) from the route's real fixtures, with the answer it must get
   (`Request.expect`). Every event id starts with its class, so what the database holds afterwards can
   be checked class by class (`check_inbox`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from support.helpers import SECRET

# ----------------------------------------------------------------------------- 1. payload mutations


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path below `value` (dict keys and list indexes), the root itself excluded."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def mutate(payload: Any, path: tuple[Any, ...], op: str, new: Any) -> Any:
    """`payload` with the value at `path` deleted (op "delete", inside a dict) or replaced by `new`
    (changed in place; returned for convenience, and `new` itself for the empty path)."""
    if not path:
        return new
    parent = payload
    for step in path[:-1]:
        parent = parent[step]
    if op == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return payload


# ----------------------------------------------------------------------------- 2. hostile requests

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CB_CRED = "billops:fuzz-password-1234"
ZUORA_CRED = "zuora:fuzz-password-1234"
RECURLY_KEY = "recurly-fuzz-webhook-key-0001"
ZUORA_SECRET = "zuora-fuzz-hmac-secret-000001"
ZUORA_HEADER = "X-BillOps-Signature"
FORGED_SECRET = "whsec_forged_by_someone_else"
MAX_BYTES = 64 * 1024  # the test servers' BILLOPS_WEBHOOK_MAX_BYTES: an oversized body stays cheap


@dataclass(frozen=True)
class Target:
    """One webhook route and how it authenticates."""

    name: str  # stripe | chargebee | recurly | zuora_basic | zuora_hmac | zuora_fields
    platform: str
    endpoint: str
    id_field: str
    type_field: str
    valid: tuple[str, ...]  # fixtures (relative to tests/fixtures) of types BillOps acts on
    unknown: str  # a fixture of a type BillOps does not know
    timestamp_field: str | None = None  # set to "now" in every body (signed freshness)

    @property
    def url(self) -> str:
        return f"/webhooks/{self.platform}/{self.endpoint}"


# Valid fixtures are chosen to start light workflows (mirror updates, no recovery with its model):
# the point is what the route stores, not what the workflow decides.
_ZUORA_VALID = ("zuora/payment_processed.json", "zuora/invoice_posted_fully_credited.json")
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "stripe", "stripe", "default", "id", "type",
            ("stripe/customer.subscription.updated.json", "stripe/invoice.paid.json",
             "stripe/payment_method.attached.json"),
            "stripe/invoice.created.json",
        ),
        Target(
            "chargebee", "chargebee", "default", "id", "event_type",
            ("chargebee/subscription_cancelled.json", "chargebee/payment_source_updated.json",
             "chargebee/invoice_updated_paid.json"),
            "chargebee/credit_note_created.json",
        ),
        Target(
            "recurly", "recurly", "default", "id", "object_type",
            ("recurly/webhooks/subscription.updated.json", "recurly/webhooks/subscription.paused.json"),
            "recurly/webhooks/account.created.json",
        ),
        Target("zuora_basic", "zuora", "basic", "eventId", "eventType", _ZUORA_VALID,
               "zuora/account_created_unhandled.json"),
        Target("zuora_hmac", "zuora", "hmac", "eventId", "eventType", _ZUORA_VALID,
               "zuora/account_created_unhandled.json", timestamp_field="timestamp"),
        Target("zuora_fields", "zuora", "fields", "eventId", "eventType", _ZUORA_VALID,
               "zuora/account_created_unhandled.json", timestamp_field="timestamp"),
    )
}  # fmt: skip
_UNKNOWN_TYPE = {"stripe": "billops.fuzz_unknown", "chargebee": "fuzz_unknown_event"}


def target_settings(recurly_api_key: str, recurly_api_url: str) -> dict[str, Any]:
    """Settings (keyword arguments of `Settings`) that configure every route in TARGETS."""
    zuora_hmac = {"secrets": [ZUORA_SECRET], "header": ZUORA_HEADER}
    return {
        "stripe_webhook_secrets": {"default": [SECRET]},
        "chargebee_webhook_credentials": {"default": [CB_CRED]},
        "recurly_webhook_keys": {"default": [RECURLY_KEY]},
        "recurly_api_key": recurly_api_key,
        "recurly_api_url": recurly_api_url,
        "zuora_webhook_endpoints": {
            "basic": {"basic": [ZUORA_CRED]},
            "hmac": {"hmac": zuora_hmac},
            "fields": {"hmac": {**zuora_hmac, "data_template": "{eventId}|{timestamp}"}},
        },
        "webhook_max_bytes": MAX_BYTES,
    }


def _basic(cred: str) -> str:
    return "Basic " + base64.b64encode(cred.encode()).decode()


def _mac(key: str, data: bytes) -> str:
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


def auth_headers(
    target: Target, body: bytes, payload: dict[str, Any], *, forged: bool = False, age: int = 0
) -> dict[str, str]:
    """The headers that authenticate `body` on `target` (signed `age` seconds ago); with `forged`,
    made with a key or password the route does not know. `payload` is what the body was made from
    (the field-signing Zuora endpoint signs its fields, whatever the body's bytes are)."""
    ts = int(time.time()) - age
    if target.platform == "stripe":
        key = FORGED_SECRET if forged else SECRET
        return {"stripe-signature": f"t={ts},v1={_mac(key, f'{ts}.'.encode() + body)}"}
    if target.platform == "recurly":
        key = "recurly-forged-key-000000001" if forged else RECURLY_KEY
        return {"recurly-signature": f"{ts},{_mac(key, f'{ts}.'.encode() + body)}"}
    if target.name in ("chargebee", "zuora_basic"):
        cred = CB_CRED if target.platform == "chargebee" else ZUORA_CRED
        return {"authorization": _basic("billops:forged-password-1" if forged else cred)}
    key = "zuora-forged-secret-0000001" if forged else ZUORA_SECRET
    if target.name == "zuora_fields":
        signed = f"{payload.get('eventId', '')}|{payload.get('timestamp', '')}".encode(
            "utf-8", "surrogatepass"
        )
    else:
        signed = body
    return {ZUORA_HEADER: _mac(key, signed)}


@dataclass
class Request:
    target: Target
    cls: str
    event_id: str
    body: bytes
    headers: dict[str, str]
    expect: str  # "accepted" (a workflow starts) | "stored" (no workflow) | "rejected" (4xx, nothing stored)
    payload: dict[str, Any] = field(default_factory=dict)


_FIXTURE_CACHE: dict[str, dict[str, Any]] = {}


def fixture(relpath: str) -> dict[str, Any]:
    if relpath not in _FIXTURE_CACHE:
        _FIXTURE_CACHE[relpath] = json.loads((FIXTURES / relpath).read_text(encoding="utf-8"))
    return json.loads(json.dumps(_FIXTURE_CACHE[relpath]))


def base_payload(target: Target, event_id: str, *, unknown: bool = False, pick: int = 0) -> dict[str, Any]:
    """A valid event for `target` with this id (a known type, or with `unknown` one BillOps does not
    know), fresh where the route checks freshness."""
    payload = fixture(target.unknown if unknown else target.valid[pick % len(target.valid)])
    payload[target.id_field] = event_id
    if unknown and target.platform in _UNKNOWN_TYPE:
        payload[target.type_field] = _UNKNOWN_TYPE[target.platform]
    if target.timestamp_field:
        payload[target.timestamp_field] = str(int(time.time()))
    return payload


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()  # ensure_ascii: a lone surrogate becomes the escape \udXXX


def _with_raw(payload: dict[str, Any], key: str, raw: bytes) -> bytes:
    """The payload's JSON with one more top-level member whose value is `raw`, exactly as given."""
    return b'{"' + key.encode() + b'": ' + raw + b", " + _encode(payload)[1:]


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


# class -> (build the body from a valid payload, what the route must answer). The body builders get
# (target, payload, n) where n varies the size of what they add.
_Builder = Callable[[Target, dict[str, Any], int], bytes]


def _set(key_of: Callable[[Target], str], value: Callable[[str, int], Any]) -> _Builder:
    def build(target: Target, payload: dict[str, Any], n: int) -> bytes:
        key = key_of(target)
        payload[key] = value(str(payload.get(key, "")), n)
        return _encode(payload)

    return build


def _id(t: Target) -> str:
    return t.id_field


def _type(t: Target) -> str:
    return t.type_field


HOSTILE: dict[str, _Builder] = {
    # nesting deep enough to overflow a recursive parser (≥ 1,000 levels), in a member or as the body
    "deep_member": lambda t, p, n: _with_raw(p, "nested", _deep(1000 + n % 4000)),
    "deep_body": lambda t, p, n: _deep(1000 + n % 20000),
    "deep_object": lambda t, p, n: _with_raw(
        p, "nested", b'{"a":' * (1000 + n % 2000) + b"1" + b"}" * (1000 + n % 2000)
    ),
    # encodings
    "utf16": lambda t, p, n: json.dumps(p, ensure_ascii=False).encode("utf-16" if n % 2 else "utf-16-le"),
    "utf8_bom": lambda t, p, n: b"\xef\xbb\xbf" + _encode(p),
    "invalid_utf8": lambda t, p, n: _with_raw(p, "note", b'"caf\xe9 \xff\xfe"'),
    "raw_surrogate": lambda t, p, n: _with_raw(p, "note", b'"\xed\xa0\x80"'),
    # lone surrogates and NUL: escaped, in the event id or elsewhere; raw NUL
    "surrogate_id": _set(_id, lambda v, n: v + chr(0xD800 + n % 0x800)),
    "surrogate_member": lambda t, p, n: _with_raw(p, "note", b'"x\\udc00y"'),
    "surrogate_key": lambda t, p, n: _with_raw(p, "k\\ud83d", b"1"),
    "nul_id": _set(_id, lambda v, n: v + "\x00"),
    "nul_member": lambda t, p, n: _with_raw(p, "note", b'"a\\u0000b"'),
    "nul_raw": lambda t, p, n: _with_raw(p, "note", b'"a\x00b"'),
    # identifiers out of bounds
    "long_id": _set(_id, lambda v, n: v + "x" * (256 - len(v) + n % 3000)),
    "long_type": _set(_type, lambda v, n: v + "y" * (121 + n % 500)),
    "control_id": _set(_id, lambda v, n: v + "\x01x"),
    # numbers that are not JSON, or not storable
    "nan": lambda t, p, n: _with_raw(p, "amount_x", [b"NaN", b"Infinity", b"-Infinity"][n % 3]),
    "huge_float": lambda t, p, n: _with_raw(p, "amount_x", b"1e400"),
    "huge_int": lambda t, p, n: _with_raw(p, "amount_x", b"9" * (5000 + n % 1000)),
    # size and syntax
    "oversized": lambda t, p, n: _with_raw(p, "pad", json.dumps("z" * (MAX_BYTES + n % 1000)).encode()),
    "not_json": lambda t, p, n: _encode(p)[: -1 - n % 20],
    "empty": lambda t, p, n: b"",
}
# classes whose request is authenticated wrongly (the body is valid, or hostile and unauthenticated)
FORGED = ("forged", "stale", "unauthenticated", "forged_deep")
VALID = ("valid", "unknown_type", "max_id")
CLASSES = (*VALID, *HOSTILE, *FORGED)


def build(target: Target, cls: str, event_id: str, n: int = 0) -> Request:
    """One request of class `cls` to `target` for an event with this id (`n` varies sizes and picks).
    A replay is not a class here: send a `valid` request again (`resend`)."""
    if cls == "max_id":  # exactly at the limit: accepted on SQLite and PostgreSQL alike
        event_id = (event_id + "-" + "m" * 255)[:255]
    payload = base_payload(target, event_id, unknown=cls == "unknown_type", pick=n)
    if cls in VALID:
        body = _encode(payload)
        expect = "stored" if cls == "unknown_type" else "accepted"
        return Request(target, cls, event_id, body, auth_headers(target, body, payload), expect, payload)
    if cls in FORGED:
        body = _with_raw(payload, "nested", _deep(3000)) if cls == "forged_deep" else _encode(payload)
        if cls == "unauthenticated":
            headers: dict[str, str] = {}
        else:
            age = 3600 if cls == "stale" and target.timestamp_field is None else 0
            if cls == "stale" and target.timestamp_field:
                payload[target.timestamp_field] = str(int(time.time()) - 3600)
                body = _encode(payload)
            headers = auth_headers(target, body, payload, forged=cls != "stale", age=age)
            if cls == "stale" and target.name in ("chargebee", "zuora_basic"):
                headers = auth_headers(target, body, payload, forged=True)  # Basic has no time: forge
        return Request(target, cls, event_id, body, headers, "rejected", payload)
    body = HOSTILE[cls](target, payload, n)
    return Request(target, cls, event_id, body, auth_headers(target, body, payload), "rejected", payload)


def resend(req: Request) -> Request:
    """The same event delivered again, freshly authenticated (a platform's retry): a duplicate."""
    payload = json.loads(json.dumps(req.payload))
    if req.target.timestamp_field:
        payload[req.target.timestamp_field] = str(int(time.time()))
    body = _encode(payload)
    return Request(req.target, req.cls, req.event_id, body, auth_headers(req.target, body, payload),
                   "duplicate", payload)  # fmt: skip


def answer_ok(req: Request, status: int, answer: Any) -> str | None:
    """Why the answer to `req` is wrong, or None when it is what the route must answer."""
    if status >= 500:
        return f"server error {status}"
    if req.expect == "rejected":
        if not 400 <= status < 500:
            return f"expected a 4xx, got {status}"
        if not isinstance(answer, dict) or not answer.get("error"):
            return "a rejection must say why"
        return None
    if status != 200 or not isinstance(answer, dict):
        return f"expected 200 {req.expect}, got {status}"
    if answer.get("status") != req.expect or answer.get("event_id") != req.event_id:
        return f"expected {req.expect} of {req.event_id!r}, got {answer}"
    if (answer.get("workflow_id") is None) != (req.expect == "stored"):
        return f"workflow id {answer.get('workflow_id')!r} for a {req.expect} event"
    return None


@dataclass
class Ledger:
    """What the database must hold: per (platform, event id) the valid deliveries sent, and whether the
    event starts a workflow."""

    deliveries: dict[tuple[str, str], int] = field(default_factory=dict)
    workflow: dict[tuple[str, str], bool] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # class -> requests

    def record(self, req: Request) -> None:
        key = (req.target.platform, req.event_id)
        if req.expect == "rejected":
            self.rejected[req.cls] = self.rejected.get(req.cls, 0) + 1
            return
        self.deliveries[key] = self.deliveries.get(key, 0) + 1
        self.workflow.setdefault(key, req.expect == "accepted")


def inbox_rows(conn: sa.Connection) -> list[tuple[str, str, int]]:
    from billops.store.models import InboxEvent

    q = sa.select(InboxEvent.platform, InboxEvent.event_id, InboxEvent.deliveries)
    return [(r[0], r[1], r[2]) for r in conn.execute(q)]


def workflow_ids(conn: sa.Connection) -> set[str]:
    schema = "" if conn.dialect.name == "sqlite" else "dbos."
    return {r[0] for r in conn.execute(sa.text(f"SELECT workflow_uuid FROM {schema}workflow_status"))}


def check_inbox(conn: sa.Connection, ledger: Ledger) -> dict[str, Any]:
    """Compare the database with the ledger; returns the figures, with `problems` listing every
    difference (a stored forgery or malformed event, a valid one lost or stored twice, a delivery not
    counted, a workflow for an unknown type or none for a known one)."""
    rows = inbox_rows(conn)
    workflows = workflow_ids(conn)
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for platform, event_id, deliveries in rows:
        key = (platform, event_id)
        seen[key] = seen.get(key, 0) + 1
        if key not in ledger.deliveries:
            problems.append(f"stored but never validly sent: {platform} {event_id[:80]!r}")
        elif deliveries != ledger.deliveries[key]:
            problems.append(
                f"{platform} {event_id[:60]!r}: {deliveries} deliveries, {ledger.deliveries[key]} sent"
            )
    for key, n in seen.items():
        if n > 1:
            problems.append(f"stored {n} times: {key}")
    for key, starts in ledger.workflow.items():
        if key not in seen:
            problems.append(f"valid event lost: {key}")
        wf = f"{key[0]}:{key[1]}"
        if starts and wf not in workflows:
            problems.append(f"no workflow for {wf}")
        if not starts and wf in workflows:
            problems.append(f"a workflow started for an unknown type: {wf}")
    forgeries = sum(1 for _p, e, _d in rows if e.split("-", 1)[0] in HOSTILE or e.split("-", 1)[0] in FORGED)
    return {
        "stored": len(rows),
        "valid_sent": len(ledger.deliveries),
        "valid_stored_once": sum(1 for k in ledger.deliveries if seen.get(k) == 1),
        "stored_forgeries_or_malformed": forgeries,
        "workflows_for_unknown_types": sum(
            1 for k, s in ledger.workflow.items() if not s and f"{k[0]}:{k[1]}" in workflows
        ),
        "problems": problems,
    }
