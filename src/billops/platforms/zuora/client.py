"""The Zuora implementation of `PlatformClient`, on httpx (Zuora has no official Python SDK in our stack).

Authentication: OAuth 2.0 client credentials (`POST /oauth/token`, form-encoded). The bearer token is
cached until shortly before `expires_in` runs out and fetched again once when an API call answers 401.

Reads go through the Object Query API (`GET /object-query/{invoices,accounts,payments,payment-methods,
subscriptions}`: camelCase JSON, `expand[]`, `filter[]=field.EQ:value`, `sort[]`, cursor pages of at
most 99 via `nextPage`), which works with or without Invoice Settlement; the same normalizers read the
callout bodies. JSON numbers are parsed as `Decimal`, so amounts stay exact.

Writes (REST v1):
- `pay_invoice`: `POST /v1/payments` (type Electronic, the invoice in `invoices`, the given payment method
  or the account's default). A decline (a payment in status Error, or a refused request that left an
  Error payment / a gateway message) is `PayResult("failed")` with the classified attempt. An invoice
  with nothing left to collect is `already_settled` without any POST. Once the POST may have gone out
  (timeout, 5xx), the client looks at Zuora's state instead of raising a retryable error.
- `set_native_retries`: the invoice's `autoPay` (`PUT /v1/invoices/{id}`; payment runs and Zuora's retry
  rules only collect auto-pay invoices) plus, when Configurable Payment Retry credentials are given,
  `PUT /api/v1/payments/remove_invoice_from_retry_cycle/{id}` or
  `POST /api/v1/payments/submit_failed_payment` (CPR uses HTTP Basic: login e-mail + CPR API token).
- `write_note`: a ``[billops] key=value; …`` segment in the invoice `comments` (255 characters, the rest
  of the comment is kept).
- `pause_subscription`: `PUT /v1/subscriptions/{key}/suspend` (today; resume on a date when given).
- `apply_credit`: a posted credit memo from a charge (`POST /v1/creditmemos`, Invoice Settlement), only
  when a product rate plan charge id for credits is configured.
- No card-update link and no coupons: Zuora has no per-customer hosted page and no coupon API
  (`PlatformError(code="unsupported")`, capabilities False).

`Idempotency-Key` goes on every POST (Zuora honours it on POST and PATCH for 24 h and asks not to send it
on other methods); the PUT writes are made safe by reading first (already suspended, same comment).
Errors become `PlatformError`: `retryable` for connection problems, 429, 5xx, Zuora's lock-contention /
temporary error categories; a 200 answer with ``"success": false`` is an error too.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from billops.domain import (
    Customer,
    Invoice,
    InvoiceStatus,
    Money,
    PaymentAttempt,
    PaymentMethod,
)
from billops.domain.billing import ZERO_DECIMAL
from billops.errors import BillopsError, InputError, PlatformError
from billops.platforms.base import SETTLED, BackfillItem, BackfillPage, Capabilities, PayResult
from billops.platforms.zuora.normalize import (
    THREE_DECIMAL,
    zuora_account,
    zuora_invoice,
    zuora_payment_attempt,
    zuora_payment_method,
    zuora_subscription,
)

T = TypeVar("T")

# backfill resource -> (Object Query path, expand[])
RESOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "customers": ("accounts", ("billto",)),
    "subscriptions": ("subscriptions", ()),
    "invoices": ("invoices", ("invoiceitems",)),
    "payment_attempts": ("payments", ("paymentapplications", "paymentmethod")),
    "payment_methods": ("payment-methods", ("account",)),
}
MAX_PAGE = 99  # Object Query's largest page
NOTE_MARK, NOTE_LIMIT = "[billops]", 255
SUSPEND_VERSION = "211.0"  # Zuora asks for 211.0+ on suspend when Invoice Settlement is on
_RETRYABLE_CATEGORIES = {50: "lock_contention", 61: "temporary_error", 70: "rate_limit"}
_CATEGORY_CODES = {10: "permission_error", 11: "authentication_error", 40: "not_found", 45: "unsupported"}
_DECLINE_WORDS = ("declin", "insufficient", "expired", "do not honor", "refused", "stolen", "lost card")


def _loads(content: bytes) -> Any:
    return json.loads(content, parse_float=Decimal)


def _major(minor: int, currency: str) -> float:
    """Integer minor units -> the decimal amount Zuora takes (exact: a float prints its shortest form)."""
    exponent = 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2
    return float(Decimal(minor).scaleb(-exponent))


class ZuoraPlatformClient:
    """PlatformClient for Zuora Billing. `api_url` is the tenant's REST endpoint (e.g. https://rest.zuora.com);
    `retry_api_url` + `retry_api_credentials` ("login e-mail", "CPR API token") enable Configurable Payment
    Retry calls; `credit_charge_id` (a product rate plan charge) enables `apply_credit`."""

    platform = "zuora"

    def __init__(
        self,
        api_url: str,
        client_id: str,
        client_secret: str,
        *,
        http: httpx.Client | None = None,
        retry_api_url: str | None = None,
        retry_api_credentials: tuple[str, str] | None = None,
        credit_charge_id: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not api_url or not api_url.startswith(("https://", "http://")):
            raise InputError("a Zuora REST URL is required (BILLOPS_ZUORA_API_URL): https://rest.zuora.com")
        if not client_id or not client_secret:
            raise InputError(
                "a Zuora OAuth client id and secret are required (BILLOPS_ZUORA_CLIENT_ID/_SECRET)"
            )
        self.api_url = api_url.rstrip("/")
        self._client_id, self._client_secret = client_id, client_secret
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=timeout)
        self._retry_url = (retry_api_url or self.api_url).rstrip("/") if retry_api_credentials else None
        self._retry_auth = retry_api_credentials
        self.credit_charge_id = credit_charge_id
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_until = 0.0
        self.capabilities = Capabilities(
            retry_invoice=True, disable_native_retries=True, write_note=True, card_update_link=False,
            pay_with_other_method=True, idempotency_keys=True, backfill=True, pause_subscription=True,
            credit=credit_charge_id is not None, coupon=False,
        )  # fmt: skip

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    # ------------------------------------------------------------------ OAuth

    def _bearer(self) -> str:
        with self._lock:
            if self._token is not None and time.monotonic() < self._token_until:
                return self._token
            self._token, self._token_until = self._fetch_token()
            return self._token

    def _drop_token(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch_token(self) -> tuple[str, float]:
        form = {"client_id": self._client_id, "client_secret": self._client_secret}
        form["grant_type"] = "client_credentials"
        try:
            resp = self._http.post(
                f"{self.api_url}/oauth/token", data=form, headers={"Accept": "application/json"}
            )
        except httpx.TransportError as exc:
            msg = f"Zuora OAuth token request failed: {type(exc).__name__}: {exc}"
            raise PlatformError(msg, retryable=True, code="connection_error") from exc
        try:
            body = _loads(resp.content) if resp.content else {}
        except ValueError:
            body = {}
        if resp.status_code == 429 or resp.status_code >= 500:
            code = "rate_limit" if resp.status_code == 429 else f"http_{resp.status_code}"
            msg = f"Zuora OAuth token request failed (HTTP {resp.status_code})"
            raise PlatformError(msg, retryable=True, code=code)
        token = body.get("access_token") if isinstance(body, dict) else None
        if resp.status_code != 200 or not isinstance(token, str) or not token:
            detail = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
            raise PlatformError(
                f"Zuora refused the OAuth client credentials (HTTP {resp.status_code}"
                f"{': ' + str(detail) if detail else ''}); check BILLOPS_ZUORA_CLIENT_ID / _SECRET",
                code="authentication_error",
            )
        lifetime = body.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | Decimal) and lifetime > 0 else 3600.0
        return token, time.monotonic() + seconds - min(60.0, seconds / 10)

    # ------------------------------------------------------------------ HTTP

    def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        retry_api: bool = False,
        version: str | None = None,
    ) -> httpx.Response:
        """One request (the bearer refreshed once on 401). Transport errors become PlatformError:
        `not_sent` when the connection was never made, `connection_error` otherwise (both retryable)."""
        base = self._retry_url if retry_api else self.api_url
        assert base is not None
        headers = {"Accept": "application/json"}
        content = None
        if body is not None:
            content = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if idempotency_key and method in ("POST", "PATCH"):
            headers["Idempotency-Key"] = idempotency_key
        if version:
            headers["Zuora-Version"] = version
        for attempt in (1, 2):
            token = ""
            if retry_api and self._retry_auth is not None:
                pair = f"{self._retry_auth[0]}:{self._retry_auth[1]}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            else:
                token = self._bearer()
                headers["Authorization"] = f"Bearer {token}"
            try:
                resp = self._http.request(
                    method, base + path, params=params, content=content, headers=headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing reached Zuora
                msg = f"Zuora {what} failed: cannot connect: {exc}"
                raise PlatformError(msg, retryable=True, code="not_sent") from exc
            except httpx.TransportError as exc:
                msg = f"Zuora {what} failed: {type(exc).__name__}: {exc}"
                raise PlatformError(msg, retryable=True, code="connection_error") from exc
            if resp.status_code == 401 and token and attempt == 1:
                self._drop_token(token)  # expired or revoked early: fetch a new one, once
                continue
            return resp
        return resp

    def _json(self, resp: httpx.Response, what: str) -> dict[str, Any]:
        """The answer's JSON object, or the PlatformError it means (including 200 with success false)."""
        try:
            data = _loads(resp.content) if resp.content else {}
        except ValueError:
            code = f"http_{resp.status_code}" if resp.status_code >= 400 else "bad_response"
            msg = f"Zuora {what} answered HTTP {resp.status_code} with a body that is not JSON"
            raise PlatformError(msg, retryable=resp.status_code >= 500, code=code) from None
        if resp.status_code >= 400 or not isinstance(data, dict) or data.get("success") is False:
            raise zuora_error(what, resp.status_code, data)
        return data

    def _call(self, method: str, path: str, *, what: str, **kw: Any) -> dict[str, Any]:
        return self._json(self._send(method, path, what=what, **kw), what)

    def _norm(self, what: str, make: Callable[..., T], *args: Any, **kw: Any) -> T:
        try:
            return make(*args, **kw)
        except PlatformError:
            raise
        except BillopsError as exc:
            msg = f"Zuora returned a {what} billops cannot read: {exc.message}"
            raise PlatformError(msg, code="unreadable_response") from exc

    @staticmethod
    def _key(idempotency_key: str) -> str:
        if not idempotency_key:
            raise InputError("every Zuora write needs an idempotency key")
        return idempotency_key

    @staticmethod
    def _safe(fn: Callable[..., T], *args: Any, **kw: Any) -> T | None:
        try:
            return fn(*args, **kw)
        except PlatformError:
            return None

    # ------------------------------------------------------------------ Object Query

    def _get(self, resource: str, key: str, *, expand: tuple[str, ...] = ()) -> dict[str, Any]:
        params = {"expand[]": list(expand)} if expand else None
        return self._call(
            "GET", f"/object-query/{resource}/{quote(key, safe='')}", what=f"{resource} {key}", params=params
        )

    def _list(
        self,
        resource: str,
        *,
        filters: tuple[str, ...] = (),
        expand: tuple[str, ...] = (),
        sort: tuple[str, ...] = (),
        page_size: int = MAX_PAGE,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        params: dict[str, Any] = {"pageSize": page_size}
        for name, values in (("filter[]", filters), ("expand[]", expand), ("sort[]", sort)):
            if values:
                params[name] = list(values)
        if cursor:
            params["cursor"] = cursor
        data = self._call("GET", f"/object-query/{resource}", what=f"{resource} list", params=params)
        items = data.get("data") or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise PlatformError(f"Zuora {resource} list answered without a data list", code="bad_response")
        nxt = data.get("nextPage")
        return items, nxt if isinstance(nxt, str) and nxt else None

    # ------------------------------------------------------------------ reads

    def get_invoice(self, invoice_id: str) -> Invoice:
        raw = self._get("invoices", invoice_id, expand=("invoiceitems",))
        return self._norm("invoice", zuora_invoice, raw)

    def get_customer(self, customer_id: str) -> Customer:
        raw = self._get("accounts", customer_id, expand=("billto",))
        return self._norm("account", zuora_account, raw)

    def list_payment_methods(self, customer_id: str) -> list[PaymentMethod]:
        """The account's payment methods (closed ones left out), its default flagged."""
        default_id = self.get_customer(customer_id).default_payment_method_id
        out: list[PaymentMethod] = []
        cursor: str | None = None
        for _ in range(20):
            raw, cursor = self._list(
                "payment-methods", filters=(f"accountid.EQ:{customer_id}",), cursor=cursor
            )
            for d in raw:
                if str(d.get("paymentMethodStatus") or d.get("status") or "").lower() == "closed":
                    continue
                out.append(self._norm("payment method", zuora_payment_method, d, default_id=default_id))
            if cursor is None:
                break
        return out

    def _account_payments(self, account_id: str, limit: int = 20) -> list[dict[str, Any]]:
        raw, _ = self._list(
            "payments",
            filters=(f"accountid.EQ:{account_id}",),
            expand=("paymentapplications", "paymentmethod"),
            sort=("createddate.DESC",),
            page_size=limit,
        )
        return raw

    def latest_attempt(self, invoice: Invoice) -> PaymentAttempt | None:
        """The newest payment applied to the invoice; else (a declined payment is applied to nothing) the
        account's newest Error payment for exactly the open amount made since the invoice was posted."""
        if not invoice.customer_id:
            return None
        return self._attempt_for(invoice, self._account_payments(invoice.customer_id))

    def _attempt_for(
        self, invoice: Invoice, payments: list[dict[str, Any]], *, since: datetime | None = None
    ) -> PaymentAttempt | None:
        attempts = [
            (d, self._norm("payment", zuora_payment_attempt, d, currency=invoice.currency)) for d in payments
        ]
        for d, att in attempts:
            apps = d.get("paymentApplications") or []
            if any(isinstance(a, dict) and a.get("invoiceId") == invoice.id for a in apps):
                return att.model_copy(update={"invoice_id": invoice.id})
        floor = since or invoice.created_at
        for _, att in attempts:
            if (
                att.outcome == "failed"
                and att.amount == (invoice.amount_remaining or invoice.amount_due)
                and att.currency == invoice.currency
                and (floor is None or att.attempted_at >= floor)
            ):
                return att.model_copy(update={"invoice_id": invoice.id})
        return None

    def invoice_for_payment(self, payment_id: str) -> Invoice | None:
        """The invoice a payment was for (a Payment Declined callout carries no invoice): the invoice it
        was applied to, else the account's only posted invoice whose balance is exactly the amount."""
        raw = self._get("payments", payment_id, expand=("paymentapplications",))
        attempt = self._norm("payment", zuora_payment_attempt, raw)
        if attempt.invoice_id:
            return self.get_invoice(attempt.invoice_id)
        if not attempt.customer_id:
            return None
        invoices, _ = self._list(
            "invoices", filters=(f"accountid.EQ:{attempt.customer_id}", "status.EQ:Posted")
        )
        matches = [
            inv
            for inv in (self._norm("invoice", zuora_invoice, d) for d in invoices)
            if inv.status == InvoiceStatus.open and inv.amount_remaining == attempt.amount
        ]
        return matches[0] if len(matches) == 1 else None

    # ------------------------------------------------------------------ writes: pay

    def pay_invoice(
        self,
        invoice_id: str,
        *,
        idempotency_key: str,
        payment_method_id: str | None = None,
        replay: bool = False,  # nothing more to do: the ledger answers a key it has seen
    ) -> PayResult:
        key = self._key(idempotency_key)
        before = self.get_invoice(invoice_id)
        if before.status in SETTLED:
            return PayResult("already_settled", before, message=f"invoice is already {before.status.value}")
        if before.status != InvoiceStatus.open or not before.customer_id:
            why = f"status {before.status.value}" if before.customer_id else "no account"
            raise PlatformError(
                f"Zuora invoice {invoice_id} cannot be paid ({why})", code="invoice_not_payable"
            )
        pm_id = payment_method_id or self.get_customer(before.customer_id).default_payment_method_id
        if not pm_id:
            msg = f"Zuora account {before.customer_id} has no default payment method"
            raise PlatformError(msg, code="no_payment_method")
        amount = _major(before.amount_remaining, before.currency)
        body = {
            "accountId": before.customer_id,
            "amount": amount,
            "currency": before.currency.upper(),
            "effectiveDate": datetime.now(UTC).date().isoformat(),
            "type": "Electronic",
            "paymentMethodId": pm_id,
            "invoices": [{"invoiceId": before.id, "amount": amount}],
            "comment": "BillOps payment recovery",
        }
        started = datetime.now(UTC) - timedelta(minutes=2)  # Zuora's clock may be a little behind ours
        what = f"payments.create(invoice {invoice_id})"
        try:
            resp = self._send("POST", "/v1/payments", what=what, body=body, idempotency_key=key)
        except PlatformError as exc:
            if exc.code == "not_sent":
                raise
            return self._unknown_outcome(before, started, str(exc))
        if resp.status_code >= 500:
            return self._unknown_outcome(before, started, f"HTTP {resp.status_code}")
        try:
            payment = self._json(resp, what)
        except PlatformError as exc:
            if exc.retryable:  # 429, lock contention: Zuora did not process it
                raise
            return self._refused(before, started, exc, pm_id)
        # The payment exists: from here on report, never raise.
        card = self._safe(self._get, "payment-methods", pm_id)  # the card decides the network rules
        try:
            raw = {**payment, "paymentMethod": card} if card and "paymentMethod" not in payment else payment
            attempt = zuora_payment_attempt(raw, invoice_id=before.id, currency=before.currency)
        except BillopsError as exc:
            after = self._safe(self.get_invoice, invoice_id) or before
            paid = after.status == InvoiceStatus.paid
            msg = f"payment created, but its answer is unreadable: {exc}"
            return PayResult("succeeded" if paid else "failed", after, message=msg)
        return self._result(before, attempt)

    def _result(self, before: Invoice, attempt: PaymentAttempt) -> PayResult:
        attempt = attempt.model_copy(update={"initiated_by": "billops", "invoice_id": before.id})
        after = self._safe(self.get_invoice, before.id) or before
        if attempt.outcome == "succeeded":
            if after.status not in SETTLED:  # the read raced the settlement: trust the payment
                left = max(after.amount_remaining - attempt.amount, 0)
                after = after.model_copy(update={"amount_remaining": left})
            return PayResult("succeeded", after, attempt, message="paid")
        if attempt.outcome == "pending":
            msg = "payment is processing; the invoice is not settled yet"
            return PayResult("failed", after, attempt, message=msg)
        d = attempt.decline
        return PayResult(
            "failed", after, attempt, message=(d.message or f"declined: {d.code}") if d else "declined"
        )

    def _new_payment(
        self, before: Invoice, started: datetime
    ) -> tuple[Invoice | None, PaymentAttempt | None]:
        """After an unclear or refused payment request: the invoice now, and the payment it left, if any."""
        after = self._safe(self.get_invoice, before.id)
        payments = self._safe(self._account_payments, before.customer_id or "", 10) or []
        attempt = self._safe(self._attempt_for, before, payments, since=started)
        return after, attempt if attempt is not None and attempt.attempted_at >= started else None

    def _refused(self, before: Invoice, started: datetime, exc: PlatformError, pm_id: str) -> PayResult:
        """Zuora refused the request: a decline (an Error payment, or the gateway's words), a race with
        another payment (the invoice is settled now), or a real error (raised)."""
        after, attempt = self._new_payment(before, started)
        if after is not None and after.status in SETTLED:
            return PayResult("already_settled", after, message=f"invoice is already {after.status.value}")
        if attempt is not None and attempt.outcome == "failed":
            return self._result(before, attempt)
        if not any(word in exc.message.lower() for word in _DECLINE_WORDS):
            raise exc
        synthetic = {
            "id": f"declined:{before.id}:{int(started.timestamp())}",
            "status": "Error",
            "amount": str(_major(before.amount_remaining, before.currency)),
            "currency": before.currency,
            "createdDate": datetime.now(UTC).isoformat(),
            "accountId": before.customer_id,
            "gatewayResponse": exc.message.split(": ", 1)[-1],
            "paymentMethodId": pm_id,
            "paymentMethod": self._safe(self._get, "payment-methods", pm_id),
        }
        attempt = self._safe(self._norm, "payment", zuora_payment_attempt, synthetic, invoice_id=before.id)
        if attempt is not None:
            attempt = attempt.model_copy(update={"initiated_by": "billops"})
        return PayResult("failed", after or before, attempt, message=exc.message)

    def _unknown_outcome(self, before: Invoice, started: datetime, why: str) -> PayResult:
        """The payment request may have gone out: look at what Zuora shows before saying anything."""
        after, attempt = self._new_payment(before, started)
        if attempt is not None:
            return self._result(before, attempt)
        if after is not None and after.status in SETTLED:
            return PayResult("already_settled", after, message=f"invoice is {after.status.value} ({why})")
        raise PlatformError(
            f"Zuora payments.create(invoice {before.id}) got no clear answer ({why}) and Zuora shows no "
            "payment yet; resending with the same idempotency key within 24 h is safe (Zuora deduplicates)",
            retryable=False,
            code="payment_outcome_unknown",
        )

    # ------------------------------------------------------------------ other writes

    def _put_invoice(self, invoice_id: str, body: dict[str, Any]) -> None:
        what = f"invoices.update({invoice_id}, {', '.join(body)})"
        self._call("PUT", f"/v1/invoices/{quote(invoice_id, safe='')}", what=what, body=body)

    def set_native_retries(self, invoice_id: str, enabled: bool, *, idempotency_key: str) -> None:
        """Zuora's own collection of this invoice: its `autoPay` flag (payment runs and the retry rules
        only pick auto-pay invoices) and, with CPR credentials, its Configurable Payment Retry cycle."""
        key = self._key(idempotency_key)
        self._put_invoice(invoice_id, {"autoPay": enabled})
        if self._retry_url is None:
            return
        if not enabled:
            path = f"/api/v1/payments/remove_invoice_from_retry_cycle/{quote(invoice_id, safe='')}"
            self._call("PUT", path, what=f"remove_invoice_from_retry_cycle({invoice_id})", retry_api=True)
            return
        attempt = self.latest_attempt(self.get_invoice(invoice_id))
        if attempt is None or attempt.outcome != "failed":
            return  # no failed payment: nothing for a retry cycle to retry (auto-pay is back on)
        what = f"submit_failed_payment({attempt.id})"
        body = {"payment_id": attempt.id}
        path = "/api/v1/payments/submit_failed_payment"
        self._call("POST", path, what=what, body=body, idempotency_key=key, retry_api=True)

    def write_note(self, invoice_id: str, note: dict[str, str], *, idempotency_key: str) -> None:
        """Put ``[billops] key=value; …`` at the end of the invoice comments (replacing an earlier one)."""
        self._key(idempotency_key)
        if any(not k or not k.strip() for k in note):
            raise InputError("note keys must not be empty")
        if not note:
            return
        current = str(self._get("invoices", invoice_id).get("comments") or "")
        kept = current.split(NOTE_MARK, 1)[0].rstrip()
        line = NOTE_MARK + " " + "; ".join(f"{k.strip()}={str(v).strip()}" for k, v in note.items())
        if len(kept) > NOTE_LIMIT - 64:  # leave the note some room
            kept = kept[: NOTE_LIMIT - 64].rstrip()
        comments = (f"{kept} {line}" if kept else line)[:NOTE_LIMIT]
        if comments != current:
            self._put_invoice(invoice_id, {"comments": comments})

    def card_update_link(self, customer_id: str, *, return_url: str | None, idempotency_key: str) -> str:
        raise PlatformError(
            "Zuora has no hosted page for one customer to update a card: send your own Payment Pages 2.0 "
            "form link instead (see docs/platforms/zuora.md)",
            code="unsupported",
        )

    def pause_subscription(
        self, subscription_id: str, *, resume_at: datetime | None, idempotency_key: str
    ) -> None:
        """Suspend the subscription today, resuming on `resume_at`'s date when given (suspended: no-op)."""
        self._key(idempotency_key)
        if resume_at is not None and resume_at.date() <= datetime.now(UTC).date():
            raise InputError("resume_at must be a future date")
        sub = self._get("subscriptions", subscription_id)
        status = str(sub.get("status") or "")
        if status.lower() == "suspended":
            return
        if status.lower() != "active":
            msg = f"Zuora subscription {subscription_id} is {status or 'without status'}, not Active"
            raise PlatformError(msg, code="subscription_not_active")
        body: dict[str, Any] = {"suspendPolicy": "Today", "resume": resume_at is not None}
        if resume_at is not None:
            body |= {
                "resumePolicy": "SpecificDate",
                "resumeSpecificDate": resume_at.astimezone(UTC).date().isoformat(),
            }
        self._call(
            "PUT",
            f"/v1/subscriptions/{quote(subscription_id, safe='')}/suspend",
            what=f"subscriptions.suspend({subscription_id})",
            body=body,
            version=SUSPEND_VERSION,
        )

    def apply_credit(self, customer_id: str, amount: Money, *, reason: str, idempotency_key: str) -> None:
        """A posted credit memo from the configured charge, applied to the account's next invoices."""
        key = self._key(idempotency_key)
        if self.credit_charge_id is None:
            raise PlatformError(
                "Zuora credits need a product rate plan charge for credit memos (BillOps setting "
                "credit_charge_id); none is configured",
                code="unsupported",
            )
        if amount.amount <= 0:
            raise InputError("a credit must be a positive amount")
        acct_currency = str(self._get("accounts", customer_id).get("currency") or "").lower()
        if acct_currency and acct_currency != amount.currency:
            raise InputError(
                f"account {customer_id} bills in {acct_currency.upper()}, not {amount.currency.upper()}"
            )
        value = _major(amount.amount, amount.currency)
        self._call(
            "POST",
            "/v1/creditmemos",
            what=f"creditmemos.create(account {customer_id})",
            body={
                "accountId": customer_id,
                "effectiveDate": datetime.now(UTC).date().isoformat(),
                "charges": [
                    {
                        "productRatePlanChargeId": self.credit_charge_id,
                        "amount": value,
                        "comment": reason[:255],
                    }
                ],
                "comment": reason[:255],
                "autoPost": True,
            },
            idempotency_key=key,
        )

    def apply_coupon(
        self, customer_id: str, coupon: str, *, subscription_id: str | None, idempotency_key: str
    ) -> None:
        raise PlatformError(
            "Zuora has no coupon API: a discount is a discount charge added to a subscription by an order",
            code="unsupported",
        )

    # ------------------------------------------------------------------ backfill

    def backfill_resources(self) -> list[str]:
        return list(RESOURCES)

    def backfill_page(self, resource: str, cursor: str | None, page_size: int) -> BackfillPage:
        """One Object Query page of `resource` (at most 99 objects); the cursor is Zuora's `nextPage`."""
        if resource not in RESOURCES:
            raise InputError(f"unknown Zuora backfill resource {resource!r}; known: {', '.join(RESOURCES)}")
        if page_size < 1:
            raise InputError(f"page size must be at least 1, got {page_size}")
        path, expand = RESOURCES[resource]  # Object Query pages hold at most 99: larger sizes ask for 99
        raw, nxt = self._list(path, expand=expand, page_size=min(page_size, MAX_PAGE), cursor=cursor)
        items: list[BackfillItem] = [self._norm(resource, self._backfill_item, resource, d) for d in raw]
        return BackfillPage(items=items, next_cursor=nxt)

    @staticmethod
    def _backfill_item(resource: str, d: dict[str, Any]) -> BackfillItem:
        if resource == "customers":
            return zuora_account(d)
        if resource == "subscriptions":
            return zuora_subscription(d)
        if resource == "invoices":
            return zuora_invoice(d)
        if resource == "payment_attempts":
            return zuora_payment_attempt(d)
        account = d.get("account")
        default = account.get("defaultPaymentMethodId") if isinstance(account, dict) else None
        return zuora_payment_method(d, default_id=default)


def zuora_error(what: str, status: int, data: Any) -> PlatformError:
    """A Zuora error answer (`{"success": false, "reasons": [{"code", "message"}]}`, Object Query's
    `{"reasons": [...]}`, OAuth's `{"error": ...}`) as a PlatformError saying whether a retry can help."""
    reasons: list[tuple[int | None, str]] = []
    if isinstance(data, dict):
        for r in data.get("reasons") or data.get("Errors") or []:
            if isinstance(r, dict):
                raw_code = r.get("code") or r.get("Code")
                num = (
                    int(raw_code)
                    if isinstance(raw_code, int | str | Decimal) and str(raw_code).isdigit()
                    else None
                )
                reasons.append((num, str(r.get("message") or r.get("Message") or "")))
        if not reasons and (data.get("message") or data.get("error")):
            reasons.append((None, str(data.get("message") or data.get("error"))))
    detail = "; ".join(f"[{c}] {m}" if c else m for c, m in reasons) or "no reason given"
    category = next((c % 100 for c, _ in reasons if c), None)
    retryable = status == 429 or status >= 500 or status == 409 or category in _RETRYABLE_CATEGORIES
    if status == 429:
        code = "rate_limit"
    elif category in _RETRYABLE_CATEGORIES:
        code = _RETRYABLE_CATEGORIES[category]
    elif status == 401:
        code = "authentication_error"
    elif status == 403:
        code = "permission_error"
    elif status == 404 or category == 40:
        code = "not_found"
    elif category in _CATEGORY_CODES:
        code = _CATEGORY_CODES[category]
    elif status >= 400:
        code = f"http_{status}"
    else:
        code = next((f"zuora_{c}" for c, _ in reasons if c), "zuora_error")
    return PlatformError(f"Zuora {what} failed: {detail} (HTTP {status})", retryable=retryable, code=code)
