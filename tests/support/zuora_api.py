"""A local fake of the Zuora REST API (the endpoints BillOps uses), for client and end-to-end tests.

It listens on 127.0.0.1 (port 0: the OS picks one) in a thread, keeps an in-memory store that tests
seed with Zuora-shaped objects (Object Query's camelCase JSON), records every request, and answers
like Zuora:

- `POST /oauth/token` (form: client_id, client_secret, grant_type=client_credentials) issues bearer
  tokens that expire after `token_lifetime` seconds; `revoke_tokens()` makes every issued token fail
  with 401 (as an expired one does). Every other `/v1` and `/object-query` call needs a live token.
- Object Query: `GET /object-query/{accounts,invoices,payments,payment-methods,subscriptions}[/{key}]`
  with `expand[]`, `filter[]=field.EQ:value`, `sort[]=field.ASC|DESC`, `pageSize` (1..99, else 400) and
  opaque `cursor` / `nextPage`; a missing key is 404 `{"reasons": [...]}`.
- `POST /v1/payments` (Invoice Settlement shape) creates a payment: Processed and applied to the invoice
  (its balance drops), or declined as configured per payment method with `decline(...)`: an Error
  payment in a 200 answer (`mode="error_payment"`), or `{"success": false}` that leaves an Error payment
  (`"rejected"`) or none (`"rejected_no_record"`).
- `PUT /v1/invoices/{key}` (autoPay, comments; 255 characters), `PUT /v1/subscriptions/{key}/suspend`,
  `POST /v1/creditmemos`.
- Configurable Payment Retry on the same server (HTTP Basic: e-mail + CPR token):
  `PUT /api/v1/payments/remove_invoice_from_retry_cycle/{invoice_id}`,
  `POST /api/v1/payments/submit_failed_payment`.
- `Idempotency-Key` on POST and PATCH, as Zuora documents it (developer.zuora.com, "Idempotent
  requests"): the first answer, whatever its status, is saved for 24 hours and a request with the same key
  gets it again without writing twice (Zuora does not compare the bodies); the same key on another URL
  or method is 422, while the first request still runs 409. Keys belong to the tenant; other methods
  ignore the header. The CPR API (`submit_failed_payment`) is treated the same way. The cache is
  tests.support.idempotency (`idempotency`, with an injectable `clock`).
- Failure injection: `fail_next(status, body, method=, path=, after=)`; with `after=True` the request is
  processed and only the answer is replaced (a payment made, then a 502).

    with FakeZuoraAPI() as api:
        api.add_account("A1", currency="USD", default_payment_method="PM1")
        client = ZuoraPlatformClient(api.url, api.client_id, api.client_secret)

It is not Zuora: no taxes, bill runs, gateways or real retry schedules.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any

from support.idempotency import ZUORA_TTL, Conflict, IdempotencyCache, Replay, json_fingerprint
from support.loopback import LoopbackServer, RecordedRequest, read_request

JSONDict = dict[str, Any]
PACIFIC = timezone(timedelta(hours=-8))
RESOURCES = {"accounts": "accountNumber", "invoices": "invoiceNumber", "payments": "paymentNumber",
             "payment-methods": None, "subscriptions": "subscriptionNumber"}  # fmt: skip


def zdate(when: datetime) -> str:
    """A Zuora datetime: ISO 8601 in the tenant's time zone (Pacific here), milliseconds."""
    return when.astimezone(PACIFIC).isoformat(timespec="milliseconds")


@dataclass
class _Injected:
    status: int
    body: Any
    method: str | None
    path: re.Pattern[str] | None
    after: bool

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or bool(self.path.search(path))
        )


@dataclass
class Decline:
    code: str
    text: str
    mode: str = "error_payment"  # error_payment | rejected | rejected_no_record


@dataclass
class _State:
    accounts: dict[str, JSONDict] = field(default_factory=dict)
    invoices: dict[str, JSONDict] = field(default_factory=dict)
    payments: dict[str, JSONDict] = field(default_factory=dict)
    payment_methods: dict[str, JSONDict] = field(default_factory=dict)
    subscriptions: dict[str, JSONDict] = field(default_factory=dict)
    credit_memos: list[JSONDict] = field(default_factory=list)


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, *, success_field: bool = True) -> None:
        super().__init__(message)
        self.status = status
        body: JSONDict = {"reasons": [{"code": code, "message": message}]}
        if success_field:
            body = {"success": False, "processId": "F00D1234", **body}
        self.body = body

    def as_answer(self) -> tuple[int, Any]:
        return self.status, self.body


def _dumps(value: Any) -> bytes:
    def default(o: Any) -> Any:
        if isinstance(o, Decimal):
            return float(o)
        raise TypeError(type(o).__name__)

    return json.dumps(value, default=default).encode("utf-8")


class FakeZuoraAPI(LoopbackServer):
    thread_name = "fake-zuora"
    poll_interval = 0.02

    def __init__(
        self,
        *,
        client_id: str = "billops-test-client",
        client_secret: str = "billops-test-secret-0123456789",
        token_lifetime: int = 3600,
        cpr_user: str = "ops@billops.example",
        cpr_token: str = "cpr-api-token-0123456789",
        host: str = "127.0.0.1",
    ) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.token_lifetime = token_lifetime
        self.cpr_user, self.cpr_token = cpr_user, cpr_token
        self.state = _State()
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.issued: list[str] = []
        self.retry_cycle: set[str] = set()  # invoice ids in a Configurable Payment Retry cycle
        self.submitted_payments: list[str] = []
        self.declines: dict[str, Decline] = {}  # payment method id -> how it declines
        self._injected: list[_Injected] = []
        self.idempotency = IdempotencyCache(ttl_seconds=ZUORA_TTL, compare_parameters=False)
        self._seq = itertools.count(1)
        self._lock = threading.RLock()
        self._listen(host)

    # ---------------------------------------------------------------- seeding

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._seq):030d}"[:32]

    def add_account(
        self,
        account_id: str,
        *,
        number: str | None = None,
        name: str = "Test Account",
        currency: str = "USD",
        default_payment_method: str | None = None,
        email: str = "billing@example.com",
        country: str = "United States",
    ) -> JSONDict:
        acct = {
            "id": account_id, "accountNumber": number or f"A-{account_id}", "name": name,
            "currency": currency, "defaultPaymentMethodId": default_payment_method, "status": "Active",
            "autoPay": True, "balance": Decimal(0), "createdDate": zdate(datetime(2026, 1, 5, tzinfo=UTC)),
            "billTo": {"firstName": "Pat", "lastName": "Doe", "workEmail": email, "country": country},
        }  # fmt: skip
        self.state.accounts[account_id] = acct
        return acct

    def add_payment_method(
        self,
        pm_id: str,
        account_id: str,
        *,
        card_type: str = "Visa",
        mask: str = "************4242",
        exp_month: int = 8,
        exp_year: int = 2030,
        status: str = "Active",
        pm_type: str = "CreditCard",
    ) -> JSONDict:
        pm = {
            "id": pm_id, "accountId": account_id, "type": pm_type, "creditCardType": card_type,
            "creditCardMaskNumber": mask, "creditCardExpirationMonth": exp_month,
            "creditCardExpirationYear": exp_year, "paymentMethodStatus": status,
            "createdDate": zdate(datetime(2026, 1, 5, tzinfo=UTC)),
        }  # fmt: skip
        self.state.payment_methods[pm_id] = pm
        return pm

    def add_invoice(
        self,
        invoice_id: str,
        account_id: str,
        *,
        number: str | None = None,
        amount: str = "49.99",
        balance: str | None = None,
        status: str = "Posted",
        currency: str | None = None,
        due: str = "2026-11-01",
        subscription_id: str | None = None,
        comments: str | None = None,
        posted: datetime | None = None,
    ) -> JSONDict:
        cur = currency or self.state.accounts[account_id]["currency"]
        items = []
        if subscription_id:
            items.append(
                {
                    "id": self._next_id("II"),
                    "invoiceId": invoice_id,
                    "subscriptionId": subscription_id,
                    "chargeName": "Pro Plan",
                    "chargeAmount": Decimal(amount),
                    "serviceStartDate": "2026-11-01",
                    "serviceEndDate": "2026-11-30",
                }
            )
        inv = {
            "id": invoice_id, "accountId": account_id, "invoiceNumber": number or f"INV-{invoice_id}",
            "status": status, "amount": Decimal(amount), "currency": cur,
            "balance": Decimal(balance if balance is not None else amount),
            "invoiceDate": "2026-11-01", "dueDate": due, "autoPay": True, "comments": comments,
            "postedDate": zdate(posted or datetime(2026, 11, 1, 8, tzinfo=UTC)),
            "createdDate": zdate(posted or datetime(2026, 11, 1, 8, tzinfo=UTC)),
            "includesRecurring": bool(subscription_id), "invoiceItems": items,
        }  # fmt: skip
        self.state.invoices[invoice_id] = inv
        return inv

    def add_payment(
        self,
        payment_id: str,
        account_id: str,
        *,
        amount: str,
        status: str = "Error",
        created: datetime,
        invoice_id: str | None = None,
        payment_method: str | None = None,
        gateway_response: str | None = None,
        gateway_code: str | None = None,
    ) -> JSONDict:
        acct = self.state.accounts[account_id]
        pay = {
            "id": payment_id, "paymentNumber": f"P-{next(self._seq):08d}", "accountId": account_id,
            "amount": Decimal(amount), "currency": acct["currency"], "status": status, "type": "Electronic",
            "effectiveDate": created.astimezone(PACIFIC).date().isoformat(), "createdDate": zdate(created),
            "updatedDate": zdate(created), "gateway": "Fake Gateway", "gatewayState": "Submitted",
            "gatewayResponse": gateway_response, "gatewayResponseCode": gateway_code,
            "paymentMethodId": payment_method or acct.get("defaultPaymentMethodId"),
            "paymentApplications": [],
        }  # fmt: skip
        if invoice_id:
            pay["paymentApplications"] = [
                {
                    "id": self._next_id("PA"),
                    "paymentId": payment_id,
                    "invoiceId": invoice_id,
                    "applyAmount": Decimal(amount),
                }
            ]
        self.state.payments[payment_id] = pay
        return pay

    def add_subscription(
        self, sub_id: str, account_id: str, *, status: str = "Active", number: str | None = None
    ) -> JSONDict:
        sub = {
            "id": sub_id, "accountId": account_id, "subscriptionNumber": number or f"S-{sub_id}",
            "name": f"S-{sub_id}", "status": status, "autoRenew": True, "termType": "TERMED",
            "termEndDate": "2027-11-01", "cMRR": Decimal("49.99"),
            "currency": self.state.accounts[account_id]["currency"],
            "createdDate": zdate(datetime(2026, 1, 5, tzinfo=UTC)),
        }  # fmt: skip
        self.state.subscriptions[sub_id] = sub
        return sub

    def decline(self, pm_id: str, code: str, text: str, *, mode: str = "error_payment") -> None:
        """Payments with this payment method are declined with this gateway code and text."""
        self.declines[pm_id] = Decline(code, text, mode)

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
        after: bool = False,
    ) -> None:
        with self._lock:
            for _ in range(times):
                self._injected.append(
                    _Injected(status, body, method, re.compile(path) if path else None, after)
                )

    # ---------------------------------------------------------------- request handling

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _any(self) -> None:
                api._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        return Handler

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        req = read_request(h, unquote_path=True)
        with self._lock:
            self.requests.append(req)
            injected = next((i for i in self._injected if i.matches(req.method, req.path)), None)
            if injected is not None:
                self._injected.remove(injected)
            if injected is not None and not injected.after:
                status, payload = injected.status, injected.body
            else:
                status, payload = self._route(req)
                if injected is not None:
                    status, payload = injected.status, injected.body
        raw = payload if isinstance(payload, bytes) else _dumps(payload) if payload is not None else b""
        req.status = status
        h.send_response(status)
        h.send_header("Content-Type", "application/json" if not isinstance(payload, bytes) else "text/plain")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def _route(self, req: RecordedRequest) -> tuple[int, Any]:
        try:
            if req.method == "POST" and req.path == "/oauth/token":
                return self._token(req)
            if req.path.startswith("/api/v1/"):
                self._check_basic(req)
                return self._retry_api(req)
            self._check_bearer(req)
            if req.path.startswith("/object-query/"):
                return self._object_query(req)
            return self._v1(req)
        except ApiError as exc:
            return exc.status, exc.body

    # ---------------------------------------------------------------- auth

    def _token(self, req: RecordedRequest) -> tuple[int, Any]:
        form = req.form
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "Bad client credentials"}
        token = secrets.token_hex(16)
        self.tokens[token] = time.monotonic() + self.token_lifetime
        self.issued.append(token)
        body = {"access_token": token, "token_type": "bearer", "expires_in": self.token_lifetime,
                "scope": "user.abc tenant.123 entity.xyz", "jti": secrets.token_hex(8)}  # fmt: skip
        return 200, body

    def _check_bearer(self, req: RecordedRequest) -> None:
        scheme, _, token = (req.header("authorization") or "").partition(" ")
        expiry = self.tokens.get(token) if scheme.lower() == "bearer" else None
        if expiry is None or expiry < time.monotonic():
            raise ApiError(401, 90000011, "Authentication error", success_field=False)

    def _check_basic(self, req: RecordedRequest) -> None:
        if req.basic_credentials != (self.cpr_user, self.cpr_token):
            raise ApiError(401, 90000011, "Invalid API token", success_field=False)

    # ---------------------------------------------------------------- Object Query

    def _table(self, resource: str) -> dict[str, JSONDict]:
        return {
            "accounts": self.state.accounts, "invoices": self.state.invoices, "payments": self.state.payments,
            "payment-methods": self.state.payment_methods, "subscriptions": self.state.subscriptions,
        }[resource]  # fmt: skip

    def _expanded(self, resource: str, obj: JSONDict, expand: set[str]) -> JSONDict:
        out = copy.deepcopy(obj)
        if resource == "accounts" and "billto" not in expand:
            out.pop("billTo", None)
        if resource == "invoices" and "invoiceitems" not in expand:
            out.pop("invoiceItems", None)
        if resource == "payments":
            if "paymentapplications" not in expand:
                out.pop("paymentApplications", None)
            if "paymentmethod" in expand and obj.get("paymentMethodId") in self.state.payment_methods:
                out["paymentMethod"] = copy.deepcopy(self.state.payment_methods[obj["paymentMethodId"]])
        if resource == "payment-methods" and "account" in expand:
            out["account"] = copy.deepcopy(self.state.accounts.get(obj["accountId"]))
        return out

    def _object_query(self, req: RecordedRequest) -> tuple[int, Any]:
        if req.method != "GET":
            raise ApiError(405, 90000045, "method not allowed", success_field=False)
        rest = req.path[len("/object-query/") :].split("/")
        resource = rest[0]
        if resource not in RESOURCES:
            raise ApiError(404, 90000040, f"unknown object {resource}", success_field=False)
        table = self._table(resource)
        expand = {e.lower() for e in req.query.get("expand[]", [])}
        if len(rest) == 2:
            key = rest[1]
            number_field = RESOURCES[resource]
            obj = table.get(key) or next(
                (o for o in table.values() if number_field and o.get(number_field) == key), None
            )
            if obj is None:
                raise ApiError(404, 50000040, f"{resource} {key} not found", success_field=False)
            return 200, self._expanded(resource, obj, expand)
        size = int((req.query.get("pageSize") or ["10"])[-1])
        if not 1 <= size <= 99:
            raise ApiError(400, 90000020, "pageSize must be between 1 and 99", success_field=False)
        rows = list(table.values())
        for f in req.query.get("filter[]", []):
            m = re.fullmatch(r"(\w+)\.EQ:(.*)", f)
            if not m:
                raise ApiError(400, 90000020, f"invalid filter {f}", success_field=False)
            name, value = m.group(1).lower(), m.group(2)
            rows = [r for r in rows if any(k.lower() == name and str(v) == value for k, v in r.items())]
        for s in reversed(req.query.get("sort[]", [])):
            name, _, direction = s.rpartition(".")
            rows.sort(
                key=lambda r, n=name.lower(): str(next((v for k, v in r.items() if k.lower() == n), "")),
                reverse=direction.upper() == "DESC",
            )
        cursor = (req.query.get("cursor") or [""])[-1]
        start = int(base64.urlsafe_b64decode(cursor.encode()).decode()) if cursor else 0
        page = rows[start : start + size]
        body: JSONDict = {"data": [self._expanded(resource, r, expand) for r in page]}
        if start + size < len(rows):
            body["nextPage"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return 200, body

    # ---------------------------------------------------------------- v1 writes

    def _v1(self, req: RecordedRequest) -> tuple[int, Any]:
        return self._idempotently(req, self._v1_route)

    def _idempotently(
        self, req: RecordedRequest, route: Callable[[RecordedRequest], tuple[int, Any]]
    ) -> tuple[int, Any]:
        """Run `route` once per `Idempotency-Key` (POST/PATCH), replaying the saved answer after that."""
        key = req.header("idempotency-key")
        if not key or req.method not in ("POST", "PATCH"):
            try:
                return route(req)
            except ApiError as exc:
                return exc.status, exc.body
        verdict = self.idempotency.begin("tenant", key, req.method, req.path, json_fingerprint(req.body))
        if isinstance(verdict, Replay):
            req.replayed = True
            return verdict.stored.status, json.loads(verdict.stored.body)
        if isinstance(verdict, Conflict):
            if verdict.reason == "in_flight":
                return ApiError(
                    409, 90000080, "a request with this idempotency key is in progress"
                ).as_answer()
            msg = f"idempotency key {key} was used on {verdict.first_method} {verdict.first_path}"
            return ApiError(422, 90000020, msg).as_answer()
        try:
            status, payload = route(req)
        except ApiError as exc:
            status, payload = exc.status, exc.body
        self.idempotency.finish(verdict, status, (), _dumps(payload))
        return status, payload

    def _v1_route(self, req: RecordedRequest) -> tuple[int, Any]:
        body = req.json if req.body else {}
        if req.method == "POST" and req.path == "/v1/payments":
            return self._create_payment(body)
        m = re.fullmatch(r"/v1/invoices/([^/]+)", req.path)
        if m and req.method == "PUT":
            inv = self.state.invoices.get(m.group(1))
            if inv is None:
                raise ApiError(200, 50000040, f"invoice {m.group(1)} not found")
            if "comments" in body and len(str(body["comments"])) > 255:
                raise ApiError(200, 50000020, "comments: the maximum length is 255 characters")
            for k in ("autoPay", "comments"):
                if k in body:
                    inv[k] = body[k]
            return 200, {"success": True, "id": inv["id"]}
        m = re.fullmatch(r"/v1/subscriptions/([^/]+)/suspend", req.path)
        if m and req.method == "PUT":
            sub = self.state.subscriptions.get(m.group(1))
            if sub is None:
                raise ApiError(200, 50000040, f"subscription {m.group(1)} not found")
            if sub["status"] != "Active":
                raise ApiError(200, 50000030, "The subscription must be Active to be suspended")
            sub["status"] = "Suspended"
            sub["suspend"] = body
            today = datetime.now(UTC).date().isoformat()
            return 200, {"success": True, "subscriptionId": sub["id"], "suspendDate": today,
                         "resumeDate": body.get("resumeSpecificDate")}  # fmt: skip
        if req.method == "POST" and req.path == "/v1/creditmemos":
            if body.get("accountId") not in self.state.accounts:
                raise ApiError(200, 50000040, "account not found")
            memo = {"id": self._next_id("CM"), "number": f"CM{next(self._seq):08d}", "status": "Posted",
                    "accountId": body["accountId"], "amount": body["charges"][0]["amount"]}  # fmt: skip
            self.state.credit_memos.append({**memo, "request": body})
            return 200, {"success": True, **memo}
        raise ApiError(404, 90000040, f"no such endpoint {req.method} {req.path}", success_field=False)

    def _create_payment(self, body: JSONDict) -> tuple[int, Any]:
        acct = self.state.accounts.get(body.get("accountId", ""))
        if acct is None:
            raise ApiError(200, 50000040, "Invalid accountId")
        pm = self.state.payment_methods.get(body.get("paymentMethodId", ""))
        if pm is None or pm["accountId"] != acct["id"] or pm["paymentMethodStatus"] != "Active":
            raise ApiError(200, 50000020, "Invalid paymentMethodId")
        [applied] = body["invoices"]
        inv = self.state.invoices.get(applied["invoiceId"])
        if inv is None:
            raise ApiError(200, 50000040, "Invalid invoiceId")
        amount = Decimal(str(body["amount"]))
        if amount > inv["balance"]:
            raise ApiError(200, 50000020, "The amount to apply is greater than the invoice balance")
        now = datetime.now(UTC)
        pay_id = self._next_id("PY")
        decline = self.declines.get(pm["id"])
        if decline is not None:
            if decline.mode != "rejected_no_record":
                self.add_payment(pay_id, acct["id"], amount=str(amount), status="Error", created=now,
                                 payment_method=pm["id"], gateway_response=decline.text,
                                 gateway_code=decline.code)  # fmt: skip
                self.state.payments[pay_id]["gatewayState"] = "NotSubmitted"
            if decline.mode == "error_payment":
                return 200, self._payment_answer(self.state.payments[pay_id])
            raise ApiError(200, 58730020, f"Transaction declined.{decline.code} - {decline.text}")
        self.add_payment(pay_id, acct["id"], amount=str(amount), status="Processed", created=now,
                         invoice_id=inv["id"], payment_method=pm["id"], gateway_response="Approved",
                         gateway_code="approved")  # fmt: skip
        inv["balance"] = inv["balance"] - amount
        return 200, self._payment_answer(self.state.payments[pay_id])

    @staticmethod
    def _payment_answer(pay: JSONDict) -> JSONDict:
        """The create-payment answer: the payment's fields (number, not paymentNumber) and success."""
        keys = (
            "id",
            "accountId",
            "amount",
            "currency",
            "status",
            "type",
            "effectiveDate",
            "createdDate",
            "updatedDate",
            "gatewayResponse",
            "gatewayResponseCode",
            "gatewayState",
            "paymentMethodId",
        )
        return {"success": True, "number": pay["paymentNumber"], **{k: pay[k] for k in keys}}

    # ---------------------------------------------------------------- Configurable Payment Retry

    def _submit_failed_payment(self, req: RecordedRequest) -> tuple[int, Any]:
        pay = self.state.payments.get((req.json or {}).get("payment_id", ""))
        if pay is None or pay["status"] != "Error":
            return 200, {"success": False, "message": "Payment is not a failed payment"}
        self.submitted_payments.append(pay["id"])
        return 200, {"success": True, "message": "Payment entered into retry process"}

    def _retry_api(self, req: RecordedRequest) -> tuple[int, Any]:
        m = re.fullmatch(r"/api/v1/payments/remove_invoice_from_retry_cycle/([^/]+)", req.path)
        if m and req.method == "PUT":
            self.retry_cycle.discard(m.group(1))
            return 200, {
                "success": True,
                "message": "Payments with the following IDs have been removed from the retry cycle: []",
            }
        if req.method == "POST" and req.path == "/api/v1/payments/submit_failed_payment":
            return self._idempotently(req, self._submit_failed_payment)
        raise ApiError(404, 90000040, f"no such endpoint {req.method} {req.path}", success_field=False)
