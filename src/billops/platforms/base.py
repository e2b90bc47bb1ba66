"""The interface every billing platform client implements, and its capability flags.

Workflows only talk to this interface; vendor details stay in the platform's own package.
A write the platform cannot do raises `PlatformError(code="unsupported")`; callers check the
capability flags first. Every write takes an `idempotency_key` derived from the workflow id and
step, so a replay after a crash never writes twice (where the platform has no idempotency keys,
the client guarantees at-most-once itself and says so in its docs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from billops.domain import (
    Customer,
    Invoice,
    InvoiceStatus,
    Money,
    PaymentAttempt,
    PaymentMethod,
    Subscription,
)

# The resources every backfill offers (a client may offer fewer), and what one page holds.
RESOURCES = ("customers", "subscriptions", "invoices", "payment_attempts", "payment_methods")
BackfillItem = Customer | Subscription | Invoice | PaymentAttempt | PaymentMethod
# Invoice states in which nothing is left to collect: a retry is never sent.
SETTLED = frozenset({InvoiceStatus.paid, InvoiceStatus.void, InvoiceStatus.uncollectible})


@dataclass(frozen=True)
class Capabilities:
    retry_invoice: bool = False  # pay/collect an open invoice now
    disable_native_retries: bool = False  # stop the platform's own dunning for one invoice
    write_note: bool = False  # attach a note/metadata to the invoice
    card_update_link: bool = False  # a hosted page where the customer updates the card
    pay_with_other_method: bool = False  # pay an invoice with a given stored payment method
    idempotency_keys: bool = False  # the platform deduplicates writes by key
    backfill: bool = False
    pause_subscription: bool = False  # pause a subscription (collection stops), optionally until a date
    credit: bool = False  # add account credit that pays future invoices
    coupon: bool = False  # apply an existing coupon to a customer / subscription


@dataclass
class PayResult:
    outcome: Literal["succeeded", "failed", "already_settled"]
    invoice: Invoice
    attempt: PaymentAttempt | None = None
    message: str = ""


@dataclass
class BackfillPage:
    """One page of a backfill: the objects and the cursor to resume after them."""

    items: list[BackfillItem] = field(default_factory=list)
    next_cursor: str | None = None  # None: this was the last page


def link_attempt(attempt: PaymentAttempt, invoice: Invoice | None, *, ours: bool = False) -> PaymentAttempt:
    """Fill what a payment attempt read on its own may not say: its invoice and customer (from the
    invoice it was read for) and, for a payment BillOps sent, `initiated_by="billops"`."""
    update: dict[str, str] = {}
    if invoice is not None:
        if attempt.invoice_id is None:
            update["invoice_id"] = invoice.id
        if attempt.customer_id is None and invoice.customer_id:
            update["customer_id"] = invoice.customer_id
    if ours:
        update["initiated_by"] = "billops"
    return attempt.model_copy(update=update) if update else attempt


@runtime_checkable
class PlatformClient(Protocol):
    platform: str
    capabilities: Capabilities

    # reads
    def get_invoice(self, invoice_id: str) -> Invoice: ...
    def get_customer(self, customer_id: str) -> Customer: ...
    def latest_attempt(self, invoice: Invoice) -> PaymentAttempt | None: ...
    def list_payment_methods(self, customer_id: str) -> list[PaymentMethod]: ...

    # writes (each with an idempotency key)
    def pay_invoice(
        self,
        invoice_id: str,
        *,
        idempotency_key: str,
        payment_method_id: str | None = None,
        replay: bool = False,
    ) -> PayResult: ...
    def set_native_retries(self, invoice_id: str, enabled: bool, *, idempotency_key: str) -> None: ...
    def write_note(self, invoice_id: str, note: dict[str, str], *, idempotency_key: str) -> None: ...
    def card_update_link(self, customer_id: str, *, return_url: str | None, idempotency_key: str) -> str: ...
    def pause_subscription(
        self, subscription_id: str, *, resume_at: datetime | None, idempotency_key: str
    ) -> None: ...
    def apply_credit(self, customer_id: str, amount: Money, *, reason: str, idempotency_key: str) -> None: ...
    def apply_coupon(
        self, customer_id: str, coupon: str, *, subscription_id: str | None, idempotency_key: str
    ) -> None: ...

    # backfill: resources are "customers", "subscriptions", "invoices", "payment_attempts", "payment_methods"
    def backfill_resources(self) -> list[str]: ...
    def backfill_page(self, resource: str, cursor: str | None, page_size: int) -> BackfillPage: ...
