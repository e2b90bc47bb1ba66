"""The Chargebee implementation of `PlatformClient`, on the official SDK (`chargebee` 3.x, API v2).

Interface method -> Chargebee call (all through one `chargebee.Chargebee` instance), and the API-key
permission it needs:

==========================  ===============================================================  ==============
method                      Chargebee call                                                   needs
==========================  ===============================================================  ==============
get_invoice                 Invoice.retrieve                                                 read
get_customer                Customer.retrieve                                                read
latest_attempt              Transaction.payments_for_invoice (GET /invoices/{id}/payments,   read
                            newest first; else Transaction.retrieve of the invoice's newest
                            linked payment) + PaymentSource.retrieve for the card brand
list_payment_methods        Customer.retrieve (primary source, legacy card) +                read
                            PaymentSource.list(customer_id[is])
pay_invoice                 Invoice.retrieve, then Invoice.collect_payment                   full (update)
                            (payment_source_id, payment_initiator=merchant); on a decline
                            Transaction.payments_for_invoice to read the failed transaction
set_native_retries(False)   Invoice.stop_dunning                                             full (update)
set_native_retries(True)    -- unsupported: Chargebee cannot restart dunning that was        --
                            stopped (resume_dunning only undoes pause_dunning)
write_note                  Comment.create(entity_type=invoice)                              full (create)
card_update_link            HostedPage.manage_payment_sources (In-App Checkout, current;     full (create)
                            `card_page="update_payment_method"` for sites on the older
                            hosted pages)
pause_subscription          Subscription.pause(pause_option=immediately, resume_date)        full (update)
apply_credit                PromotionalCredit.add(credit_type=general)                       full (create)
apply_coupon                Subscription.retrieve, then Subscription.update_for_items        read + full
                            (Product Catalog 2.0) or Subscription.update (1.0), coupon_ids   (update)
retrieve_event              Event.retrieve                                                   read
backfill_page               Customer / Subscription / Invoice / Transaction(type=payment) /  read
                            PaymentSource .list with limit/offset (+ Customer.list(id[in])
                            for the default flags of payment sources)
==========================  ===============================================================  ==============

Least privilege: Chargebee API keys are site-wide, not per resource. BillOps only reads customers,
subscriptions, invoices, transactions, payment sources and events, and it never deletes anything.
- Webhook ingest with re-fetching, mirrors and backfill only: a **read-only key** ("Read-only: All",
  or the sub-type limited to transactional data, which covers those resources).
- Executing recovery actions: a **full-access key**; of its sub-types, one that allows create,
  retrieve and update (no delete is ever needed).
- Publishable keys cannot be used. A key that lacks a permission gets HTTP 403, reported as
  `PlatformError(code="permission_denied")` naming the call.

Idempotency: every write sends the caller's key in the `chargebee-idempotency-key` header through the
SDK's per-request `headers` argument (the SDK only invents a key of its own when that header is absent
and its retries are on). Chargebee answers a replay within its idempotency window with the first
response (`chargebee-idempotency-replayed: true`). Keys longer than Chargebee's 100 characters are
replaced by a SHA-256 digest of the key (still deterministic). The SDK's own retries are switched off
(`RetryConfig(enabled=False)`): the workflow engine owns retries, and no request is ever resent by the
SDK. `pay_invoice` also re-reads the invoice first and never collects a paid, voided or written-off
invoice, so a replay after the idempotency window does not charge twice either.

Errors: `chargebee.APIError` and its subclasses, the SDK's plain `Exception` for non-JSON answers, and
`httpx` transport errors become `PlatformError`. Retryable: connection errors, HTTP 429, 5xx and the
temporary API codes (`lock_timeout`, `internal_temporary_error`, `site_not_ready`, …). 401: the key is
wrong; 403: the key lacks the permission; 404: code `not_found`. A decline on `collect_payment`
(`chargebee.PaymentError`) is an outcome, `PayResult("failed")` with the classified failed transaction.

Addressing: `api_url=None` talks to ``https://{site}.chargebee.com``. For another server the SDK only
builds ``{protocol}://{site}.{chargebee_domain}/api/v2``, so ``http://127.0.0.1:8080`` becomes
``site="127", chargebee_domain="0.0.1:8080", protocol="http"``. Plain http additionally needs the SDK's
class-wide ``Chargebee.verify_ca_certs = False`` (the request code reads the class attribute, so the
``protocol`` option alone keeps using https); https clients in the same process still verify TLS
(httpx's default CA bundle instead of the SDK's bundled one).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import chargebee
import httpx
from chargebee.retry_config import RetryConfig

from billops.domain import (
    Customer,
    Invoice,
    InvoiceStatus,
    Money,
    PaymentAttempt,
    PaymentMethod,
)
from billops.errors import BillopsError, InputError, PlatformError
from billops.platforms.base import (
    RESOURCES,
    BackfillItem,
    BackfillPage,
    Capabilities,
    PayResult,
    link_attempt,
)
from billops.platforms.chargebee.normalize import (
    chargebee_card,
    chargebee_customer,
    chargebee_invoice,
    chargebee_payment_source,
    chargebee_subscription,
    chargebee_transaction_attempt,
)

T = TypeVar("T")

MAX_PAGE = 100  # Chargebee's largest list page
IDEMPOTENCY_HEADER = "chargebee-idempotency-key"
IDEMPOTENCY_KEY_MAX = 100  # Chargebee: idempotency keys are at most 100 characters
DEFAULT_DOMAIN = "chargebee.com"
NOTE_MAX = 1000  # Chargebee comment `notes` limit
CREDIT_DESCRIPTION_MAX = 250
MAX_LIST_PAGES = 50  # safety stop when following next_offset inside one call
RETRYABLE_CODES = frozenset(
    {
        "api_request_limit_exceeded",
        "internal_error",
        "internal_temporary_error",
        "lock_timeout",
        "site_not_ready",
        "site_read_only_mode",
    }
)
CardPage = Literal["manage_payment_sources", "update_payment_method"]

_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_GATEWAY_MESSAGE = re.compile(r"\(([A-Za-z0-9_.\-]+)\)\s*(.*)$", re.S)
_STATUS_IN_TEXT = re.compile(r"http_status_code:\s*(\d{3})")


def sdk_address(site: str, api_url: str | None) -> tuple[str, str | None, str]:
    """(site, chargebee_domain, protocol) for the SDK, which builds ``{protocol}://{site}.{domain}/api/v2``.

    ``api_url=None``: the real ``https://{site}.chargebee.com`` (domain None: the SDK default). Otherwise
    any ``http(s)://host[:port][/api/v2]`` whose host has a dot (the SDK needs ``{site}.{domain}``):
    ``http://127.0.0.1:8080`` -> ``("127", "0.0.1:8080", "http")``. Raises `InputError` for one it
    cannot express (no dot such as ``localhost``, IPv6, credentials, query, another path)."""
    if api_url is None:
        if not site or not _SITE.fullmatch(site):
            raise InputError(
                f"Chargebee site {site!r} is not a site name (the <site> of <site>.chargebee.com); "
                "set BILLOPS_CHARGEBEE_SITE"
            )
        return site, None, "https"
    raw = api_url.strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"Chargebee API URL {api_url!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise InputError(f"Chargebee API URL {api_url!r} must start with http:// or https://")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise InputError(f"Chargebee API URL {api_url!r} must not carry credentials, a query or a fragment")
    if parts.path.rstrip("/") not in ("", "/api/v2"):
        raise InputError(
            f"Chargebee API URL {api_url!r}: the SDK always talks to <host>/api/v2, so the URL may have no "
            f"other path than /api/v2 (got {parts.path!r})"
        )
    host = parts.hostname or ""
    sub, dot, rest = host.partition(".")
    if ":" in host or not dot or not rest or not _SITE.fullmatch(sub):
        raise InputError(
            f"Chargebee API URL {api_url!r} cannot be expressed for the Chargebee SDK, which builds "
            "<site>.<domain> addresses: the host needs a dot after a name of letters, digits and '-' "
            "(use 127.0.0.1 instead of localhost; IPv6 addresses are not possible)"
        )
    domain = rest if port is None else f"{rest}:{port}"
    return sub, domain, parts.scheme


def _raw(model: Any, what: str) -> dict[str, Any]:
    """The JSON object behind one SDK model (`raw_data`)."""
    data = getattr(model, "raw_data", None)
    if isinstance(data, dict):
        return data
    raise PlatformError(f"Chargebee answered without a readable {what}", code="bad_response")


def _field(resp: Any, name: str) -> dict[str, Any]:
    """`resp.<name>` of an SDK response, as its JSON object."""
    return _raw(getattr(resp, name, None), name)


def _opt_field(resp: Any, name: str) -> dict[str, Any] | None:
    data = getattr(getattr(resp, name, None), "raw_data", None)
    return data if isinstance(data, dict) else None


def _list(resp: Any, name: str) -> tuple[list[dict[str, Any]], str | None]:
    """The entries' `<name>` objects of a list response, and its next_offset."""
    entries = getattr(resp, "list", None)
    if not isinstance(entries, list):
        raise PlatformError(f"Chargebee answered a {name} list without `list`", code="bad_response")
    out = [_field(e, name) for e in entries]
    nxt = getattr(resp, "next_offset", None)
    return out, (str(nxt) if nxt else None)


def settled_reason(raw_invoice: dict[str, Any]) -> str | None:
    """Why an invoice (as Chargebee sends it) must not be collected, or None if it may be."""
    status = raw_invoice.get("status")
    if status == "paid":
        return "invoice is already paid"
    if status == "voided":
        return "invoice is voided"
    write_off = raw_invoice.get("write_off_amount")
    if status == "not_paid" and isinstance(write_off, int) and write_off > 0:
        return "invoice was written off"
    if status in ("payment_due", "not_paid", "posted") and raw_invoice.get("amount_due") == 0:
        return "nothing is due on the invoice"
    return None


def note_text(note: dict[str, str]) -> str:
    """A comment text for a note: one `key: value` line per entry under a `BillOps` heading."""
    lines = []
    for key, value in note.items():
        if not key or not key.strip():
            raise InputError("note keys must be non-empty")
        lines.append(f"{key.strip()}: {value}")
    if not lines:
        return ""
    text = "BillOps\n" + "\n".join(lines)
    return text if len(text) <= NOTE_MAX else text[: NOTE_MAX - 1] + "…"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _card_resource(payment_source: dict[str, Any]) -> dict[str, Any] | None:
    """A payment source's card in the shape of a Chargebee `card` resource (brand -> card_type)."""
    card = payment_source.get("card")
    if not isinstance(card, dict):
        return None
    out = dict(card)
    if out.get("brand") is not None and out.get("card_type") is None:
        out["card_type"] = out["brand"]
    return out


class ChargebeePlatformClient:
    """PlatformClient for Chargebee Billing (API v2). `api_url` points the SDK elsewhere (tests)."""

    platform = "chargebee"
    capabilities = Capabilities(
        retry_invoice=True,
        disable_native_retries=True,
        write_note=True,
        card_update_link=True,
        pay_with_other_method=True,
        idempotency_keys=True,
        backfill=True,
        pause_subscription=True,
        credit=True,
        coupon=True,
    )

    def __init__(
        self,
        site: str,
        api_key: str,
        api_url: str | None = None,
        *,
        card_page: CardPage = "manage_payment_sources",
        connect_timeout: int = 10,
        read_timeout: int = 60,
    ) -> None:
        if not api_key:
            raise InputError("a Chargebee API key is required (BILLOPS_CHARGEBEE_API_KEY)")
        if card_page not in ("manage_payment_sources", "update_payment_method"):
            raise InputError(
                f"card_page must be manage_payment_sources or update_payment_method, not {card_page!r}"
            )
        sdk_site, domain, protocol = sdk_address(site, api_url)
        self.site = site or sdk_site
        self.card_page = card_page
        if protocol == "http":
            # Read as a class attribute by chargebee.http_request: without it the SDK speaks https.
            chargebee.Chargebee.verify_ca_certs = False
        self._cb = chargebee.Chargebee(
            api_key=api_key,
            site=sdk_site,
            chargebee_domain=domain,
            protocol=protocol,
            connection_time_out=connect_timeout,
            read_time_out=read_timeout,
        )
        self._cb.update_retry_config(RetryConfig(enabled=False))
        self.api_base: str = str(self._cb.env.api_endpoint)

    # ------------------------------------------------------------------ plumbing

    def _map(self, what: str, exc: Exception) -> PlatformError:
        """Any exception out of the SDK as a `PlatformError` saying what failed and whether retrying helps."""
        if isinstance(exc, PlatformError):
            return exc
        if isinstance(exc, chargebee.APIError):
            return self._api_error(what, exc)
        if isinstance(exc, httpx.TransportError):
            return PlatformError(
                f"Chargebee {what} failed: cannot reach {self.api_base} ({type(exc).__name__}: {exc})",
                retryable=True,
                code="connection_error",
            )
        # The SDK raises a plain Exception for an answer that is not JSON (its text names a status, and
        # it reports every non-JSON answer other than 503/504 as 500) or JSON without api_error_code.
        text = str(exc)
        first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
        m = _STATUS_IN_TEXT.search(text)
        status = int(m.group(1)) if m else None
        if status is not None and status >= 500:
            return PlatformError(
                f"Chargebee {what} failed: the server at {self.api_base} answered HTTP {status} "
                f"without a Chargebee error body ({first})",
                retryable=True,
                code=f"http_{status}",
            )
        return PlatformError(
            f"Chargebee {what} failed: the server at {self.api_base} did not answer like the Chargebee API "
            f"({type(exc).__name__}: {first})",
            code="bad_response",
        )

    def _api_error(self, what: str, exc: Any) -> PlatformError:
        status = int(getattr(exc, "http_status_code", 0) or 0)
        body = exc.json_obj if isinstance(getattr(exc, "json_obj", None), dict) else {}
        api_code = exc.api_error_code or None
        detail = str(body.get("message") or exc or type(exc).__name__)
        label = f"HTTP {status}" + (f" {api_code}" if api_code else "")
        if status == 401 or api_code == "api_authentication_failed":
            return PlatformError(
                f"Chargebee {what} failed: the API key was rejected for site {self.site!r} ({label}). "
                "Check BILLOPS_CHARGEBEE_API_KEY and BILLOPS_CHARGEBEE_SITE (a test-site key does not "
                "work on the live site, nor the other way round)",
                code="authentication_failed",
            )
        if status == 403 or api_code == "api_authorization_failed":
            return PlatformError(
                f"Chargebee {what} failed: the API key is not allowed to do this ({label}). A read-only "
                "key cannot write; give BillOps a full-access key with create, retrieve and update "
                "(see docs/platforms/chargebee.md)",
                code="permission_denied",
            )
        if status == 404:
            return PlatformError(f"Chargebee {what} failed: not found ({label}): {detail}", code="not_found")
        retryable = status == 429 or status >= 500 or api_code in RETRYABLE_CODES
        return PlatformError(
            f"Chargebee {what} failed: {detail} ({label})",
            retryable=retryable,
            code=api_code or f"http_{status}",
        )

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            raise self._map(what, exc) from exc

    def _norm(self, what: str, build: Callable[[dict[str, Any]], T], raw: dict[str, Any]) -> T:
        try:
            return build(raw)
        except PlatformError:
            raise
        except BillopsError as exc:
            raise PlatformError(
                f"Chargebee returned a {what} billops cannot read: {exc.message}", code="unreadable_response"
            ) from exc

    @staticmethod
    def _safe(fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except PlatformError:
            return None

    @staticmethod
    def _headers(idempotency_key: str) -> dict[str, str]:
        """The per-request headers of a write: the caller's idempotency key (a digest when too long)."""
        if not idempotency_key or not idempotency_key.strip():
            raise InputError("every Chargebee write needs an idempotency key")
        key = idempotency_key
        if len(key) > IDEMPOTENCY_KEY_MAX:
            key = "billops-" + hashlib.sha256(key.encode("utf-8")).hexdigest()
        return {IDEMPOTENCY_HEADER: key}

    @staticmethod
    def _id(kind: str, value: str | None) -> str:
        if not value or not str(value).strip():
            raise InputError(f"a Chargebee {kind} id is required")
        return value

    # ------------------------------------------------------------------ reads

    def _raw_invoice(self, invoice_id: str) -> dict[str, Any]:
        invoice_id = self._id("invoice", invoice_id)
        resp = self._call(f"Invoice.retrieve({invoice_id})", lambda: self._cb.Invoice.retrieve(invoice_id))
        return _field(resp, "invoice")

    def get_invoice(self, invoice_id: str) -> Invoice:
        return self._norm("invoice", chargebee_invoice, self._raw_invoice(invoice_id))

    def _retrieve_customer(self, customer_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(customer, legacy card or None) as Chargebee sends them."""
        customer_id = self._id("customer", customer_id)
        resp = self._call(
            f"Customer.retrieve({customer_id})", lambda: self._cb.Customer.retrieve(customer_id)
        )
        return _field(resp, "customer"), _opt_field(resp, "card")

    def get_customer(self, customer_id: str) -> Customer:
        raw, _ = self._retrieve_customer(customer_id)
        return self._norm("customer", chargebee_customer, raw)

    def latest_attempt(self, invoice: Invoice) -> PaymentAttempt | None:
        """The invoice's newest payment transaction (GET /invoices/{id}/payments, newest first; else the
        transaction of its newest linked payment), with the card of its payment source; None if none."""
        raw = self._newest_transaction(invoice.id)
        if raw is None and invoice.latest_attempt_id:
            txn_id = invoice.latest_attempt_id
            try:
                resp = self._cb.Transaction.retrieve(txn_id)
            except Exception as exc:
                err = self._map(f"Transaction.retrieve({txn_id})", exc)
                if err.code != "not_found":
                    raise err from exc
            else:
                raw = _field(resp, "transaction")
        return self._attempt(raw, invoice) if raw is not None else None

    def _newest_transaction(self, invoice_id: str) -> dict[str, Any] | None:
        what = f"Transaction.payments_for_invoice({invoice_id})"
        resp = self._call(what, lambda: self._cb.Transaction.payments_for_invoice(invoice_id, {"limit": 10}))
        txns, _ = _list(resp, "transaction")
        best: dict[str, Any] | None = None
        for txn in txns:  # newest first already; the first of equal dates wins
            if txn.get("type") not in (None, "payment"):
                continue
            if best is None or _int(txn.get("date")) > _int(best.get("date")):
                best = txn
        return best

    def _attempt(
        self, raw: dict[str, Any], invoice: Invoice | None, *, enrich: bool = True, ours: bool = False
    ) -> PaymentAttempt:
        """A transaction as a payment attempt; `enrich` reads its payment source for the card brand
        (which network's retry rules apply)."""
        card: dict[str, Any] | None = None
        ps_id = raw.get("payment_source_id")
        if enrich and isinstance(ps_id, str) and ps_id:
            source = self._payment_source(ps_id)
            card = _card_resource(source) if source is not None else None
        attempt = self._norm("transaction", lambda d: chargebee_transaction_attempt(d, card), raw)
        return link_attempt(attempt, invoice, ours=ours)

    def _payment_source(self, ps_id: str) -> dict[str, Any] | None:
        """One payment source, or None when it is gone or not readable (only retryable errors raise)."""
        try:
            resp = self._cb.PaymentSource.retrieve(ps_id)
            return _field(resp, "payment_source")
        except Exception as exc:
            err = self._map(f"PaymentSource.retrieve({ps_id})", exc)
            if err.retryable:
                raise err from exc
            return None

    def list_payment_methods(self, customer_id: str) -> list[PaymentMethod]:
        """The customer's payment sources, its primary one flagged as default (sites without the Payment
        Sources API: the customer's card)."""
        raw_customer, raw_card = self._retrieve_customer(customer_id)
        customer = self._norm("customer", chargebee_customer, raw_customer)
        sources = self._all_payment_sources(customer.id)
        methods = [self._norm("payment source", chargebee_payment_source, ps) for ps in sources]
        if not methods and raw_card is not None:
            methods = [self._norm("card", chargebee_card, raw_card)]
        return [self._flag(pm, customer.id, customer.default_payment_method_id) for pm in methods]

    @staticmethod
    def _flag(pm: PaymentMethod, customer_id: str | None, default_id: str | None) -> PaymentMethod:
        update: dict[str, Any] = {"is_default": default_id is not None and pm.id == default_id}
        if pm.customer_id is None and customer_id:
            update["customer_id"] = customer_id
        return pm.model_copy(update=update)

    def _all_payment_sources(self, customer_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset: str | None = None
        for _ in range(MAX_LIST_PAGES):
            params: dict[str, Any] = {"customer_id": {"is": customer_id}, "limit": MAX_PAGE}
            if offset:
                params["offset"] = offset
            resp = self._call(
                f"PaymentSource.list(customer_id={customer_id})",
                partial(self._cb.PaymentSource.list, params),
            )
            page, offset = _list(resp, "payment_source")
            out.extend(page)
            if not offset:
                break
        return out

    def retrieve_event(self, event_id: str) -> dict[str, Any]:
        """The API's copy of a webhook event, as the webhook envelope
        ``{id, occurred_at, source, object: "event", api_version, event_type, content, …}``."""
        event_id = self._id("event", event_id)
        resp = self._call(f"Event.retrieve({event_id})", lambda: self._cb.Event.retrieve(event_id))
        out = dict(_field(resp, "event"))
        out.setdefault("object", "event")
        return out

    # ------------------------------------------------------------------ writes

    def pay_invoice(
        self,
        invoice_id: str,
        *,
        idempotency_key: str,
        payment_method_id: str | None = None,
        replay: bool = False,
    ) -> PayResult:
        """Collect an open invoice. `replay`: this key may have been sent before (a step re-run after a
        crash), so skip the "already settled" pre-check and let Chargebee answer the key within its
        idempotency window (the first response); past it, a paid invoice is refused and read back as
        `already_settled`, so a replay never charges twice either way."""
        headers = self._headers(idempotency_key)
        raw_before = self._raw_invoice(invoice_id)
        before = self._norm("invoice", chargebee_invoice, raw_before)
        reason = settled_reason(raw_before)
        if reason and not replay:
            return PayResult("already_settled", before, message=reason)
        params: dict[str, Any] = {"payment_initiator": "merchant"}  # an off-session (merchant) retry
        if payment_method_id:
            params["payment_source_id"] = payment_method_id
        what = f"Invoice.collect_payment({invoice_id})"
        try:
            resp = self._cb.Invoice.collect_payment(invoice_id, params, headers)
        except chargebee.PaymentError as exc:
            return self._declined(invoice_id, exc, before, idempotency_key, payment_method_id)
        except (chargebee.InvalidRequestError, chargebee.OperationFailedError) as exc:
            # Settled between our read and the collect call (e.g. paid by the customer meanwhile)?
            after = self._safe(lambda: self._raw_invoice(invoice_id))
            after_reason = settled_reason(after) if after is not None else None
            if after is not None and after_reason:
                settled = self._safe(lambda: self._norm("invoice", chargebee_invoice, after)) or before
                return PayResult("already_settled", settled, message=after_reason)
            raise self._map(what, exc) from exc
        except Exception as exc:
            raise self._map(what, exc) from exc

        # The collect call went through: from here on report, never raise.
        replayed = (
            " (replayed: Chargebee answered this idempotency key before)"
            if getattr(resp, "is_idempotency_replayed", False)
            else ""
        )
        raw_txn = _opt_field(resp, "transaction")
        txn_succeeded = raw_txn is not None and raw_txn.get("status") == "success"
        invoice: Invoice | None
        try:
            invoice = self._norm("invoice", chargebee_invoice, _field(resp, "invoice"))
        except PlatformError as exc:
            if not txn_succeeded:
                return PayResult("failed", before, message=f"collect_payment answered, but {exc}{replayed}")
            invoice = None
        attempt: PaymentAttempt | None = None
        if raw_txn is not None:
            txn = raw_txn
            attempt = self._safe(lambda: self._attempt(txn, invoice or before, ours=True))
        if invoice is None:
            return PayResult(
                "succeeded",
                before,
                attempt,
                message="paid (the invoice in the answer was unreadable)" + replayed,
            )
        if invoice.status == InvoiceStatus.paid:
            return PayResult("succeeded", invoice, attempt, message="paid" + replayed)
        if invoice.status == InvoiceStatus.void:
            return PayResult("already_settled", invoice, attempt, message="invoice is voided" + replayed)
        if attempt is not None and attempt.outcome == "pending":
            message = "payment is in progress; the invoice is not settled yet"
        elif attempt is not None and attempt.decline is not None:
            message = attempt.decline.message or f"declined: {attempt.decline.code}"
        elif attempt is not None and attempt.outcome == "succeeded":
            message = "the payment succeeded but the invoice is not fully paid yet"
        else:
            message = "the invoice is still unpaid after collect_payment"
        return PayResult("failed", invoice, attempt, message=message + replayed)

    def _declined(
        self,
        invoice_id: str,
        exc: Any,
        before: Invoice,
        idempotency_key: str,
        payment_method_id: str | None,
    ) -> PayResult:
        """A payment error on collect: the failed transaction Chargebee recorded (the invoice's newest, when
        it is new), else one described from the error, classified by the decline taxonomy."""
        raw_after = self._safe(lambda: self._raw_invoice(invoice_id))
        invoice = before
        if raw_after is not None:
            invoice = self._safe(lambda: self._norm("invoice", chargebee_invoice, raw_after)) or before
        body: dict[str, Any] = exc.json_obj if isinstance(getattr(exc, "json_obj", None), dict) else {}
        message = str(body.get("message") or "the payment was declined")
        attempt: PaymentAttempt | None = None
        newest = self._safe(lambda: self._newest_transaction(invoice_id))
        if (
            newest is not None
            and newest.get("id") != before.latest_attempt_id
            and newest.get("status") != "success"
        ):
            attempt = self._safe(lambda: self._attempt(newest, invoice, ours=True))
        if attempt is None:
            synthetic = self._transaction_from_error(exc, body, invoice, idempotency_key, payment_method_id)
            attempt = self._safe(lambda: self._attempt(synthetic, invoice, ours=True))
        return PayResult("failed", invoice, attempt, message=message)

    @staticmethod
    def _transaction_from_error(
        exc: Any, body: dict[str, Any], invoice: Invoice, idempotency_key: str, payment_method_id: str | None
    ) -> dict[str, Any]:
        """No transaction to read: describe the decline as a failed transaction for the normalizer.
        Chargebee's message ends with the gateway's answer, ``… Error message: (card_declined) Your card
        was declined.``: the code in parentheses is the gateway's decline code."""
        message = str(body.get("message") or "")
        text = message.split("Error message:", 1)[-1].strip() if message else ""
        decline_code: str | None = None
        m = _GATEWAY_MESSAGE.search(text)
        if m:
            decline_code, text = m.group(1), (m.group(2).strip() or text)
        txn: dict[str, Any] = {
            "id": f"declined_{idempotency_key}",
            "object": "transaction",
            "type": "payment",
            "status": "failure",
            "amount": invoice.amount_remaining or invoice.amount_due,
            "currency_code": invoice.currency.upper(),
            "date": int(datetime.now(UTC).timestamp()),
            "customer_id": invoice.customer_id,
            "payment_source_id": payment_method_id,
            "linked_invoices": [{"invoice_id": invoice.id}],
            "error_code": getattr(exc, "error_code", None) or getattr(exc, "api_error_code", None),
            "error_text": text or message or None,
        }
        if decline_code:
            txn["error_detail"] = {"decline_code": decline_code}
        return txn

    def set_native_retries(self, invoice_id: str, enabled: bool, *, idempotency_key: str) -> None:
        """Stop Chargebee's dunning of this invoice (`Invoice.stop_dunning`): BillOps owns its retries
        from then on. Turning it back on is unsupported: Chargebee cannot restart dunning that was
        stopped (`resume_dunning` only undoes `pause_dunning`)."""
        headers = self._headers(idempotency_key)
        invoice_id = self._id("invoice", invoice_id)
        if enabled:
            raise PlatformError(
                "Chargebee cannot turn dunning back on for an invoice once it was stopped "
                "(Invoice.stop_dunning is final; resume_dunning only undoes pause_dunning)",
                code="unsupported",
            )
        what = f"Invoice.stop_dunning({invoice_id})"
        params = {"comment": "BillOps manages the payment retries of this invoice from now on"}
        try:
            self._cb.Invoice.stop_dunning(invoice_id, params, headers)
        except (chargebee.InvalidRequestError, chargebee.OperationFailedError) as exc:
            if int(getattr(exc, "http_status_code", 0) or 0) in (400, 409):
                # Not in dunning (never started, exhausted, already stopped): nothing is retrying.
                raw = self._safe(lambda: self._raw_invoice(invoice_id))
                if (
                    raw is not None
                    and raw.get("dunning_status") != "in_progress"
                    and not raw.get("next_retry_at")
                ):
                    return
            raise self._map(what, exc) from exc
        except Exception as exc:
            raise self._map(what, exc) from exc

    def write_note(self, invoice_id: str, note: dict[str, str], *, idempotency_key: str) -> None:
        """A comment on the invoice (`Comment.create`): a `BillOps` heading and one `key: value` line each."""
        headers = self._headers(idempotency_key)
        invoice_id = self._id("invoice", invoice_id)
        text = note_text(note)
        if not text:
            return
        params = {"entity_type": "invoice", "entity_id": invoice_id, "notes": text}
        self._call(f"Comment.create(invoice {invoice_id})", lambda: self._cb.Comment.create(params, headers))

    def card_update_link(self, customer_id: str, *, return_url: str | None, idempotency_key: str) -> str:
        """A Chargebee hosted page where the customer adds or updates payment sources; returns its URL."""
        headers = self._headers(idempotency_key)
        customer_id = self._id("customer", customer_id)
        params: dict[str, Any] = {"customer": {"id": customer_id}}
        if return_url:
            params["redirect_url"] = return_url
        if self.card_page == "manage_payment_sources":
            what, call = "HostedPage.manage_payment_sources", self._cb.HostedPage.manage_payment_sources
        else:
            what, call = "HostedPage.update_payment_method", self._cb.HostedPage.update_payment_method
        resp = self._call(f"{what}(customer={customer_id})", lambda: call(params, headers))
        url = _field(resp, "hosted_page").get("url")
        if not isinstance(url, str) or not url:
            raise PlatformError("Chargebee created a hosted page without a URL", code="bad_response")
        return url

    def pause_subscription(
        self, subscription_id: str, *, resume_at: datetime | None, idempotency_key: str
    ) -> None:
        """Pause now (`Subscription.pause`, pause_option=immediately), resuming at `resume_at` when given."""
        headers = self._headers(idempotency_key)
        subscription_id = self._id("subscription", subscription_id)
        params: dict[str, Any] = {"pause_option": "immediately"}
        if resume_at is not None:
            if resume_at.tzinfo is None:
                raise InputError("resume_at must be timezone-aware")
            params["resume_date"] = int(resume_at.timestamp())
        what = f"Subscription.pause({subscription_id})"
        try:
            self._cb.Subscription.pause(subscription_id, params, headers)
        except (chargebee.InvalidRequestError, chargebee.OperationFailedError) as exc:
            if int(getattr(exc, "http_status_code", 0) or 0) in (400, 409):
                current = self._safe(lambda: self._raw_subscription(subscription_id))
                if current is not None and current.get("status") == "paused":
                    return  # already paused
            raise self._map(what, exc) from exc
        except Exception as exc:
            raise self._map(what, exc) from exc

    def _raw_subscription(self, subscription_id: str) -> dict[str, Any]:
        resp = self._call(
            f"Subscription.retrieve({subscription_id})",
            lambda: self._cb.Subscription.retrieve(subscription_id),
        )
        return _field(resp, "subscription")

    def apply_credit(self, customer_id: str, amount: Money, *, reason: str, idempotency_key: str) -> None:
        """Promotional credits (`PromotionalCredit.add`, credit_type general) that pay future invoices."""
        headers = self._headers(idempotency_key)
        customer_id = self._id("customer", customer_id)
        if amount.amount <= 0:
            raise InputError(f"a credit must be positive, got {amount.format()}")
        description = (reason or "").strip() or "BillOps credit"
        params: dict[str, Any] = {
            "customer_id": customer_id,
            "amount": amount.amount,
            "currency_code": amount.currency.upper(),
            "description": description[:CREDIT_DESCRIPTION_MAX],
            "credit_type": "general",
        }
        self._call(
            f"PromotionalCredit.add(customer={customer_id})",
            lambda: self._cb.PromotionalCredit.add(params, headers),
        )

    def apply_coupon(
        self, customer_id: str, coupon: str, *, subscription_id: str | None, idempotency_key: str
    ) -> None:
        """Add an existing coupon to the customer's subscription (kept coupons stay): `update_for_items`
        on Product Catalog 2.0 subscriptions, `Subscription.update` on 1.0 ones."""
        headers = self._headers(idempotency_key)
        if not subscription_id:
            raise InputError("Chargebee applies coupons to a subscription: a subscription id is required")
        if not coupon or not coupon.strip():
            raise InputError("a coupon id is required")
        raw = self._raw_subscription(subscription_id)
        owner = raw.get("customer_id")
        if customer_id and owner and owner != customer_id:
            raise InputError(
                f"Chargebee subscription {subscription_id} belongs to customer {owner}, not {customer_id}"
            )
        if any(isinstance(c, dict) and c.get("coupon_id") == coupon for c in raw.get("coupons") or []):
            return  # already applied
        params: dict[str, Any] = {"coupon_ids": [coupon]}
        if raw.get("subscription_items") or not raw.get("plan_id"):
            what = f"Subscription.update_for_items({subscription_id}, coupon {coupon})"
            self._call(what, lambda: self._cb.Subscription.update_for_items(subscription_id, params, headers))
        else:
            what = f"Subscription.update({subscription_id}, coupon {coupon})"
            self._call(what, lambda: self._cb.Subscription.update(subscription_id, params, headers))

    # ------------------------------------------------------------------ backfill

    def backfill_resources(self) -> list[str]:
        return list(RESOURCES)

    def backfill_page(self, resource: str, cursor: str | None, page_size: int) -> BackfillPage:
        """One page of `resource` in creation order; `cursor` is Chargebee's `next_offset` of the page
        before. payment_attempts are the payment transactions; payment_methods the payment sources
        (their customers' primary sources flagged as default)."""
        if resource not in RESOURCES:
            raise InputError(
                f"unknown Chargebee backfill resource {resource!r}; known: {', '.join(RESOURCES)}"
            )
        if not 1 <= page_size <= MAX_PAGE:
            raise InputError(f"page size must be between 1 and {MAX_PAGE}, got {page_size}")
        params: dict[str, Any] = {"limit": page_size}
        if cursor:
            params["offset"] = cursor
        what = f"{resource} list" + (f" at offset {cursor}" if cursor else "")
        items: list[BackfillItem]
        if resource == "customers":
            params["sort_by"] = {"asc": "created_at"}
            raw, nxt = _list(self._call(what, lambda: self._cb.Customer.list(params)), "customer")
            items = [self._norm("customer", chargebee_customer, d) for d in raw]
        elif resource == "subscriptions":
            params["sort_by"] = {"asc": "created_at"}
            raw, nxt = _list(self._call(what, lambda: self._cb.Subscription.list(params)), "subscription")
            items = [self._norm("subscription", chargebee_subscription, d) for d in raw]
        elif resource == "invoices":
            params["sort_by"] = {"asc": "date"}
            raw, nxt = _list(self._call(what, lambda: self._cb.Invoice.list(params)), "invoice")
            items = [self._norm("invoice", chargebee_invoice, d) for d in raw]
        elif resource == "payment_attempts":
            params["type"] = {"is": "payment"}
            params["sort_by"] = {"asc": "date"}
            raw, nxt = _list(self._call(what, lambda: self._cb.Transaction.list(params)), "transaction")
            items = [self._attempt(d, None, enrich=False) for d in raw]
        else:
            params["sort_by"] = {"asc": "created_at"}
            raw, nxt = _list(self._call(what, lambda: self._cb.PaymentSource.list(params)), "payment_source")
            methods = [self._norm("payment source", chargebee_payment_source, d) for d in raw]
            defaults = self._primary_sources(pm.customer_id for pm in methods if pm.customer_id)
            items = [self._flag(pm, pm.customer_id, defaults.get(pm.customer_id or "")) for pm in methods]
        return BackfillPage(items=items, next_cursor=nxt)

    def _primary_sources(self, customer_ids: Iterable[str]) -> dict[str, str | None]:
        """customer id -> primary payment source id, in one `Customer.list(id[in])` call per 100."""
        ids = sorted(set(customer_ids))
        out: dict[str, str | None] = {}
        for start in range(0, len(ids), MAX_PAGE):
            chunk = ids[start : start + MAX_PAGE]
            params: dict[str, Any] = {"id": {"in": chunk}, "limit": MAX_PAGE}
            resp = self._call("Customer.list(id in …)", partial(self._cb.Customer.list, params))
            for raw in _list(resp, "customer")[0]:
                if isinstance(raw.get("id"), str):
                    out[raw["id"]] = raw.get("primary_payment_source_id")
        return out
