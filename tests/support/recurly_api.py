"""A local fake of the Recurly API v2021-02-25 (the endpoints BillOps uses), for client and enrichment tests.

It listens on 127.0.0.1 (port 0: the OS picks one) in a thread, answers like Recurly v3 (JSON objects with
`object`, list pages ``{object: "list", has_more, next, data}``, error bodies ``{error: {type, message}}``),
keeps an in-memory store that tests seed with API JSON (for instance tests/fixtures/recurly/api), and
records every request it receives.

    with FakeRecurlyAPI() as api:
        api.seed_fixtures()
        client = RecurlyPlatformClient(api.api_key, api_url=api.url, ledger=ledger)
        api.decline_next_collect(code="insufficient_funds")
        result = client.pay_invoice("number-1001", idempotency_key="wf-1:pay")
        [req] = api.find("PUT", r"/invoices/\\w+/collect$")

Like Recurly:
- HTTP Basic auth with the API key as user name and an empty password (401 `unauthorized` otherwise);
  the `Accept` header must name the API version (406 `invalid_api_version` otherwise).
- Path ids: an object id, or `code-<code>` (accounts, coupons), `uuid-<uuid>` (subscriptions,
  transactions), `number-<n>` (invoices).
- An account embeds its primary billing info; an invoice embeds its transactions (both can be turned
  off: `embed_billing_info`, `embed_transactions`).
- Lists: `limit` (1..200), `cursor` (opaque, from `next`), `sort` (created_at | updated_at), `order`,
  `begin_time`/`end_time` on the sort field, filters `type` (transactions: payment = purchase + capture;
  invoices; line items) and `state`.
- Writes change the store: `collect` creates a transaction and pays the invoice, or declines it
  (`decline_next_collect`: 422 `transaction` error with a `transaction_error`, the invoice goes past due);
  notes, coupon redemptions (one active redemption per coupon and account), credit line items, pauses.
- Failure injection (`fail_next`): answer a status without applying the request, apply it and then
  answer a 5xx, apply it and drop the connection without answering, or drop it before applying.

It is not Recurly: no taxes, proration, gateways or dunning schedule.

No idempotency keys, like Recurly (its API documents none): an `Idempotency-Key` header is ignored and
a write sent twice is applied twice. BillOps's own at-most-once ledger (platforms/ledger.py) is what keeps
a replayed step from writing twice; tests/platforms/recurly/test_idempotency.py shows it.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import uuid as uuidlib
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlencode

from support.loopback import LoopbackServer, RecordedRequest, read_request

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "recurly"
API_VERSION = "v2021-02-25"
DEFAULT_API_KEY = "test_recurly_private_key_0123"
COLLECTIONS = ("sites", "accounts", "billing_infos", "subscriptions", "invoices", "transactions", "coupons")

JSONDict = dict[str, Any]
Mode = Literal["respond", "apply_then_respond", "apply_then_drop", "drop"]


def load_fixture(relpath: str) -> Any:
    """One of our own fixtures (tests/fixtures/recurly/<relpath>) as fresh JSON."""
    path = FIXTURES / (relpath if relpath.endswith(".json") else f"{relpath}.json")
    return json.loads(path.read_text(encoding="utf-8"))


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


@dataclass
class _Injection:
    mode: Mode
    status: int
    body: bytes
    method: str | None
    path: re.Pattern[str] | None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or bool(self.path.search(path))
        )


@dataclass
class _Decline:
    code: str
    message: str
    category: str
    decline_code: str | None
    gateway_response_code: str | None
    gateway_response_values: JSONDict | None
    record_transaction: bool


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, extra: JSONDict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSONDict = {"error": {"type": type_, "message": message, **(extra or {})}}


class FakeRecurlyAPI(LoopbackServer):
    thread_name = "fake-recurly"

    def __init__(self, api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1") -> None:
        self.api_key = api_key
        self.store: dict[str, dict[str, JSONDict]] = {c: {} for c in COLLECTIONS}
        self.notes: list[JSONDict] = []
        self.redemptions: list[JSONDict] = []
        self.line_items: list[JSONDict] = []
        self.embed_transactions = True
        self.embed_billing_info = True
        self._lock = threading.RLock()
        self._injections: list[_Injection] = []
        self._declines: list[_Decline] = []
        self._ids = itertools.count(1)
        self._listen(host)

    # ---------------------------------------------------------------- seeding and inspection

    def seed(self, collection: str, obj: JSONDict) -> JSONDict:
        with self._lock:
            self.store[collection][obj["id"]] = copy.deepcopy(obj)
            return self.store[collection][obj["id"]]

    def seed_fixtures(self) -> None:
        """Every API object of tests/fixtures/recurly/api/<collection>.json."""
        for collection in COLLECTIONS:
            for obj in load_fixture(f"api/{collection}"):
                self.seed(collection, obj)

    def get(self, collection: str, ref: str) -> JSONDict:
        with self._lock:
            return copy.deepcopy(self._find(collection, ref))

    def writes(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method in ("POST", "PUT", "DELETE")]

    # ---------------------------------------------------------------- failure injection

    def fail_next(
        self,
        status: int = 503,
        body: JSONDict | str | None = None,
        *,
        mode: Mode = "respond",
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` matching requests: `respond` answers `status` without applying;
        `apply_then_respond` applies the request, then answers `status`; `apply_then_drop` applies it
        and closes the connection without an answer; `drop` closes it without applying."""
        if body is None:
            body = {"error": {"type": "internal_server_error", "message": "Injected failure"}}
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        with self._lock:
            for _ in range(times):
                self._injections.append(
                    _Injection(mode, status, raw, method, re.compile(path) if path else None)
                )

    def decline_next_collect(
        self,
        code: str = "insufficient_funds",
        message: str = "The card has insufficient funds to cover the cost of the transaction.",
        *,
        category: str = "soft",
        decline_code: str | None = None,
        gateway_response_code: str | None = None,
        gateway_response_values: JSONDict | None = None,
        record_transaction: bool = True,
    ) -> None:
        with self._lock:
            self._declines.append(
                _Decline(
                    code,
                    message,
                    category,
                    decline_code,
                    gateway_response_code,
                    gateway_response_values,
                    record_transaction,
                )
            )

    # ---------------------------------------------------------------- rendering

    def _find(self, collection: str, ref: str) -> JSONDict:
        items = self.store[collection]
        for prefix, field in (("code-", "code"), ("uuid-", "uuid"), ("number-", "number")):
            if ref.startswith(prefix):
                want = ref[len(prefix) :]
                for obj in items.values():
                    if str(obj.get(field)) == want:
                        return obj
                break
        else:
            if ref in items:
                return items[ref]
        raise ApiError(404, "not_found", f"Couldn't find {collection[:-1].title()} with id = {ref}")

    def _account_json(self, acc: JSONDict) -> JSONDict:
        out = copy.deepcopy(acc)
        if self.embed_billing_info:
            primary = [
                b
                for b in self.store["billing_infos"].values()
                if b.get("account_id") == acc["id"] and b.get("primary_payment_method", True)
            ]
            out["billing_info"] = copy.deepcopy(primary[0]) if primary else None
        else:
            out.pop("billing_info", None)
        return out

    def _invoice_json(self, inv: JSONDict) -> JSONDict:
        out = copy.deepcopy(inv)
        if self.embed_transactions:
            txns = [
                t
                for t in self.store["transactions"].values()
                if (t.get("invoice") or {}).get("id") == inv["id"]
            ]
            out["transactions"] = sorted(copy.deepcopy(txns), key=lambda t: t["created_at"])
        else:
            out.pop("transactions", None)
        return out

    def _render(self, collection: str, obj: JSONDict) -> JSONDict:
        if collection == "accounts":
            return self._account_json(obj)
        if collection == "invoices":
            return self._invoice_json(obj)
        return copy.deepcopy(obj)

    def _mini_account(self, acc: JSONDict) -> JSONDict:
        keys = ("id", "code", "email", "first_name", "last_name", "company", "parent_account_id", "bill_to")
        return {"object": "account", **{k: acc.get(k) for k in keys}}

    def _page(self, path: str, query: dict[str, str], items: list[JSONDict]) -> JSONDict:
        sort = query.get("sort", "created_at")
        if sort not in ("created_at", "updated_at"):
            raise ApiError(400, "bad_request", f"sort must be created_at or updated_at, got {sort}")
        for bound, keep in (("begin_time", lambda t, b: t >= b), ("end_time", lambda t, b: t <= b)):
            if bound in query:
                limit_t = _to_time(query[bound])
                items = [i for i in items if i.get(sort) and keep(_to_time(i[sort]), limit_t)]
        items = sorted(
            items, key=lambda i: (i.get(sort) or "", i["id"]), reverse=query.get("order", "desc") == "desc"
        )
        try:
            limit = int(query.get("limit", "20"))
            start = int(query["cursor"].removeprefix("c")) if "cursor" in query else 0
        except ValueError:
            raise ApiError(400, "bad_request", "limit and cursor must be numbers") from None
        if not 1 <= limit <= 200:
            raise ApiError(400, "bad_request", "limit must be between 1 and 200")
        chunk = items[start : start + limit]
        has_more = start + limit < len(items)
        nxt = None
        if has_more:
            params = {k: v for k, v in query.items() if k != "cursor"}
            params["cursor"] = f"c{start + limit}"
            nxt = f"{path}?{urlencode(params)}"
        return {"object": "list", "has_more": has_more, "next": nxt, "data": chunk}

    # ---------------------------------------------------------------- routing

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, JSONDict]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        with self._lock:
            if method == "GET":
                return 200, self._get(path, parts, query)
            return self._write(method, parts, body)

    def _get(self, path: str, parts: list[str], query: dict[str, str]) -> JSONDict:
        top = parts[0] if parts else ""
        if top == "sites" and len(parts) == 1:
            return self._page(path, query, list(self.store["sites"].values()))
        if top in ("accounts", "subscriptions", "invoices", "transactions", "coupons") and len(parts) == 1:
            items = [self._render(top, o) for o in self.store[top].values()]
            items = self._filter(top, items, query)
            return self._page(path, query, items)
        if (
            top in ("accounts", "subscriptions", "invoices", "transactions", "coupons", "sites")
            and len(parts) == 2
        ):
            return self._render(top, self._find(top, parts[1]))
        if top == "accounts" and len(parts) == 3:
            acc = self._find("accounts", parts[1])
            sub = parts[2]
            if sub == "billing_info":
                mine = [b for b in self.store["billing_infos"].values() if b.get("account_id") == acc["id"]]
                primary = [b for b in mine if b.get("primary_payment_method", True)] or mine
                if not primary:
                    raise ApiError(
                        404, "not_found", f"Couldn't find BillingInfo with account_id = {acc['id']}"
                    )
                return copy.deepcopy(primary[0])
            if sub == "billing_infos":
                mine = [b for b in self.store["billing_infos"].values() if b.get("account_id") == acc["id"]]
                return self._page(path, query, copy.deepcopy(mine))
            if sub == "transactions":
                txns = [
                    t
                    for t in self.store["transactions"].values()
                    if (t.get("account") or {}).get("id") == acc["id"]
                ]
                return self._page(path, query, self._filter("transactions", copy.deepcopy(txns), query))
            if sub == "notes":
                return self._page(path, query, [n for n in self.notes if n["account_id"] == acc["id"]])
            if sub == "coupon_redemptions":
                mine = [r for r in self.redemptions if r["account"]["id"] == acc["id"]]
                return self._page(path, query, self._filter("coupon_redemptions", mine, query))
            if sub == "line_items":
                mine = [li for li in self.line_items if li["account"]["id"] == acc["id"]]
                return self._page(path, query, self._filter("line_items", mine, query))
        raise ApiError(404, "not_found", f"The requested URL {path} was not found")

    @staticmethod
    def _filter(kind: str, items: list[JSONDict], query: dict[str, str]) -> list[JSONDict]:
        t = query.get("type")
        if t:
            if kind == "transactions" and t == "payment":
                items = [i for i in items if i.get("type") in ("purchase", "capture")]
            else:
                items = [i for i in items if i.get("type") == t]
        state = query.get("state")
        if state:
            items = [i for i in items if i.get("state") == state]
        return items

    def _write(self, method: str, parts: list[str], body: Any) -> tuple[int, JSONDict]:
        if method == "PUT" and len(parts) == 3 and parts[0] == "invoices" and parts[2] == "collect":
            return 200, self._collect(self._find("invoices", parts[1]), body or {})
        if method == "PUT" and len(parts) == 3 and parts[0] == "subscriptions" and parts[2] == "pause":
            return 200, self._pause(self._find("subscriptions", parts[1]), body or {})
        if method == "POST" and len(parts) >= 3 and parts[0] == "accounts":
            acc = self._find("accounts", parts[1])
            if parts[2:] == ["notes"]:
                return 201, self._note(acc, body or {})
            if parts[2:] == ["coupon_redemptions", "active"]:
                return 201, self._redeem(acc, body or {})
            if parts[2:] == ["line_items"]:
                return 201, self._line_item(acc, body or {})
        raise ApiError(404, "not_found", f"The requested URL /{'/'.join(parts)} was not found")

    # ---------------------------------------------------------------- writes

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):010d}"

    def _collect(self, inv: JSONDict, body: JSONDict) -> JSONDict:
        if inv["state"] not in ("pending", "past_due", "processing"):
            raise ApiError(422, "invalid_transition", f"Invoice is already {inv['state']}")
        acc = self._find("accounts", inv["account"]["id"])
        infos = [b for b in self.store["billing_infos"].values() if b.get("account_id") == acc["id"]]
        wanted = body.get("billing_info_id")
        if wanted:
            infos = [b for b in infos if b["id"] == wanted]
            if not infos:
                raise ApiError(422, "validation", f"Billing info {wanted} does not belong to this account")
        else:
            infos = [b for b in infos if b.get("primary_payment_method", True)] or infos
        if not infos:
            raise ApiError(422, "validation", "No billing information on this account")
        decline = self._declines.pop(0) if self._declines else None
        stamp = now_iso()
        txn: JSONDict = {
            "id": self._new_id("tx"),
            "object": "transaction",
            "uuid": uuidlib.uuid4().hex,
            "type": "purchase",
            "origin": "api",
            "account": self._mini_account(acc),
            "invoice": {
                "object": "invoice",
                "id": inv["id"],
                "number": inv["number"],
                "state": inv["state"],
                "type": inv.get("type", "charge"),
            },
            "amount": inv["balance"],
            "currency": inv["currency"],
            "payment_method": copy.deepcopy(infos[0].get("payment_method")),
            "payment_gateway": {
                "object": "payment_gateway",
                "id": "gw1",
                "type": "test",
                "name": "Test Gateway",
            },
            "collection_method": "automatic",
            "created_at": stamp,
            "updated_at": stamp,
            "collected_at": stamp,
        }
        if decline is not None:
            txn.update(
                status="declined",
                success=False,
                status_code=decline.code,
                status_message=decline.message,
                gateway_response_code=decline.gateway_response_code,
                gateway_response_values=decline.gateway_response_values or {},
            )
            if decline.record_transaction:
                self.store["transactions"][txn["id"]] = txn
            inv.update(state="past_due", updated_at=stamp)
            error = {
                "object": "transaction_error",
                "transaction_id": txn["id"] if decline.record_transaction else None,
                "category": decline.category,
                "code": decline.code,
                "message": decline.message,
                "merchant_advice": decline.message,
                "decline_code": decline.decline_code,
            }
            raise ApiError(422, "transaction", decline.message, {"transaction_error": error})
        txn.update(status="success", success=True, status_code=None, status_message=None)
        self.store["transactions"][txn["id"]] = txn
        txn["invoice"]["state"] = "paid"
        inv.update(state="paid", paid=inv["total"], balance=0.0, closed_at=stamp, updated_at=stamp)
        return self._invoice_json(inv)

    def _pause(self, sub: JSONDict, body: JSONDict) -> JSONDict:
        cycles = body.get("remaining_pause_cycles")
        if not isinstance(cycles, int) or cycles < 0:
            raise ApiError(422, "validation", "remaining_pause_cycles must be a non-negative integer")
        if sub["state"] not in ("active", "paused"):
            raise ApiError(422, "invalid_transition", f"Cannot pause a {sub['state']} subscription")
        sub.update(
            paused_at=sub.get("current_period_ends_at") if cycles else None,
            remaining_pause_cycles=cycles or None,
            updated_at=now_iso(),
        )
        return copy.deepcopy(sub)

    def _note(self, acc: JSONDict, body: JSONDict) -> JSONDict:
        message = body.get("message")
        if not isinstance(message, str) or not message.strip():
            raise ApiError(422, "validation", "message can't be blank")
        note = {
            "id": self._new_id("nt"),
            "object": "account_note",
            "account_id": acc["id"],
            "user": None,
            "message": message,
            "created_at": now_iso(),
        }
        self.notes.append(note)
        return copy.deepcopy(note)

    def _redeem(self, acc: JSONDict, body: JSONDict) -> JSONDict:
        coupon_ref = body.get("coupon_id")
        if not isinstance(coupon_ref, str):
            raise ApiError(422, "validation", "coupon_id can't be blank")
        coupon = self._find("coupons", coupon_ref)
        active = [r for r in self.redemptions if r["state"] == "active" and r["account"]["id"] == acc["id"]]
        if any(r["coupon"]["id"] == coupon["id"] for r in active):
            raise ApiError(422, "validation", "Coupon has reached max redemptions for this account")
        sub_id = body.get("subscription_id")
        if sub_id is not None and sub_id not in self.store["subscriptions"]:
            raise ApiError(422, "validation", f"Subscription {sub_id} not found")
        stamp = now_iso()
        red = {
            "id": self._new_id("cr"),
            "object": "coupon_redemption",
            "account": self._mini_account(acc),
            "subscription_id": sub_id,
            "coupon": copy.deepcopy(coupon),
            "state": "active",
            "currency": body.get("currency"),
            "discounted": 0.0,
            "created_at": stamp,
            "updated_at": stamp,
        }
        self.redemptions.append(red)
        return copy.deepcopy(red)

    def _line_item(self, acc: JSONDict, body: JSONDict) -> JSONDict:
        amount = body.get("unit_amount")
        if not isinstance(amount, int | float) or body.get("type") not in ("charge", "credit"):
            raise ApiError(422, "validation", "unit_amount and type (charge or credit) are required")
        signed = -abs(amount) if body["type"] == "credit" else abs(amount)
        stamp = now_iso()
        li = {
            "id": self._new_id("li"),
            "object": "line_item",
            "type": body["type"],
            "state": "pending",
            "account": self._mini_account(acc),
            "currency": body.get("currency"),
            "unit_amount": signed,
            "quantity": 1,
            "amount": signed,
            "description": body.get("description"),
            "created_at": stamp,
            "updated_at": stamp,
        }
        self.line_items.append(li)
        return copy.deepcopy(li)

    # ---------------------------------------------------------------- HTTP

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                rec = read_request(self)
                body = rec.body
                with api._lock:
                    api.requests.append(rec)
                    injection = next((i for i in api._injections if i.matches(rec.method, rec.path)), None)
                    if injection is not None:
                        api._injections.remove(injection)
                if injection is not None and injection.mode == "drop":
                    self.close_connection = True
                    return
                status, payload = (
                    (0, {}) if injection and injection.mode == "respond" else self._answer(rec, body)
                )
                if injection is not None and injection.mode == "apply_then_drop":
                    self.close_connection = True
                    return
                if injection is not None:  # respond / apply_then_respond: the injected answer
                    status, raw = injection.status, injection.body
                else:
                    raw = json.dumps(payload).encode()
                rec.status = status
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                self.send_header("X-Request-Id", f"req-{len(api.requests)}")
                self.send_header("Recurly-Version", f"recurly.{API_VERSION}")
                self.end_headers()
                self.wfile.write(raw)

            def _answer(self, rec: RecordedRequest, body: bytes) -> tuple[int, JSONDict]:
                creds = rec.basic_credentials
                if creds is None or creds != (api.api_key, ""):
                    return 401, ApiError(401, "unauthorized", "Invalid API key").body
                if rec.header("accept") != f"application/vnd.recurly.{API_VERSION}":
                    return 406, ApiError(406, "invalid_api_version", "Accept must name the API version").body
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    return 400, ApiError(400, "bad_request", "Body is not JSON").body
                try:
                    return api._route(rec.method, rec.path, rec.params, parsed)
                except ApiError as exc:
                    return exc.status, exc.body

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def do_PUT(self) -> None:
                self._handle()

            def do_DELETE(self) -> None:
                self._handle()

        return Handler
