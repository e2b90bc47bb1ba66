"""Build Stripe webhook payloads (current API shape) for test scenarios, from the carried fixtures
in tests/fixtures/stripe/current with fresh ids and the decline, card and amounts a test asks for."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

CURRENT = Path(__file__).parents[1] / "fixtures" / "stripe" / "current"


def _load(name: str) -> dict[str, Any]:
    return json.loads((CURRENT / f"{name}.json").read_text())


def _uid(prefix: str) -> str:
    return f"{prefix}_t{uuid.uuid4().hex[:20]}"


class Failure:
    """One failed renewal: a charge.failed and an invoice.payment_failed for the same invoice."""

    def __init__(
        self,
        *,
        decline_code: str = "insufficient_funds",
        failure_code: str = "card_declined",
        brand: str = "visa",
        mac: str | None = None,
        network_decline_code: str | None = None,
        advice_code: str | None = None,
        amount: int = 4900,
        currency: str = "usd",
        customer: str | None = None,
        invoice: str | None = None,
        at: int | None = None,
        attempt_count: int = 1,
        fingerprint: str | None = None,
    ) -> None:
        self.at = at or int(time.time())
        self.customer = customer or _uid("cus")
        self.invoice = invoice or _uid("in")
        self.pi = _uid("pi")
        self.charge = _uid("ch")
        self.amount, self.currency = amount, currency
        self.decline_code, self.failure_code = decline_code, failure_code
        self.brand, self.mac, self.ndc, self.advice = brand, mac, network_decline_code, advice_code
        self.attempt_count = attempt_count
        self.fingerprint = fingerprint or uuid.uuid4().hex[:16]

    def charge_failed(self) -> dict[str, Any]:
        ev = _load("charge.failed")
        ev["id"], ev["created"] = _uid("evt"), self.at
        o = ev["data"]["object"]
        o.update(
            id=self.charge,
            customer=self.customer,
            payment_intent=self.pi,
            amount=self.amount,
            currency=self.currency,
            created=self.at,
            failure_code=self.failure_code,
        )
        o["outcome"].update(
            reason=self.decline_code,
            network_advice_code=self.mac,
            network_decline_code=self.ndc,
            advice_code=self.advice,
        )
        card = o["payment_method_details"]["card"]
        card.update(brand=self.brand, network=self.brand, fingerprint=self.fingerprint)
        return ev

    def invoice_failed(self) -> dict[str, Any]:
        ev = _load("invoice.payment_failed")
        ev["id"], ev["created"] = _uid("evt"), self.at + 1
        o = ev["data"]["object"]
        o.update(
            id=self.invoice,
            customer=self.customer,
            amount_due=self.amount,
            amount_remaining=self.amount,
            currency=self.currency,
            attempt_count=self.attempt_count,
            status="open",
        )
        pay = o["payments"]["data"][0]
        pay.update(invoice=self.invoice, amount_requested=self.amount, currency=self.currency)
        pay["payment"]["payment_intent"] = self.pi
        return ev

    def events(self) -> list[dict[str, Any]]:
        return [self.charge_failed(), self.invoice_failed()]

    def invoice_paid(self) -> dict[str, Any]:
        ev = self.invoice_failed()
        ev["id"], ev["type"], ev["created"] = _uid("evt"), "invoice.paid", self.at + 60
        o = ev["data"]["object"]
        o.update(status="paid", amount_paid=self.amount, amount_remaining=0)
        return copy.deepcopy(ev)
