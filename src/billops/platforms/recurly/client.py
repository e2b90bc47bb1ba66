"""The Recurly implementation of `PlatformClient`, on the official SDK (`recurly.Client`, API v2021-02-25).

Transport. The SDK has no base-URL option: `BaseClient.__init__` opens one `http.client.HTTPSConnection`
to v3.recurly.com (or v3.eu.recurly.com) and every call goes through it. `_SdkClient` replaces that one
connection, right after the SDK built it, with a `TrackingConnection` (the ONE place the transport is
injected): to `api_url` when given (tests: ``http://127.0.0.1:PORT``), else to the region's host. The
tracking connection records whether any byte of the current request was written and the last HTTP
status, so the client can tell "never reached Recurly" (connection refused: safe to send again) from
"may have been applied" (the connection broke after the request went out). Every SDK call holds a lock:
the SDK's single connection is not thread-safe.

At-most-once writes without idempotency keys. Recurly keeps no idempotency keys, so every write goes
through `WriteLedger.run_once(key, operation, send, reconcile)` (billops.platforms.ledger): a `pending`
row is committed before the request; a request that certainly never left (`PlatformError(code=
"not_sent")`) removes it; any other failure leaves it pending, and the next call with the same key asks
`reconcile(started_at)` to look at Recurly's state instead of sending blindly:

| write | request | reconcile looks for |
|---|---|---|
| pay_invoice | PUT /invoices/{id}/collect | a purchase/capture on the invoice since started_at |
| write_note | POST /accounts/{id}/notes | a note of the account carrying ``[billops-ref <key>]`` |
| pause_subscription | PUT /subscriptions/{id}/pause | a pause with the same remaining_pause_cycles |
| apply_coupon | POST /accounts/{id}/coupon_redemptions/active | that coupon redeemed since started_at |
| apply_credit | POST /accounts/{id}/line_items | a credit line item, same amount and text, since started_at |

"Since started_at" allows `clock_skew_seconds` (default 300 s) of difference between our clock and
Recurly's; a match in that window counts as ours, erring towards "already done". When nothing is found
it is sent again, except within `reconcile_grace_seconds` (default 120 s) of the first send, when a
request that timed out may still be running at Recurly: then `PlatformError(code="uncertain",
retryable=True)`. Before each write the connection is re-opened, so a stale keep-alive socket never
turns a write into an unknown outcome.

Pay. `pay_invoice` collects (`collect_invoice`, with `billing_info_id` for another stored method: needs
Recurly Wallet). A settled invoice is `already_settled` without a call; a decline (Recurly answers 422
with a TransactionError) is `PayResult("failed")` with the transaction classified by the decline
taxonomy, never an exception. Recurly cannot stop its own dunning for one invoice: `set_native_retries(
False)` raises `unsupported` (make BillOps the dunning owner in Recurly's dunning campaign settings).
"""

from __future__ import annotations

import http.client
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import recurly
import recurly.errors

from billops.domain import (
    Customer,
    Invoice,
    InvoiceStatus,
    Money,
    PaymentAttempt,
    PaymentMethod,
    Subscription,
)
from billops.domain.billing import ZERO_DECIMAL
from billops.errors import BillopsError, InputError, PlatformError
from billops.platforms.base import (
    RESOURCES,
    SETTLED,
    BackfillItem,
    BackfillPage,
    Capabilities,
    PayResult,
    link_attempt,
)
from billops.platforms.ledger import WriteLedger
from billops.platforms.reader import Reader
from billops.platforms.recurly.normalize import (
    account,
    parse_time,
    recurly_billing_info,
    recurly_invoice,
    recurly_invoice_latest_attempt,
    recurly_subscription,
    recurly_transaction_attempt,
)

T = TypeVar("T")

API_HOSTS = {"us": "v3.recurly.com", "eu": "v3.eu.recurly.com"}
MAX_PAGE = 200  # Recurly's largest list page
NOTE_MAX = 2000
_PAYMENT_TYPES = frozenset({"purchase", "capture"})


# ---------------------------------------------------------------------------------------------
# transport


class TrackingConnection(http.client.HTTPConnection):
    """An HTTP connection that knows whether the current request left this process, and its status."""

    base_path = ""
    request_sent = False
    last_status: int | None = None

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Any = None,
        *,
        encode_chunked: bool = False,
    ) -> None:
        self.request_sent = False
        self.last_status = None
        super().request(method, self.base_path + url, body, headers or {}, encode_chunked=encode_chunked)

    def send(self, data: Any) -> None:
        if self.sock is None and self.auto_open:
            self.connect()  # a refused connection raises here: nothing was sent
        self.request_sent = True
        super().send(data)

    def getresponse(self) -> http.client.HTTPResponse:
        response = super().getresponse()
        self.last_status = response.status
        return response


class TrackingHTTPSConnection(TrackingConnection, http.client.HTTPSConnection):
    pass


class _SdkClient(recurly.Client):
    """`recurly.Client` on our connection: the SDK builds its own HTTPS connection in
    `BaseClient.__init__` (stored as the private ``__conn``); it is replaced here, once."""

    def __init__(self, api_key: str, connection: TrackingConnection, timeout: float) -> None:
        super().__init__(api_key, timeout=timeout)
        self._BaseClient__conn = connection


def make_connection(region: str, api_url: str | None, timeout: float) -> TrackingConnection:
    if api_url is None:
        return TrackingHTTPSConnection(API_HOSTS[region], 443, timeout=timeout)
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"Recurly api_url must be http(s)://host[:port][/path], got {api_url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise InputError(f"Recurly api_url has an invalid port: {api_url!r}") from exc
    cls = TrackingHTTPSConnection if parts.scheme == "https" else TrackingConnection
    conn = cls(parts.hostname, port, timeout=timeout)
    conn.base_path = parts.path.rstrip("/")
    return conn


# ---------------------------------------------------------------------------------------------
# plain JSON from SDK resources


def plain(value: Any) -> Any:
    """An SDK Resource (or Page) back as API JSON: nested resources as dicts, datetimes as ISO 8601."""
    if isinstance(value, recurly.Resource):
        return {k: plain(v) for k, v in vars(value).items() if not k.startswith("_")}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _dict(value: Any, what: str) -> dict[str, Any]:
    d = plain(value)
    if not isinstance(d, dict):
        raise PlatformError(
            f"Recurly returned {type(d).__name__} for {what} where an object was expected",
            code="unreadable_response",
        )
    return d


@dataclass
class AccountView:
    """An account as a Customer, with the primary billing info it embeds (`billing_info_included` says
    whether the answer carried the `billing_info` field at all)."""

    customer: Customer
    billing_info: PaymentMethod | None
    billing_info_included: bool


class _Declined(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__("declined")
        self.error = error


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# the client


class RecurlyPlatformClient:
    """PlatformClient for Recurly. `api_url` points the SDK elsewhere (tests: a local fake API)."""

    platform = "recurly"
    capabilities = Capabilities(
        retry_invoice=True,
        disable_native_retries=False,  # no per-invoice dunning stop in Recurly
        write_note=True,
        card_update_link=True,
        pay_with_other_method=True,  # billing_info_id: needs Recurly Wallet
        idempotency_keys=False,  # at-most-once through the WriteLedger instead
        backfill=True,
        pause_subscription=True,
        credit=True,
        coupon=True,
    )

    def __init__(
        self,
        api_key: str,
        *,
        region: str = "us",
        api_url: str | None = None,
        ledger: WriteLedger,
        timeout: float = 30.0,
        subdomain: str | None = None,
        hosted_pages_domain: str = "recurly.com",
        clock_skew_seconds: float = 300.0,
        reconcile_grace_seconds: float = 120.0,
    ) -> None:
        if not api_key:
            raise InputError("a Recurly API key is required (BILLOPS_RECURLY_API_KEY)")
        if region not in API_HOSTS:
            raise InputError(f"Recurly region must be one of {', '.join(API_HOSTS)}, got {region!r}")
        self.api_url = api_url.rstrip("/") if api_url else f"https://{API_HOSTS[region]}"
        self._conn = make_connection(region, api_url, timeout)
        self._sdk = _SdkClient(api_key, self._conn, timeout)
        self._lock = threading.RLock()
        self._ledger = ledger
        self._subdomain = subdomain
        self._hosted_domain = hosted_pages_domain
        self._skew = timedelta(seconds=clock_skew_seconds)
        self._grace = timedelta(seconds=reconcile_grace_seconds)

    # ------------------------------------------------------------------ plumbing

    def _call(self, what: str, fn: Callable[[], T], *, write: bool = False, declines: bool = False) -> T:
        """Run one SDK call (or a pager walk) under the lock, mapping every failure to PlatformError.
        A read whose connection failed is tried once more on a fresh connection (the kept-alive socket
        may have been closed by the server); a write never is."""
        if write:
            return self._call_once(what, fn, write=True, declines=declines)
        try:
            return self._call_once(what, fn, write=False, declines=declines)
        except PlatformError as exc:
            if exc.code != "connection_error":
                raise
            return self._call_once(what, fn, write=False, declines=declines)

    def _call_once(self, what: str, fn: Callable[[], T], *, write: bool, declines: bool) -> T:
        with self._lock:
            if write:
                self._conn.close()  # a fresh socket: a stale keep-alive one would make the outcome unknown
            try:
                return fn()
            except recurly.errors.TransactionError as exc:
                if declines:
                    error = plain(exc.error) if exc.error is not None else {}
                    txn_error = error.get("transaction_error") if isinstance(error, dict) else None
                    raise _Declined(txn_error if isinstance(txn_error, dict) else {}) from exc
                raise self._api_error(what, exc) from exc
            except recurly.ApiError as exc:
                raise self._api_error(what, exc) from exc
            except (recurly.NetworkError, http.client.HTTPException, OSError) as exc:
                self._conn.close()
                cause = exc.args[0] if isinstance(exc, recurly.NetworkError) and exc.args else exc
                if not self._conn.request_sent:
                    code = "not_sent" if write else "connection_error"
                    raise PlatformError(
                        f"Recurly {what}: the request never reached {self.api_url} ({cause})",
                        retryable=True,
                        code=code,
                    ) from exc
                raise PlatformError(
                    f"Recurly {what}: the connection failed after the request was sent ({cause!r}); "
                    + ("it may have been applied" if write else "no answer"),
                    retryable=True,
                    code="connection_error",
                ) from exc
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
                status = self._conn.last_status
                if status is not None and (status >= 500 or status == 429):
                    raise PlatformError(
                        f"Recurly {what} failed with HTTP {status} (unreadable body)",
                        retryable=True,
                        code=f"http_{status}",
                    ) from exc
                raise PlatformError(
                    f"Recurly {what}: the answer (HTTP {status}) is not readable API JSON: {exc!r}",
                    code="unreadable_response",
                ) from exc

    def _api_error(self, what: str, exc: Any) -> PlatformError:
        status = self._conn.last_status
        err = getattr(exc, "error", None)
        kind = getattr(err, "type", None)
        detail = getattr(err, "message", None) or str(exc)
        retryable = False
        code = kind if isinstance(kind, str) and kind else None
        if isinstance(exc, recurly.errors.NotFoundError) or status == 404:
            code = "not_found"
        elif isinstance(exc, recurly.errors.TooManyRequestsError) or status == 429:
            retryable, code = True, code or "rate_limit"
        elif isinstance(exc, recurly.errors.SimultaneousRequestError) or status == 409:
            retryable, code = True, code or "simultaneous_request"
        elif isinstance(exc, recurly.errors.ServerError) or (status is not None and status >= 500):
            retryable = True
        where = f" (HTTP {status})" if status else ""
        return PlatformError(
            f"Recurly {what} failed: {detail}{where}", retryable=retryable, code=code or f"http_{status}"
        )

    def _norm(self, what: str, build: Callable[[Any], T], raw: Any) -> T:
        try:
            return build(raw)
        except PlatformError:
            raise
        except BillopsError as exc:
            raise PlatformError(
                f"Recurly returned a {what} billops cannot read: {exc.message}", code="unreadable_response"
            ) from exc

    def _get(self, what: str, fn: Callable[[], Any], *, write: bool = False) -> dict[str, Any]:
        return _dict(self._call(what, fn, write=write), what)

    def _items(self, what: str, pager: Callable[[], Any], limit: int = 10_000) -> list[dict[str, Any]]:
        def walk() -> list[Any]:
            out = []
            for item in pager().items():
                out.append(item)
                if len(out) >= limit:
                    break
            return out

        return [_dict(item, what) for item in self._call(what, walk)]

    @staticmethod
    def _safe(fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except PlatformError:
            return None

    def _run_once(
        self,
        key: str,
        operation: str,
        send: Callable[[], dict[str, Any]],
        reconcile: Callable[[datetime], dict[str, Any] | None],
    ) -> dict[str, Any]:
        if not key:
            raise InputError("every Recurly write needs an idempotency key (the at-most-once ledger key)")
        return self._ledger.run_once(key, operation, send, reconcile)

    def _not_seen(self, started_at: datetime, what: str) -> dict[str, Any] | None:
        """Nothing of the write shows at Recurly: send again (None), unless it is too soon to be sure."""
        age = datetime.now(UTC) - _utc(started_at)
        if age < self._grace:
            raise PlatformError(
                f"Recurly {what}: the earlier request is not visible yet ({age.total_seconds():.0f} s "
                "ago); it may still be running, so it is not sent again before "
                f"{self._grace.total_seconds():.0f} s",
                retryable=True,
                code="uncertain",
            )
        return None

    def _since(self, value: Any, started_at: datetime) -> bool:
        """Created at or after started_at (less the clock skew). An unreadable time counts as "since":
        when in doubt, the write is taken as done rather than sent twice."""
        try:
            at = parse_time(value, "created_at")
        except BillopsError:
            return True
        return at is not None and at >= _utc(started_at) - self._skew

    # ------------------------------------------------------------------ reads

    def _raw_invoice(self, invoice_id: str) -> dict[str, Any]:
        return self._get(f"get_invoice({invoice_id})", lambda: self._sdk.get_invoice(invoice_id))

    def get_invoice(self, invoice_id: str) -> Invoice:
        """An invoice by id or by number (``number-1042``)."""
        return self._norm("invoice", recurly_invoice, self._raw_invoice(invoice_id))

    def get_invoice_and_attempt(self, invoice_id: str) -> tuple[Invoice, PaymentAttempt | None]:
        """An invoice and its latest payment attempt; one call when the invoice embeds its transactions."""
        raw = self._raw_invoice(invoice_id)
        invoice = self._norm("invoice", recurly_invoice, raw)
        return invoice, self._latest_of(raw, invoice)

    def _latest_of(self, raw: dict[str, Any], invoice: Invoice) -> PaymentAttempt | None:
        if "transactions" in raw:
            attempt = self._norm("invoice transaction", recurly_invoice_latest_attempt, raw)
        else:  # an answer without the embedded list: the account's transactions for this invoice
            attempt = None
            mine = [t for t in self._account_payments(invoice) if _ref(t, "invoice") == invoice.id]
            if mine:
                newest = max(mine, key=lambda t: str(t.get("created_at") or ""))
                attempt = self._norm("transaction", recurly_transaction_attempt, newest)
        return link_attempt(attempt, invoice) if attempt is not None else None

    def _account_payments(self, invoice: Invoice, since: datetime | None = None) -> list[dict[str, Any]]:
        if not invoice.customer_id:
            return []
        account_id = invoice.customer_id
        params: dict[str, Any] = {"type": "payment", "sort": "created_at", "order": "desc", "limit": MAX_PAGE}
        if since is not None:
            params["begin_time"] = since
        return self._items(
            f"list_account_transactions({account_id})",
            lambda: self._sdk.list_account_transactions(account_id, params=params),
            limit=MAX_PAGE,
        )

    def latest_attempt(self, invoice: Invoice) -> PaymentAttempt | None:
        """The newest purchase/capture on the invoice, or None when Recurly shows none."""
        return self._latest_of(self._raw_invoice(invoice.id), invoice)

    def get_account(self, account_id: str) -> AccountView:
        """An account by id or by code (``code-bob``), with the billing info it embeds."""
        raw = self._get(f"get_account({account_id})", lambda: self._sdk.get_account(account_id))
        customer, method = self._norm("account", lambda d: account(Reader.of(d, "account")), raw)
        return AccountView(customer, method, "billing_info" in raw)

    def get_customer(self, customer_id: str) -> Customer:
        return self.get_account(customer_id).customer

    def get_transaction(self, uuid: str) -> PaymentAttempt:
        """A transaction by its uuid (thin payment webhooks carry the uuid)."""
        ref = f"uuid-{uuid}"
        raw = self._get(f"get_transaction({ref})", lambda: self._sdk.get_transaction(ref))
        return self._norm("transaction", recurly_transaction_attempt, raw)

    def get_subscription(self, uuid: str) -> Subscription:
        """A subscription by its uuid (thin subscription webhooks carry the uuid)."""
        return self._norm("subscription", recurly_subscription, self._raw_subscription(f"uuid-{uuid}"))

    def _raw_subscription(self, ref: str) -> dict[str, Any]:
        return self._get(f"get_subscription({ref})", lambda: self._sdk.get_subscription(ref))

    def get_billing_info(self, account_id: str) -> PaymentMethod | None:
        """The account's (primary) billing info; None when it has none."""
        try:
            raw = self._get(f"get_billing_info({account_id})", lambda: self._sdk.get_billing_info(account_id))
        except PlatformError as exc:
            if exc.code == "not_found":
                return None
            raise
        method = self._norm("billing info", recurly_billing_info, raw)
        return method if method.customer_id else method.model_copy(update={"customer_id": account_id})

    def list_payment_methods(self, customer_id: str) -> list[PaymentMethod]:
        """Every billing info of the account (Wallet), the primary flagged; the embedded primary one
        when the site has no Wallet (the list endpoint refused)."""
        view = self.get_account(customer_id)
        default_id = view.customer.default_payment_method_id
        account_id = view.customer.id
        try:
            raws = self._items(
                f"list_billing_infos({account_id})", lambda: self._sdk.list_billing_infos(account_id)
            )
        except PlatformError as exc:
            if exc.retryable:
                raise
            return [view.billing_info] if view.billing_info is not None else []
        out = []
        for raw in raws:
            pm = self._norm("billing info", recurly_billing_info, raw)
            update: dict[str, Any] = {"customer_id": pm.customer_id or account_id}
            if default_id is not None:
                update["is_default"] = pm.id == default_id
            out.append(pm.model_copy(update=update))
        return out

    # ------------------------------------------------------------------ pay

    @staticmethod
    def _pay_dict(
        outcome: str, invoice: Invoice, attempt: PaymentAttempt | None, message: str
    ) -> dict[str, Any]:
        return {
            "outcome": outcome,
            "invoice": invoice.model_dump(mode="json"),
            "attempt": attempt.model_dump(mode="json") if attempt is not None else None,
            "message": message,
        }

    @staticmethod
    def _pay_result(d: dict[str, Any]) -> PayResult:
        attempt = d.get("attempt")
        return PayResult(
            d["outcome"],
            Invoice.model_validate(d["invoice"]),
            PaymentAttempt.model_validate(attempt) if attempt else None,
            str(d.get("message") or ""),
        )

    def _outcome(self, invoice: Invoice, attempt: PaymentAttempt | None) -> dict[str, Any]:
        if invoice.status == InvoiceStatus.paid:
            return self._pay_dict("succeeded", invoice, attempt, "paid")
        if invoice.status in SETTLED:
            return self._pay_dict("already_settled", invoice, attempt, f"invoice is {invoice.status.value}")
        if attempt is not None and attempt.outcome == "pending":
            message = "payment is processing; the invoice is not settled yet"
        elif attempt is not None and attempt.decline is not None:
            message = attempt.decline.message or f"declined: {attempt.decline.code}"
        else:
            message = "the invoice is still open after the collection attempt"
        return self._pay_dict("failed", invoice, attempt, message)

    def pay_invoice(
        self,
        invoice_id: str,
        *,
        idempotency_key: str,
        payment_method_id: str | None = None,
        replay: bool = False,
    ) -> PayResult:
        """Collect the invoice now (`collect_invoice`), at most once per idempotency key. `replay` needs
        nothing more here: the ledger answers a key it has seen with its recorded outcome."""
        if not idempotency_key:
            raise InputError("every Recurly write needs an idempotency key (the at-most-once ledger key)")
        before = self.get_invoice(invoice_id)
        inv_id = before.id

        def send() -> dict[str, Any]:
            if before.status in SETTLED:
                return self._pay_dict(
                    "already_settled", before, None, f"invoice is already {before.status.value}"
                )
            body = {"billing_info_id": payment_method_id} if payment_method_id else None
            what = f"collect_invoice({inv_id})"
            try:
                raw = self._call(
                    what,
                    lambda: (
                        self._sdk.collect_invoice(inv_id, body=body)
                        if body
                        else self._sdk.collect_invoice(inv_id)
                    ),
                    write=True,
                    declines=True,
                )
            except _Declined as declined:
                return self._declined(inv_id, before, declined.error)
            except PlatformError as exc:
                if exc.retryable or exc.code == "not_sent":
                    raise
                after = self._safe(lambda: self.get_invoice(inv_id))  # settled between our read and collect?
                if after is not None and after.status in SETTLED:
                    return self._pay_dict(
                        "already_settled", after, None, f"invoice is already {after.status.value}"
                    )
                raise
            # The collect went through: from here on report, never raise.
            try:
                raw_inv = _dict(raw, what)
                invoice = self._norm("invoice", recurly_invoice, raw_inv)
                attempt = self._latest_of(raw_inv, invoice)
            except PlatformError as exc:
                return self._pay_dict("failed", before, None, f"collect answered, but unreadably: {exc}")
            if attempt is not None:
                attempt = link_attempt(attempt, invoice, ours=attempt.id != before.latest_attempt_id)
            return self._outcome(invoice, attempt)

        def reconcile(started_at: datetime) -> dict[str, Any] | None:
            raw = self._raw_invoice(inv_id)
            invoice = self._norm("invoice", recurly_invoice, raw)
            if "transactions" in raw:
                txns = [t for t in raw.get("transactions") or [] if isinstance(t, dict)]
            else:
                since = _utc(started_at) - self._skew
                txns = [t for t in self._account_payments(invoice, since) if _ref(t, "invoice") == inv_id]
            ours = [
                t
                for t in txns
                if str(t.get("type") or "purchase") in _PAYMENT_TYPES
                and self._since(t.get("created_at"), started_at)
            ]
            if ours:
                newest = max(ours, key=lambda t: str(t.get("created_at") or ""))
                attempt = link_attempt(
                    self._norm("transaction", recurly_transaction_attempt, newest), invoice, ours=True
                )
                return self._outcome(invoice, attempt)
            if invoice.status in SETTLED:
                return self._pay_dict("already_settled", invoice, None, f"invoice is {invoice.status.value}")
            return self._not_seen(started_at, f"collect_invoice({inv_id})")

        return self._pay_result(self._run_once(idempotency_key, "recurly.pay_invoice", send, reconcile))

    def _declined(self, inv_id: str, before: Invoice, error: dict[str, Any]) -> dict[str, Any]:
        """A decline on collect: the transaction Recurly recorded, classified with its TransactionError."""
        invoice = self._safe(lambda: self.get_invoice(inv_id)) or before
        txn_id = error.get("transaction_id")
        attempt: PaymentAttempt | None = None
        if isinstance(txn_id, str) and txn_id:
            raw = self._safe(
                lambda: self._get(f"get_transaction({txn_id})", lambda: self._sdk.get_transaction(txn_id))
            )
            if raw is not None:
                attempt = self._safe(
                    lambda: self._norm("transaction", lambda d: recurly_transaction_attempt(d, error), raw)
                )
        if attempt is None:  # no transaction to read: describe the decline from the error itself
            synthetic = {
                "id": txn_id if isinstance(txn_id, str) and txn_id else f"declined-{inv_id}",
                "status": "declined",
                "type": "purchase",
                "amount": _major(invoice.amount_remaining or invoice.amount_due, invoice.currency),
                "currency": invoice.currency,
                "created_at": datetime.now(UTC).isoformat(),
                "invoice": {"id": inv_id},
                "account": {"id": invoice.customer_id} if invoice.customer_id else None,
                "status_code": error.get("code"),
                "status_message": error.get("merchant_advice") or error.get("message"),
            }
            attempt = self._safe(
                lambda: self._norm(
                    "transaction error", lambda d: recurly_transaction_attempt(d, error), synthetic
                )
            )
        if attempt is not None:
            attempt = link_attempt(attempt, invoice, ours=True)
        message = str(error.get("message") or error.get("merchant_advice") or "the payment was declined")
        return self._pay_dict("failed", invoice, attempt, message)

    def set_native_retries(self, invoice_id: str, enabled: bool, *, idempotency_key: str) -> None:
        """Recurly's dunning always runs; it cannot be stopped for one invoice."""
        if enabled:
            return  # already the case
        raise PlatformError(
            "Recurly cannot stop its dunning for one invoice: make BillOps the dunning owner in Recurly's "
            "dunning campaign settings instead (docs/platforms/recurly.md)",
            code="unsupported",
        )

    # ------------------------------------------------------------------ other writes

    def write_note(self, invoice_id: str, note: dict[str, str], *, idempotency_key: str) -> None:
        """An account note on the invoice's account (Recurly invoices take no metadata), marked with the
        idempotency key so that a lost answer can be reconciled."""
        if not note:
            return
        if not idempotency_key:
            raise InputError("every Recurly write needs an idempotency key (the at-most-once ledger key)")
        invoice = self.get_invoice(invoice_id)
        account_id = invoice.customer_id
        if not account_id:
            raise PlatformError(f"Recurly invoice {invoice_id} names no account", code="unreadable_response")
        marker = f"[billops-ref {idempotency_key}]"
        lines = [f"BillOps, invoice {invoice.number or invoice.id}:"]
        lines += [f"{k}: {str(v)[:500]}" for k, v in note.items()]
        body = "\n".join(lines)[: NOTE_MAX - len(marker) - 1]
        message = f"{body}\n{marker}"

        def send() -> dict[str, Any]:
            raw = self._get(
                f"create_account_note({account_id})",
                lambda: self._sdk.create_account_note(account_id, {"message": message}),
                write=True,
            )
            return {"note_id": raw.get("id"), "account_id": account_id}

        def reconcile(started_at: datetime) -> dict[str, Any] | None:
            notes = self._items(
                f"list_account_notes({account_id})", lambda: self._sdk.list_account_notes(account_id)
            )
            for n in notes:
                if marker in str(n.get("message") or ""):
                    return {"note_id": n.get("id"), "account_id": account_id}
            return self._not_seen(started_at, f"create_account_note({account_id})")

        self._run_once(idempotency_key, "recurly.write_note", send, reconcile)

    def card_update_link(self, customer_id: str, *, return_url: str | None, idempotency_key: str) -> str:
        """The account's hosted "edit billing info" page, logged in by its hosted login token:
        ``https://{subdomain}.recurly.com/account/billing_info/edit?ht={token}``. Nothing is written;
        Recurly's hosted pages take no return URL (`return_url` is ignored)."""
        raw = self._get(f"get_account({customer_id})", lambda: self._sdk.get_account(customer_id))
        token = raw.get("hosted_login_token")
        if not isinstance(token, str) or not token:
            raise PlatformError(
                f"Recurly account {customer_id} has no hosted_login_token", code="no_hosted_login_token"
            )
        return f"https://{self.subdomain()}.{self._hosted_domain}/account/billing_info/edit?ht={token}"

    def subdomain(self) -> str:
        """The site's subdomain (given, else read once from GET /sites: an API key belongs to one site)."""
        if self._subdomain is None:
            sites = self._items("list_sites", lambda: self._sdk.list_sites(params={"limit": 1}), limit=1)
            found = sites[0].get("subdomain") if sites else None
            if not isinstance(found, str) or not found:
                raise PlatformError(
                    "Recurly named no site subdomain for this API key", code="unreadable_response"
                )
            self._subdomain = found
        return self._subdomain

    def pause_subscription(
        self, subscription_id: str, *, resume_at: datetime | None, idempotency_key: str
    ) -> None:
        """Pause at the next renewal for whole billing cycles: enough cycles (of the current period's
        length) to reach `resume_at`, at least 1; without `resume_at`, 1 cycle. Recurly has no open-ended
        pause."""
        if not idempotency_key:
            raise InputError("every Recurly write needs an idempotency key (the at-most-once ledger key)")
        raw = self._raw_subscription(subscription_id)
        sub_id = str(raw.get("id") or subscription_id)
        cycles = pause_cycles(raw, resume_at)

        def send() -> dict[str, Any]:
            self._get(
                f"pause_subscription({sub_id})",
                lambda: self._sdk.pause_subscription(sub_id, {"remaining_pause_cycles": cycles}),
                write=True,
            )
            return {"subscription_id": sub_id, "remaining_pause_cycles": cycles}

        def reconcile(started_at: datetime) -> dict[str, Any] | None:
            now = self._raw_subscription(sub_id)
            pausing = now.get("state") == "paused" or now.get("paused_at") is not None
            if pausing and now.get("remaining_pause_cycles") == cycles:
                return {"subscription_id": sub_id, "remaining_pause_cycles": cycles}
            return self._not_seen(started_at, f"pause_subscription({sub_id})")

        self._run_once(idempotency_key, "recurly.pause_subscription", send, reconcile)

    def apply_coupon(
        self, customer_id: str, coupon: str, *, subscription_id: str | None, idempotency_key: str
    ) -> None:
        """Redeem an existing coupon (by code) on the account, or on one of its subscriptions."""
        if not idempotency_key:
            raise InputError("every Recurly write needs an idempotency key (the at-most-once ledger key)")
        ref = coupon if coupon.startswith("code-") else f"code-{coupon}"
        found = self._get(f"get_coupon({ref})", lambda: self._sdk.get_coupon(ref))
        coupon_id = found.get("id")
        if not isinstance(coupon_id, str) or not coupon_id:
            raise PlatformError(f"Recurly coupon {coupon!r} has no id", code="unreadable_response")
        body: dict[str, Any] = {"coupon_id": coupon_id}
        if subscription_id:
            body["subscription_id"] = subscription_id

        def send() -> dict[str, Any]:
            raw = self._get(
                f"create_coupon_redemption({customer_id})",
                lambda: self._sdk.create_coupon_redemption(customer_id, body),
                write=True,
            )
            return {"redemption_id": raw.get("id"), "coupon_id": coupon_id}

        def reconcile(started_at: datetime) -> dict[str, Any] | None:
            redemptions = self._items(
                f"list_account_coupon_redemptions({customer_id})",
                lambda: self._sdk.list_account_coupon_redemptions(customer_id),
            )
            for red in redemptions:
                c = red.get("coupon")
                c = c if isinstance(c, dict) else {}
                same_sub = not subscription_id or red.get("subscription_id") == subscription_id
                if c.get("id") == coupon_id and same_sub and self._since(red.get("created_at"), started_at):
                    return {"redemption_id": red.get("id"), "coupon_id": coupon_id}
            return self._not_seen(started_at, f"create_coupon_redemption({customer_id})")

        self._run_once(idempotency_key, "recurly.apply_coupon", send, reconcile)

    def apply_credit(self, customer_id: str, amount: Money, *, reason: str, idempotency_key: str) -> None:
        """A pending credit line item on the account (type credit): Recurly applies it to the account's
        next invoice(s)."""
        if not idempotency_key:
            raise InputError("every Recurly write needs an idempotency key (the at-most-once ledger key)")
        if amount.amount <= 0:
            raise InputError(f"a credit must be positive, got {amount.format()}")
        unit = _major(amount.amount, amount.currency)
        description = f"Account credit: {reason}"[:255] if reason else "Account credit"
        body = {
            "currency": amount.currency.upper(),
            "unit_amount": unit,
            "type": "credit",
            "description": description,
        }

        def send() -> dict[str, Any]:
            raw = self._get(
                f"create_line_item({customer_id})",
                lambda: self._sdk.create_line_item(customer_id, body),
                write=True,
            )
            return {"line_item_id": raw.get("id")}

        def reconcile(started_at: datetime) -> dict[str, Any] | None:
            params = {"type": "credit", "sort": "created_at", "order": "desc", "limit": MAX_PAGE,
                      "begin_time": _utc(started_at) - self._skew}  # fmt: skip
            items = self._items(
                f"list_account_line_items({customer_id})",
                lambda: self._sdk.list_account_line_items(customer_id, params=params),
                limit=MAX_PAGE,
            )
            for li in items:
                same = (
                    li.get("description") == description
                    and str(li.get("currency") or "").lower() == amount.currency
                    and isinstance(li.get("unit_amount"), int | float)
                    and abs(abs(float(li["unit_amount"])) - unit) < 1e-9
                )
                if same and self._since(li.get("created_at"), started_at):
                    return {"line_item_id": li.get("id")}
            return self._not_seen(started_at, f"create_line_item({customer_id})")

        self._run_once(idempotency_key, "recurly.apply_credit", send, reconcile)

    # ------------------------------------------------------------------ backfill

    def backfill_resources(self) -> list[str]:
        return list(RESOURCES)

    def backfill_page(self, resource: str, cursor: str | None, page_size: int) -> BackfillPage:
        """One page of `resource` in Recurly's recommended order (updated_at ascending), after the
        pager's `cursor`. Invoices are charge invoices; payment attempts are payment transactions
        (purchase and capture); payment methods are the billing infos accounts embed (one per account)."""
        if resource not in RESOURCES:
            raise InputError(f"unknown Recurly backfill resource {resource!r}; known: {', '.join(RESOURCES)}")
        if not 1 <= page_size <= MAX_PAGE:
            raise InputError(f"page size must be between 1 and {MAX_PAGE}, got {page_size}")
        params: dict[str, Any] = {"limit": page_size, "sort": "updated_at", "order": "asc"}
        if cursor:
            params["cursor"] = cursor
        path = {"customers": "/accounts", "subscriptions": "/subscriptions", "invoices": "/invoices",
                "payment_attempts": "/transactions", "payment_methods": "/accounts"}[resource]  # fmt: skip
        if resource == "invoices":
            params["type"] = "charge"
        if resource == "payment_attempts":
            params["type"] = "payment"
        what = f"GET {path}" + (f" after {cursor}" if cursor else "")
        # The generated Pager hides the page's `next` link: ask for one page with the SDK's request call.
        page = self._call(what, lambda: self._sdk._make_request("GET", path, None, params=params))
        data = plain(getattr(page, "data", None))
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise PlatformError(f"Recurly {what}: the answer is not a list page", code="unreadable_response")
        items: list[BackfillItem] = []
        for d in data:
            if resource == "customers":
                items.append(self._norm("account", lambda x: account(Reader.of(x, "account"))[0], d))
            elif resource == "subscriptions":
                items.append(self._norm("subscription", recurly_subscription, d))
            elif resource == "invoices":
                items.append(self._norm("invoice", recurly_invoice, d))
            elif resource == "payment_attempts":
                items.append(self._norm("transaction", recurly_transaction_attempt, d))
            else:
                method = self._norm("account", lambda x: account(Reader.of(x, "account"))[1], d)
                if method is not None:
                    items.append(method)
        return BackfillPage(items=items, next_cursor=_next_cursor(page, what))


# ---------------------------------------------------------------------------------------------
# helpers


def _ref(obj: dict[str, Any], key: str) -> str | None:
    mini = obj.get(key)
    v = mini.get("id") if isinstance(mini, dict) else None
    return v if isinstance(v, str) else None


def _major(minor: int, currency: str) -> float:
    """Integer minor units -> the decimal major-unit number Recurly's API takes (``1099`` -> ``10.99``)."""
    value = Decimal(minor) if currency.lower() in ZERO_DECIMAL else Decimal(minor) / 100
    return float(value)


def _next_cursor(page: Any, what: str) -> str | None:
    if not getattr(page, "has_more", False):
        return None
    link = getattr(page, "next", None)
    cursor = parse_qs(urlsplit(link).query).get("cursor", [None])[0] if isinstance(link, str) else None
    if not cursor:
        raise PlatformError(f"Recurly {what}: has_more without a next cursor", code="unreadable_response")
    return cursor


def pause_cycles(raw_subscription: dict[str, Any], resume_at: datetime | None) -> int:
    """Billing cycles to pause so that the subscription resumes at or after `resume_at` (a pause starts at
    the next renewal, `current_period_ends_at`); 1 without `resume_at` or a readable period."""
    if resume_at is None:
        return 1
    try:
        start = parse_time(raw_subscription.get("current_period_started_at"), "current_period_started_at")
        end = parse_time(raw_subscription.get("current_period_ends_at"), "current_period_ends_at")
    except BillopsError:
        return 1
    if start is None or end is None or end <= start:
        return 1
    remaining = (_utc(resume_at) - end) / (end - start)
    return max(1, math.ceil(remaining))
