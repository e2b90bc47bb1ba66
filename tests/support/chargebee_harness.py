"""A Chargebee failed payment posted through the real webhook route, against FakeChargebeeAPI (shared by
the platform end-to-end tests and the governance tests)."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

FIXTURES = Path(__file__).parents[1] / "fixtures"


class ChargebeeHarness:
    platform = "chargebee"
    CRED = "billops:e2e-password-1234"
    action_writes = (  # stop dunning, comment, hosted card page
        r"POST /api/v2/invoices/INV-\w+/stop_dunning$",
        r"POST /api/v2/comments$",
        r"POST /api/v2/hosted_pages/manage_payment_sources$",
    )

    def __init__(self, api: Any) -> None:
        self.api = api
        self.invoice_id = ""

    def settings(self) -> dict[str, Any]:
        return {
            "chargebee_webhook_credentials": {"default": [self.CRED]},
            "chargebee_site": self.api.site,
            "chargebee_api_key": self.api.api_key,
            "chargebee_api_url": self.api.url,
        }

    def post_failure(self, client: TestClient, customer: dict[str, Any] | None = None) -> str:
        """Post the fixture's payment_failed as a new failure (new invoice id); `customer` overrides
        fields of the event's customer (e.g. a phone number)."""
        ev = json.loads((FIXTURES / "chargebee" / "payment_failed_insufficient_funds.json").read_text())
        ev["content"]["customer"].update(customer or {})
        now = int(time.time()) - 60
        ev["id"] = f"ev_{uuid.uuid4().hex[:12]}"
        ev["occurred_at"] = now
        content = ev["content"]
        self.invoice_id = f"INV-{uuid.uuid4().hex[:8]}"
        txn, inv = content["transaction"], content["invoice"]
        inv["id"] = self.invoice_id
        inv["date"] = inv["due_date"] = inv["updated_at"] = now - 3600
        inv["resource_version"] = txn["resource_version"] = now * 1000
        txn["date"] = txn["updated_at"] = now
        txn["linked_invoices"][0]["invoice_id"] = self.invoice_id
        self.api.seed_event(copy.deepcopy(ev))
        auth = "Basic " + base64.b64encode(self.CRED.encode()).decode()
        r = client.post(
            "/webhooks/chargebee/default",
            content=json.dumps(ev).encode(),
            headers={"authorization": auth, "content-type": "application/json"},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["workflow_id"])

    def decline_next_pay(self) -> None:
        self.api.decline_next_collect(
            error_code="card_declined",
            error_text="Your card has insufficient funds.",
            error_detail={"decline_code": "insufficient_funds"},
            invoice_id=self.invoice_id,
        )

    def pay_requests(self) -> list[Any]:
        return list(self.api.find("POST", rf"/invoices/{self.invoice_id}/collect_payment$"))

    def writes(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.api.writes()]

    def invoice_paid(self) -> bool:
        inv = self.api.get("invoices", self.invoice_id)
        return inv is not None and inv["status"] == "paid"

    def check_pay_request(self, req: Any, wf: str) -> None:
        assert req.header("chargebee-idempotency-key") == f"{wf}:pay:1"
        assert req.basic_user == self.api.api_key


SUBSCRIPTION = "AzZlGJVAb1cXy9F7"  # the fixture invoice's subscription


@contextlib.contextmanager
def running_harness() -> Iterator[ChargebeeHarness]:
    """FakeChargebeeAPI with the fixture's subscription, wrapped in a harness (governance and delivery
    end-to-end tests)."""
    from support.chargebee_api import FakeChargebeeAPI

    with FakeChargebeeAPI() as api:
        api.put(
            "subscriptions",
            {
                "id": SUBSCRIPTION,
                "object": "subscription",
                "status": "active",
                "customer_id": "16BjmHTWbLIJnFp7",
            },
        )
        yield ChargebeeHarness(api)
