"""A local fake of the Chargebee API v2 (the endpoints BillOps uses), for client and end-to-end tests.

It listens on 127.0.0.1 (port 0: the OS picks one) in a thread, answers like Chargebee (JSON bodies,
`{"list": [...], "next_offset": ...}` pages, Chargebee-shaped error bodies with `api_error_code`), keeps an
in-memory store that tests seed with Chargebee-shaped JSON dicts (for instance the resources of our own
fixtures in tests/fixtures/chargebee), and records every request it receives.

    with FakeChargebeeAPI() as api:
        api.seed_event(load_fixture("payment_failed_insufficient_funds"))
        client = ChargebeePlatformClient(api.site, api.api_key, api_url=api.url)
        api.decline_next_collect(error_code="51", error_detail={"decline_code": "insufficient_funds"})
        result = client.pay_invoice("INV-2026-0117", idempotency_key="wf-1:pay")
        [req] = api.find("POST", r"/invoices/INV-2026-0117/collect_payment$")
        assert req.header("chargebee-idempotency-key") == "wf-1:pay"

What it does like Chargebee:
- HTTP Basic auth with the API key as user name (401 `api_authentication_failed` otherwise); `deny()`
  answers chosen paths with 403 `api_authorization_failed` (a key without the permission).
- `chargebee-idempotency-key` on POST, as Chargebee documents it: within the idempotency window (30 minutes
  after the key was first used) a request with the same key and the same parameters on the same path gets
  the first answer (2xx or 4xx; a 5xx is not kept) again with `chargebee-idempotency-replayed: true`,
  without writing twice; after the window it is a new request. Chargebee does not document its answer to
  the same key with other parameters: this fake answers 400 `invalid_request` (param
  `chargebee-idempotency-key`). Keys belong to the site; the cache is tests.support.idempotency, on the
  fake's `clock`.
- Lists: `limit` (1..100), `offset`/`next_offset`, filters `field[is|is_not|in|not_in|starts_with]`,
  `sort_by[asc|desc]`; `GET /invoices/{id}/payments` lists the invoice's transactions, newest first.
- Writes change the store: `collect_payment` creates a transaction and pays the invoice (or declines, see
  `decline_next_collect`), `stop_dunning`, comments, hosted pages, `subscriptions/{id}/pause`,
  `update_for_items` / `subscriptions/{id}` (coupon_ids), `promotional_credits/add`.
- Failure injection: `fail_next` (any status, JSON or plain-text body, optionally only for matching
  requests), `decline_next_collect` (a 402 payment error plus the failed transaction Chargebee records),
  `lose_answer_next` (the request is handled, then the connection closes without an answer).

It is not Chargebee: no taxes, proration, gateways or real dunning; coupons must be seeded (`add_coupon`).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

from support.idempotency import (
    CHARGEBEE_TTL,
    Conflict,
    IdempotencyCache,
    Proceed,
    Replay,
    form_fingerprint,
)
from support.loopback import LoopbackServer, RecordedRequest, read_request

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chargebee"
API_PREFIX = "/api/v2"
DEFAULT_API_KEY = "test_cbkey_0123456789"
DEFAULT_SITE = "billops-test"
RESOURCES = ("customers", "subscriptions", "invoices", "transactions", "payment_sources", "events", "coupons")
IDEMPOTENCY_HEADER = "chargebee-idempotency-key"

JSONDict = dict[str, Any]


def load_fixture(name: str) -> JSONDict:
    """One of our own fixtures (tests/fixtures/chargebee/<name>.json) as a fresh dict."""
    path = FIXTURES / (name if name.endswith(".json") else f"{name}.json")
    data: JSONDict = json.loads(path.read_text(encoding="utf-8"))
    return data


@dataclass
class _Injected:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]
    method: str | None
    path: re.Pattern[str] | None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or bool(self.path.search(path))
        )


@dataclass
class _Decline:
    error_code: str | None
    error_text: str
    error_detail: JSONDict | None
    api_error_code: str
    record_transaction: bool
    invoice_id: str | None
    status: str


class ApiError(Exception):
    """Raised inside a handler: answered as a Chargebee error body."""

    def __init__(
        self,
        status: int,
        api_error_code: str,
        message: str,
        *,
        type: str | None = "invalid_request",
        param: str | None = None,
        extra: JSONDict | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        body: JSONDict = {"message": message, "api_error_code": api_error_code, "http_status_code": status}
        if type is not None:
            body["type"] = type
        if param is not None:
            body["param"] = param
        body["error_code"] = api_error_code
        body["error_msg"] = message
        body.update(extra or {})
        self.body = body


def chargebee_error(status: int, api_error_code: str, message: str, **kw: Any) -> JSONDict:
    """A Chargebee-shaped error body (for `fail_next(..., body=...)`)."""
    return ApiError(status, api_error_code, message, **kw).body


def _in_values(raw: str) -> list[str]:
    """`id[in]` as the SDK sends it (`str(list)`: "['a', 'b']") or as JSON ('["a","b"]')."""
    inner = raw.strip().removeprefix("[").removesuffix("]")
    return [v.strip().strip("'\"") for v in inner.split(",") if v.strip()]


_FILTER = re.compile(r"^(\w+)\[(is|is_not|in|not_in|starts_with)\]$")


class FakeChargebeeAPI(LoopbackServer):
    """The fake Chargebee API server. Seed it, point the client at `url`, inspect `requests`."""

    thread_name = "fake-chargebee"

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        site: str = DEFAULT_SITE,
        clock: Callable[[], int] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.api_key = api_key
        self.api_keys = {api_key}  # every key accepted (add one to test a rotation)
        self.site = site
        self.clock: Callable[[], int] = clock or (lambda: int(time.time()))
        self.store: dict[str, dict[str, JSONDict]] = {r: {} for r in RESOURCES}
        self.cards: dict[str, JSONDict] = {}  # customer id -> legacy `card` resource
        self.comments: list[JSONDict] = []
        self.hosted_pages: list[JSONDict] = []
        self.promotional_credits: list[JSONDict] = []
        self._lock = threading.RLock()
        self._injected: list[_Injected] = []
        self._declines: list[_Decline] = []
        self._denied: list[tuple[str | None, re.Pattern[str]]] = []
        self._lose: list[tuple[str | None, re.Pattern[str] | None]] = []
        self.idempotency = IdempotencyCache(
            ttl_seconds=CHARGEBEE_TTL, endpoint_bound=False, clock=lambda: float(self.clock())
        )
        self._ids = itertools.count(1)
        self._listen(host)

    # ------------------------------------------------------------------ seeding

    def put(self, resource: str, obj: JSONDict) -> JSONDict:
        """Store (a copy of) one Chargebee object under `resource` ("invoices", "customers", …)."""
        if resource not in self.store:
            raise ValueError(f"unknown resource {resource!r}; known: {', '.join(RESOURCES)}")
        if not isinstance(obj.get("id"), str) or not obj["id"]:
            raise ValueError(f"a {resource} object needs a string id")
        with self._lock:
            self.store[resource][obj["id"]] = copy.deepcopy(obj)
            return copy.deepcopy(obj)

    def add_customer(self, obj: JSONDict, *, card: JSONDict | None = None) -> JSONDict:
        if card is not None:
            self.cards[obj["id"]] = copy.deepcopy(card)
        return self.put("customers", obj)

    def add_subscription(self, obj: JSONDict) -> JSONDict:
        return self.put("subscriptions", obj)

    def add_invoice(self, obj: JSONDict) -> JSONDict:
        return self.put("invoices", obj)

    def add_transaction(self, obj: JSONDict) -> JSONDict:
        return self.put("transactions", obj)

    def add_payment_source(self, obj: JSONDict) -> JSONDict:
        return self.put("payment_sources", obj)

    def add_event(self, obj: JSONDict) -> JSONDict:
        return self.put("events", obj)

    def add_coupon(self, coupon_id: str, **fields: Any) -> JSONDict:
        return self.put("coupons", {"id": coupon_id, "object": "coupon", "status": "active", **fields})

    def seed_event(self, envelope: JSONDict, *, store_event: bool = True) -> JSONDict:
        """Store a webhook envelope (retrievable through GET /events/{id}) and every resource in its
        content: customer, subscription, invoice, transaction, payment_source, card."""
        content = envelope.get("content") or {}
        if isinstance(content.get("customer"), dict):
            self.add_customer(content["customer"])
        for key, resource in (
            ("subscription", "subscriptions"),
            ("invoice", "invoices"),
            ("transaction", "transactions"),
            ("payment_source", "payment_sources"),
        ):
            if isinstance(content.get(key), dict):
                self.put(resource, content[key])
        card = content.get("card")
        if isinstance(card, dict) and card.get("customer_id"):
            self.cards[card["customer_id"]] = copy.deepcopy(card)
        if store_event:
            self.add_event(envelope)
        return envelope

    def get(self, resource: str, obj_id: str) -> JSONDict | None:
        """A copy of one stored object (to check what a write did)."""
        with self._lock:
            obj = self.store[resource].get(obj_id)
            return copy.deepcopy(obj) if obj is not None else None

    # ------------------------------------------------------------------ failure injection

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        api_error_code: str | None = None,
        message: str | None = None,
        type: str | None = None,
        body: JSONDict | None = None,
        text: str | None = None,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        path_pattern: str | None = None,
    ) -> None:
        """Answer the next `times` requests (with `method` and a path matching `path_pattern`, when given)
        with `status` and a Chargebee error body (or `body`, or plain `text`), without handling them."""
        if text is not None:
            payload, ctype = text.encode("utf-8"), "text/plain"
        else:
            if body is None:
                code = api_error_code or {
                    429: "api_request_limit_exceeded",
                    503: "internal_temporary_error",
                }.get(status, "internal_error" if status >= 500 else "invalid_request")
                body = chargebee_error(status, code, message or f"injected HTTP {status}", type=type)
            payload, ctype = json.dumps(body).encode("utf-8"), "application/json;charset=utf-8"
        rx = re.compile(path_pattern) if path_pattern else None
        m = method.upper() if method else None
        with self._lock:
            self._injected.extend(
                _Injected(status, payload, ctype, dict(headers or {}), m, rx) for _ in range(times)
            )

    def decline_next_collect(
        self,
        *,
        error_code: str | None = "card_declined",
        error_text: str = "Your card was declined.",
        error_detail: JSONDict | None = None,
        api_error_code: str = "payment_processing_failed",
        record_transaction: bool = True,
        invoice_id: str | None = None,
        status: str = "failure",
    ) -> None:
        """The next collect_payment (of `invoice_id`, or any) is declined: a failed transaction with these
        `error_code`, `error_text` and `error_detail` ({decline_code, network_error_code,
        processor_advice_code}) is linked to the invoice (unless `record_transaction=False`) and the call
        answers HTTP 402 with a `type: payment` error naming the gateway code."""
        with self._lock:
            self._declines.append(
                _Decline(
                    error_code,
                    error_text,
                    copy.deepcopy(error_detail),
                    api_error_code,
                    record_transaction,
                    invoice_id,
                    status,
                )
            )

    def lose_answer_next(self, *, method: str | None = None, path_pattern: str | None = None) -> None:
        """Handle the next matching request (and keep its answer for its idempotency key), then close the
        connection without answering: a timeout, or a worker killed mid-request."""
        with self._lock:
            self._lose.append(
                (method.upper() if method else None, re.compile(path_pattern) if path_pattern else None)
            )

    def _lost(self, rec: RecordedRequest) -> bool:
        with self._lock:
            for m, rx in self._lose:
                if (m is None or m == rec.method) and (rx is None or rx.search(rec.path)):
                    self._lose.remove((m, rx))
                    return True
        return False

    def deny(self, path_pattern: str, *, method: str | None = None) -> None:
        """From now on answer matching requests with 403 api_authorization_failed (a key without this
        permission)."""
        with self._lock:
            self._denied.append((method.upper() if method else None, re.compile(path_pattern)))

    # ------------------------------------------------------------------ inspection

    def writes(self) -> list[RecordedRequest]:
        """Every recorded POST."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    # ------------------------------------------------------------------ helpers

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):05d}"

    def _must(self, resource: str, obj_id: str, param: str | None = None) -> JSONDict:
        obj = self.store[resource].get(obj_id)
        if obj is None:
            singular = resource.removesuffix("s")
            raise ApiError(
                404,
                "resource_not_found",
                f"Sorry, we couldn't find that resource: {singular} {obj_id} is not present",
                param=param,
            )
        return obj

    def _page(
        self, items: list[JSONDict], query: dict[str, str], wrap: Callable[[JSONDict], JSONDict]
    ) -> JSONDict:
        items = [o for o in items if self._matches(o, query)]
        for direction in ("asc", "desc"):
            sort_field = query.get(f"sort_by[{direction}]")
            if sort_field:
                items.sort(key=partial(_sort_value, sort_field), reverse=direction == "desc")
        try:
            limit = int(query.get("limit", "10"))
        except ValueError as exc:
            raise ApiError(400, "param_wrong_value", "limit must be an integer", param="limit") from exc
        if not 1 <= limit <= 100:
            raise ApiError(400, "param_wrong_value", "limit should be between 1 and 100", param="limit")
        start = 0
        if query.get("offset"):
            try:
                start = int(json.loads(query["offset"])[0])
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                raise ApiError(400, "param_wrong_value", "invalid offset", param="offset") from exc
        chunk = items[start : start + limit]
        out: JSONDict = {"list": [wrap(copy.deepcopy(o)) for o in chunk]}
        if start + limit < len(items):
            out["next_offset"] = json.dumps([str(start + limit)])
        return out

    @staticmethod
    def _matches(obj: JSONDict, query: dict[str, str]) -> bool:
        for key, value in query.items():
            m = _FILTER.match(key)
            if not m:
                continue
            name, op = m.groups()
            actual = obj.get(name)
            text = "" if actual is None else str(actual).lower() if isinstance(actual, bool) else str(actual)
            if op == "is" and text != value:
                return False
            if op == "is_not" and text == value:
                return False
            if op == "in" and text not in _in_values(value):
                return False
            if op == "not_in" and text in _in_values(value):
                return False
            if op == "starts_with" and not text.startswith(value):
                return False
        return True

    def _customer_wrap(self, customer: JSONDict) -> JSONDict:
        out: JSONDict = {"customer": customer}
        card = self.cards.get(customer["id"])
        if card is not None:
            out["card"] = copy.deepcopy(card)
        return out

    def _subscription_wrap(self, sub: JSONDict) -> JSONDict:
        """A subscription with its customer (and card), as Chargebee answers subscription reads."""
        customer_id = sub.get("customer_id") or ""
        cust = self.store["customers"].get(customer_id) or {"id": customer_id, "object": "customer"}
        return {"subscription": sub, **self._customer_wrap(copy.deepcopy(cust))}

    # ------------------------------------------------------------------ routes

    def _route(
        self, method: str, path: str, query: dict[str, str], form: dict[str, str]
    ) -> tuple[int, JSONDict]:
        if not path.startswith(API_PREFIX + "/"):
            raise ApiError(404, "resource_not_found", f"fake Chargebee: no route for {method} {path}")
        parts = [unquote(p) for p in path[len(API_PREFIX) + 1 :].split("/") if p]
        s = self.store
        if method == "GET":
            if parts == ["customers"]:
                return 200, self._page(list(s["customers"].values()), query, self._customer_wrap)
            if len(parts) == 2 and parts[0] == "customers":
                return 200, self._customer_wrap(copy.deepcopy(self._must("customers", parts[1])))
            if parts == ["subscriptions"]:
                return 200, self._page(list(s["subscriptions"].values()), query, self._subscription_wrap)
            if len(parts) == 2 and parts[0] == "subscriptions":
                return 200, self._subscription_wrap(copy.deepcopy(self._must("subscriptions", parts[1])))
            if parts == ["invoices"]:
                return 200, self._page(list(s["invoices"].values()), query, lambda o: {"invoice": o})
            if len(parts) == 2 and parts[0] == "invoices":
                return 200, {"invoice": copy.deepcopy(self._must("invoices", parts[1]))}
            if len(parts) == 3 and parts[0] == "invoices" and parts[2] == "payments":
                self._must("invoices", parts[1])
                txns = [
                    (i, t)
                    for i, t in enumerate(s["transactions"].values())
                    if any(li.get("invoice_id") == parts[1] for li in t.get("linked_invoices") or [])
                ]
                txns.sort(key=lambda it: (it[1].get("date") or 0, it[0]), reverse=True)
                return 200, self._page([t for _, t in txns], query, lambda o: {"transaction": o})
            if parts == ["transactions"]:
                return 200, self._page(list(s["transactions"].values()), query, lambda o: {"transaction": o})
            if len(parts) == 2 and parts[0] == "transactions":
                return 200, {"transaction": copy.deepcopy(self._must("transactions", parts[1]))}
            if parts == ["payment_sources"]:
                items = list(s["payment_sources"].values())
                if query.get("subscription_id"):
                    sub = s["subscriptions"].get(query["subscription_id"]) or {}
                    items = [p for p in items if p.get("customer_id") == sub.get("customer_id")]
                return 200, self._page(items, query, lambda o: {"payment_source": o})
            if len(parts) == 2 and parts[0] == "payment_sources":
                return 200, {"payment_source": copy.deepcopy(self._must("payment_sources", parts[1]))}
            if parts == ["events"]:
                return 200, self._page(list(s["events"].values()), query, lambda o: {"event": o})
            if len(parts) == 2 and parts[0] == "events":
                return 200, {"event": copy.deepcopy(self._must("events", parts[1]))}
        if method == "POST":
            if len(parts) == 3 and parts[0] == "invoices" and parts[2] == "collect_payment":
                return self._collect_payment(parts[1], form)
            if len(parts) == 3 and parts[0] == "invoices" and parts[2] == "stop_dunning":
                return self._stop_dunning(parts[1], form)
            if parts == ["comments"]:
                return self._create_comment(form)
            if parts == ["hosted_pages", "manage_payment_sources"] or parts == [
                "hosted_pages",
                "update_payment_method",
            ]:
                return self._hosted_page(parts[1], form)
            if len(parts) == 3 and parts[0] == "subscriptions" and parts[2] == "pause":
                return self._pause(parts[1], form)
            if len(parts) == 3 and parts[0] == "subscriptions" and parts[2] == "update_for_items":
                return self._add_coupons(parts[1], form)
            if len(parts) == 2 and parts[0] == "subscriptions":
                return self._add_coupons(parts[1], form)
            if parts == ["promotional_credits", "add"]:
                return self._add_credit(form)
        raise ApiError(404, "resource_not_found", f"fake Chargebee: no route for {method} {path}")

    # ---- writes

    def _collect_payment(self, invoice_id: str, form: dict[str, str]) -> tuple[int, JSONDict]:
        inv = self._must("invoices", invoice_id)
        status = inv.get("status")
        if status in ("paid", "voided", "pending"):
            raise ApiError(
                400,
                "invalid_state_for_request",
                f"Invoice {invoice_id} is in {status} state; payment cannot be collected",
            )
        due = int(inv.get("amount_due") or 0)
        if due <= 0:
            raise ApiError(400, "invalid_state_for_request", "There is no amount due for this invoice")
        amount = min(int(form["amount"]), due) if form.get("amount") else due
        customer = self.store["customers"].get(inv.get("customer_id") or "") or {}
        ps_id = form.get("payment_source_id") or customer.get("primary_payment_source_id")
        if not ps_id:
            raise ApiError(
                400,
                "payment_method_not_present",
                "The customer has no payment method to collect with",
                type="payment",
            )
        ps = self.store["payment_sources"].get(ps_id)
        if form.get("payment_source_id"):
            ps = self._must("payment_sources", ps_id, "payment_source_id")
            if ps.get("customer_id") not in (None, inv.get("customer_id")):
                raise ApiError(
                    400,
                    "param_wrong_value",
                    "payment source belongs to another customer",
                    param="payment_source_id",
                )
        decline = next(
            (d for d in self._declines if d.invoice_id in (None, invoice_id)),
            None,
        )
        if decline is not None:
            self._declines.remove(decline)
        now = self.clock()
        txn: JSONDict = {
            "id": self._new_id("txn"),
            "customer_id": inv.get("customer_id"),
            "subscription_id": inv.get("subscription_id"),
            "payment_source_id": ps_id,
            "payment_method": (ps or {}).get("type") or "card",
            "gateway": (ps or {}).get("gateway") or "chargebee",
            "gateway_account_id": (ps or {}).get("gateway_account_id"),
            "type": "payment",
            "date": now,
            "amount": amount,
            "currency_code": inv.get("currency_code"),
            "status": "success" if decline is None else decline.status,
            "object": "transaction",
            "initiator_type": form.get("payment_initiator"),
            "updated_at": now,
            "deleted": False,
            "linked_invoices": [
                {
                    "invoice_id": invoice_id,
                    "applied_amount": amount,
                    "applied_at": now,
                    "invoice_date": inv.get("date"),
                    "invoice_total": inv.get("total"),
                    "invoice_status": status,
                }
            ],
        }
        masked = ((ps or {}).get("card") or {}).get("masked_number")
        if masked:
            txn["masked_card_number"] = masked
        if decline is not None:
            txn.update(
                error_code=decline.error_code,
                error_text=decline.error_text,
                error_detail=decline.error_detail,
            )
            if decline.record_transaction:
                self.store["transactions"][txn["id"]] = txn
                inv.setdefault("linked_payments", []).append(
                    {
                        "txn_id": txn["id"],
                        "applied_amount": 0,
                        "applied_at": now,
                        "txn_status": decline.status,
                        "txn_date": now,
                        "txn_amount": amount,
                    }
                )
            gateway_code = f"({decline.error_code}) " if decline.error_code else ""
            message = f"Invoice {invoice_id} could not be collected. Error message: "
            raise ApiError(
                402,
                decline.api_error_code,
                message + gateway_code + decline.error_text,
                type="payment",
                extra={
                    "error_code": decline.error_code or decline.api_error_code,
                    "error_cause_id": "gateway.general.decline",
                },
            )
        self.store["transactions"][txn["id"]] = txn
        inv["amount_paid"] = int(inv.get("amount_paid") or 0) + amount
        inv["amount_due"] = due - amount
        if "amount_to_collect" in inv:
            inv["amount_to_collect"] = inv["amount_due"]
        inv.setdefault("linked_payments", []).append(
            {
                "txn_id": txn["id"],
                "applied_amount": amount,
                "applied_at": now,
                "txn_status": "success",
                "txn_date": now,
                "txn_amount": amount,
            }
        )
        if inv["amount_due"] == 0:
            inv["status"] = "paid"
            inv["paid_at"] = now
            inv.pop("next_retry_at", None)
            if inv.get("dunning_status"):
                inv["dunning_status"] = "success"
        inv["updated_at"] = now
        txn["linked_invoices"][0]["invoice_status"] = inv["status"]
        return 200, {"invoice": copy.deepcopy(inv), "transaction": copy.deepcopy(txn)}

    def _stop_dunning(self, invoice_id: str, form: dict[str, str]) -> tuple[int, JSONDict]:
        inv = self._must("invoices", invoice_id)
        if inv.get("dunning_status") != "in_progress":
            raise ApiError(
                400, "invalid_state_for_request", f"Dunning is not in progress for invoice {invoice_id}"
            )
        inv["dunning_status"] = "stopped"
        inv.pop("next_retry_at", None)
        inv["updated_at"] = self.clock()
        return 200, {"invoice": copy.deepcopy(inv)}

    _COMMENT_ENTITIES: ClassVar[dict[str, str]] = {
        "invoice": "invoices",
        "customer": "customers",
        "subscription": "subscriptions",
    }

    def _create_comment(self, form: dict[str, str]) -> tuple[int, JSONDict]:
        for required in ("entity_type", "entity_id", "notes"):
            if not form.get(required):
                raise ApiError(400, "param_wrong_value", f"{required} cannot be blank", param=required)
        resource = self._COMMENT_ENTITIES.get(form["entity_type"])
        if resource is not None:
            self._must(resource, form["entity_id"], "entity_id")
        comment = {
            "id": self._new_id("cmt"),
            "entity_type": form["entity_type"],
            "entity_id": form["entity_id"],
            "notes": form["notes"],
            "added_by": form.get("added_by") or "BillOps test key",
            "type": "user",
            "created_at": self.clock(),
            "object": "comment",
        }
        self.comments.append(comment)
        return 200, {"comment": copy.deepcopy(comment)}

    def _hosted_page(self, kind: str, form: dict[str, str]) -> tuple[int, JSONDict]:
        customer_id = form.get("customer[id]")
        if not customer_id:
            raise ApiError(400, "param_wrong_value", "customer[id] cannot be blank", param="customer[id]")
        self._must("customers", customer_id, "customer[id]")
        hp_id = self._new_id("hp")
        now = self.clock()
        page = {
            "id": hp_id,
            "type": kind,
            "url": f"{self.url}/pages/v3/{hp_id}/",
            "state": "created",
            "embed": False,
            "created_at": now,
            "expires_at": now + 3 * 86400,
            "updated_at": now,
            "object": "hosted_page",
            "redirect_url": form.get("redirect_url"),
            "customer_id": customer_id,
        }
        self.hosted_pages.append(page)
        out = {k: v for k, v in page.items() if k not in ("redirect_url", "customer_id")}
        return 200, {"hosted_page": out}

    def _pause(self, sub_id: str, form: dict[str, str]) -> tuple[int, JSONDict]:
        sub = self._must("subscriptions", sub_id)
        if sub.get("status") not in ("active", "non_renewing", "in_trial"):
            raise ApiError(
                400,
                "invalid_state_for_request",
                f"Subscription {sub_id} in {sub.get('status')} cannot be paused",
            )
        option = form.get("pause_option") or "end_of_term"
        now = self.clock()
        if option == "immediately":
            sub["status"] = "paused"
            sub["pause_date"] = now
        elif option == "specific_date":
            if not form.get("pause_date"):
                raise ApiError(400, "param_wrong_value", "pause_date is required", param="pause_date")
            sub["pause_date"] = int(form["pause_date"])
        elif option == "end_of_term":
            sub["pause_date"] = sub.get("current_term_end")
        else:
            raise ApiError(
                400, "param_wrong_value", f"pause_option {option} is not supported", param="pause_option"
            )
        if form.get("resume_date"):
            resume = int(form["resume_date"])
            if resume <= now:
                raise ApiError(
                    400, "param_wrong_value", "resume_date must be in the future", param="resume_date"
                )
            sub["resume_date"] = resume
        sub["updated_at"] = now
        out: JSONDict = {"subscription": copy.deepcopy(sub)}
        cust = self.store["customers"].get(sub.get("customer_id") or "")
        if cust is not None:
            out["customer"] = copy.deepcopy(cust)
        return 200, out

    def _add_coupons(self, sub_id: str, form: dict[str, str]) -> tuple[int, JSONDict]:
        sub = self._must("subscriptions", sub_id)
        coupon_ids = [form[k] for k in sorted(form, key=_index_key) if re.fullmatch(r"coupon_ids\[\d+\]", k)]
        if not coupon_ids:
            raise ApiError(400, "param_wrong_value", "no change requested", param="coupon_ids")
        for i, cid in enumerate(coupon_ids):
            self._must("coupons", cid, f"coupon_ids[{i}]")
        coupons = sub.setdefault("coupons", [])
        if form.get("replace_coupon_list") == "true":
            coupons.clear()
        for cid in coupon_ids:
            if all(c.get("coupon_id") != cid for c in coupons):
                coupons.append({"coupon_id": cid, "applied_count": 0, "object": "coupon"})
        sub["updated_at"] = self.clock()
        out: JSONDict = {"subscription": copy.deepcopy(sub)}
        cust = self.store["customers"].get(sub.get("customer_id") or "")
        if cust is not None:
            out["customer"] = copy.deepcopy(cust)
        return 200, out

    def _add_credit(self, form: dict[str, str]) -> tuple[int, JSONDict]:
        customer_id = form.get("customer_id") or ""
        if not customer_id:
            raise ApiError(400, "param_wrong_value", "customer_id cannot be blank", param="customer_id")
        cust = self._must("customers", customer_id, "customer_id")
        if not form.get("description"):
            raise ApiError(400, "param_wrong_value", "description cannot be blank", param="description")
        try:
            amount = int(form.get("amount") or "")
        except ValueError as exc:
            raise ApiError(400, "param_wrong_value", "amount must be an integer", param="amount") from exc
        if amount <= 0:
            raise ApiError(400, "param_wrong_value", "amount should be greater than 0", param="amount")
        cust["promotional_credits"] = int(cust.get("promotional_credits") or 0) + amount
        credit = {
            "id": self._new_id("pc"),
            "customer_id": customer_id,
            "type": "increment",
            "amount": amount,
            "currency_code": form.get("currency_code") or cust.get("preferred_currency_code"),
            "description": form["description"],
            "credit_type": form.get("credit_type") or "general",
            "reference": form.get("reference"),
            "closing_balance": cust["promotional_credits"],
            "created_at": self.clock(),
            "object": "promotional_credit",
        }
        self.promotional_credits.append(credit)
        return 200, {"customer": copy.deepcopy(cust), "promotional_credit": copy.deepcopy(credit)}

    # ------------------------------------------------------------------ server

    def _handle(self, rec: RecordedRequest) -> tuple[int, bytes, str, dict[str, str]]:
        """(status, body, content type, extra headers) for one recorded request."""
        json_type = "application/json;charset=utf-8"
        with self._lock:
            self.requests.append(rec)
            injected = next((f for f in self._injected if f.matches(rec.method, rec.path)), None)
            if injected is not None:
                self._injected.remove(injected)
                return injected.status, injected.body, injected.content_type, injected.headers
            if rec.basic_user not in self.api_keys:
                err = ApiError(
                    401,
                    "api_authentication_failed",
                    "Sorry, authentication failed. Invalid api key",
                    type=None,
                )
                return 401, json.dumps(err.body).encode(), json_type, {}
            for m, rx in self._denied:
                if (m is None or m == rec.method) and rx.search(rec.path):
                    err = ApiError(
                        403,
                        "api_authorization_failed",
                        "Sorry, the operation is not allowed for this API key",
                        type=None,
                    )
                    return 403, json.dumps(err.body).encode(), json_type, {}
            key = rec.header(IDEMPOTENCY_HEADER) if rec.method == "POST" else None
            verdict: Proceed | Replay | Conflict | None = None
            if key is not None:
                verdict = self.idempotency.begin(
                    self.site, key, rec.method, rec.path, form_fingerprint(rec.body)
                )
                if isinstance(verdict, Replay):
                    rec.replayed = True
                    stored = verdict.stored
                    return stored.status, stored.body, json_type, {"chargebee-idempotency-replayed": "true"}
                if isinstance(verdict, Conflict):
                    err = ApiError(
                        400,
                        "invalid_request",
                        "The idempotency key was already used with different parameters",
                        param=IDEMPOTENCY_HEADER,
                    )
                    return 400, json.dumps(err.body).encode(), json_type, {}
            try:
                status, out = self._route(rec.method, rec.path, rec.params, rec.form)
                body = json.dumps(out).encode()
            except ApiError as exc:
                status, body = exc.status, json.dumps(exc.body).encode()
            if isinstance(verdict, Proceed):
                if status < 500:
                    self.idempotency.finish(verdict, status, (), body)
                else:
                    self.idempotency.forget(verdict)
            return status, body, json_type, {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def _serve(self) -> None:
                rec = read_request(self)
                try:
                    status, body, ctype, extra = api._handle(rec)
                except Exception as exc:  # a bug in the fake: say so instead of hanging the client
                    status, ctype, extra = 500, "text/plain", {}
                    body = f"fake Chargebee crashed: {type(exc).__name__}: {exc}".encode()
                if api._lost(rec):
                    self.close_connection = True
                    return
                rec.status = status
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _serve

        return Handler


def _sort_value(field: str, obj: JSONDict) -> Any:
    return obj.get(field) or 0


def _index_key(key: str) -> tuple[str, int]:
    m = re.search(r"\[(\d+)\]$", key)
    return (key.split("[", 1)[0], int(m.group(1)) if m else -1)
