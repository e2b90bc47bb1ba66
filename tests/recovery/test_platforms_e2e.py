"""The payment-recovery workflow end to end on Chargebee, Recurly and Zuora, in shadow, assist and auto
modes: the platform's authenticated webhook → the real BillOps app and DBOS → the platform client over
real HTTP against a local fake of the vendor API (tests/support/*_api.py) that records every request.

shadow: the decision is recorded and nothing is written on the platform.
assist: the decision waits; a human approves through the API; the actions run and the retry recovers.
auto:   the actions run at once; the retry is declined, classified, and the recovery ends exhausted.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.governance.audit import verify
from support.auth import auth_headers
from support.chargebee_harness import ChargebeeHarness
from support.service import Service, own

FIXTURES = Path(__file__).parents[1] / "fixtures"
RETRY_HOURS = 0.002  # the retry comes ~7 s after the decision


class Harness(Protocol):
    platform: str

    def settings(self) -> dict[str, Any]: ...
    def post_failure(self, client: TestClient) -> str: ...
    def decline_next_pay(self) -> None: ...
    def pay_requests(self) -> list[Any]: ...
    def writes(self) -> list[str]: ...
    def invoice_paid(self) -> bool: ...
    def check_pay_request(self, req: Any, wf: str) -> None: ...

    # the writes (regexes over "METHOD /path") the approved actions make before the retry
    action_writes: tuple[str, ...]


# ---------------------------------------------------------------- Chargebee


@pytest.fixture
def chargebee() -> Iterator[ChargebeeHarness]:
    from support.chargebee_api import FakeChargebeeAPI

    with FakeChargebeeAPI() as api:
        yield ChargebeeHarness(api)


# ---------------------------------------------------------------- Zuora


class ZuoraHarness:
    """A Payment Declined callout (our documented template, preemptive Basic auth). It carries no
    invoice: BillOps finds it through the API before storing the event."""

    platform = "zuora"
    CRED = "zuora:e2e-password-1234"
    action_writes = (r"PUT /v1/invoices/INV\w+$",)  # autoPay off, then the comment

    def __init__(self, api: Any) -> None:
        self.api = api
        self.invoice_id = ""
        self.pm_id = ""

    def settings(self) -> dict[str, Any]:
        return {
            "zuora_webhook_endpoints": {"default": {"basic": [self.CRED]}},
            "zuora_api_url": self.api.url,
            "zuora_client_id": self.api.client_id,
            "zuora_client_secret": self.api.client_secret,
        }

    def post_failure(self, client: TestClient) -> str:
        from datetime import UTC, datetime, timedelta

        tag = uuid.uuid4().hex[:10]
        account, self.pm_id, self.invoice_id, payment = f"A{tag}", f"PM{tag}", f"INV{tag}", f"P{tag}"
        now = datetime.now(UTC) - timedelta(minutes=1)
        self.api.add_account(account, default_payment_method=self.pm_id)
        self.api.add_payment_method(self.pm_id, account)
        self.api.add_invoice(self.invoice_id, account, amount="49.99", posted=now - timedelta(hours=1))
        self.api.add_payment(
            payment, account, amount="49.99", created=now, payment_method=self.pm_id,
            gateway_code="card_declined",
            gateway_response="[card_error/card_declined/insufficient_funds] Insufficient funds.",
        )  # fmt: skip
        body = json.loads((FIXTURES / "zuora" / "payment_declined_insufficient_funds.json").read_text())
        body["timestamp"] = now.isoformat()
        body["account"]["id"] = body["payment"]["accountId"] = body["paymentMethod"]["accountId"] = account
        body["account"]["defaultPaymentMethodId"] = body["payment"]["paymentMethodId"] = self.pm_id
        body["paymentMethod"]["id"] = self.pm_id
        body["payment"]["id"] = payment
        body["payment"]["createdDate"] = body["payment"]["updatedDate"] = now.isoformat()
        auth = "Basic " + base64.b64encode(self.CRED.encode()).decode()
        r = client.post(
            "/webhooks/zuora/default",
            content=json.dumps(body).encode(),
            headers={"authorization": auth, "content-type": "application/json"},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["workflow_id"])

    def decline_next_pay(self) -> None:
        self.api.decline(
            self.pm_id, "card_declined", "[card_error/card_declined/insufficient_funds] Insufficient funds."
        )

    def pay_requests(self) -> list[Any]:
        return list(self.api.find("POST", r"^/v1/payments$"))

    def writes(self) -> list[str]:
        return [
            f"{r.method} {r.path}"
            for r in self.api.requests
            if r.method != "GET" and r.path != "/oauth/token"
        ]

    def invoice_paid(self) -> bool:
        return bool(self.api.state.invoices[self.invoice_id]["balance"] == 0)

    def check_pay_request(self, req: Any, wf: str) -> None:
        assert req.header("Idempotency-Key") == f"{wf}:pay:1"
        assert (req.header("Authorization") or "").startswith("Bearer ")
        assert req.json["invoices"][0]["invoiceId"] == self.invoice_id


@pytest.fixture
def zuora() -> Iterator[ZuoraHarness]:
    from support.zuora_api import FakeZuoraAPI

    with FakeZuoraAPI() as api:
        yield ZuoraHarness(api)


# ---------------------------------------------------------------- Recurly


class RecurlyHarness:
    """A signed thin `payment.failed` envelope naming only the transaction: BillOps fetches the
    transaction, its invoice and account before storing the event. Recurly has no idempotency keys:
    the collect goes through the at-most-once ledger."""

    platform = "recurly"
    KEY = "recurly-e2e-webhook-key-0001"
    action_writes = (r"POST /accounts/\w+/notes$",)  # no per-invoice dunning stop on Recurly

    def __init__(self, api: Any) -> None:
        self.api = api
        self.invoice_id = ""
        self.rt: Any = None

    def settings(self) -> dict[str, Any]:
        return {
            "recurly_webhook_keys": {"default": [self.KEY]},
            "recurly_api_key": self.api.api_key,
            "recurly_api_url": self.api.url,
        }

    def post_failure(self, client: TestClient) -> str:
        import hashlib
        import hmac
        from datetime import UTC, datetime, timedelta

        self.api.seed_fixtures()
        now = datetime.now(UTC) - timedelta(minutes=1)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        tag = uuid.uuid4().hex
        inv = self.api.get("invoices", "i1001adapast")
        txn = self.api.get("transactions", "t1ada0decl01")
        self.invoice_id = inv["id"] = f"i{tag[:11]}"
        inv["number"] = str(5000 + int(tag[:4], 16))
        inv["created_at"] = inv["updated_at"] = inv["due_at"] = stamp
        txn["id"], txn["uuid"] = f"t{tag[:11]}", tag
        txn["created_at"] = txn["updated_at"] = txn["collected_at"] = stamp
        txn["invoice"] = {**txn["invoice"], "id": inv["id"], "number": inv["number"]}
        inv["transactions"] = [txn]
        self.api.seed("invoices", inv)
        self.api.seed("transactions", txn)
        body = json.dumps(
            {
                "id": f"r{tag[:11]}",
                "object_type": "payment",
                "site_id": "s7bx2kq9m4pd",
                "event_type": "failed",
                "event_time": stamp,
                "uuid": tag,
            }
        ).encode()
        ts = str(int(time.time() * 1000))
        sig = hmac.new(self.KEY.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        r = client.post(
            "/webhooks/recurly/default",
            content=body,
            headers={"recurly-signature": f"{ts},{sig}", "content-type": "application/json"},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["workflow_id"])

    def decline_next_pay(self) -> None:
        self.api.decline_next_collect(code="insufficient_funds", decline_code="insufficient_funds")

    def pay_requests(self) -> list[Any]:
        return list(self.api.find("PUT", rf"/invoices/{self.invoice_id}/collect$"))

    def writes(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.api.writes()]

    def invoice_paid(self) -> bool:
        return bool(self.api.get("invoices", self.invoice_id)["state"] == "paid")

    def check_pay_request(self, req: Any, wf: str) -> None:
        assert req.basic_credentials == (self.api.api_key, "")
        from billops.platforms.ledger import WriteLedger
        from billops.runtime import get_runtime

        assert WriteLedger(get_runtime().db).status(f"{wf}:pay:1") == "done"


@pytest.fixture
def recurly() -> Iterator[RecurlyHarness]:
    from support.recurly_api import FakeRecurlyAPI

    with FakeRecurlyAPI() as api:
        yield RecurlyHarness(api)


# ---------------------------------------------------------------- the tests, per platform

PLATFORMS = ["chargebee", "recurly", "zuora"]


@pytest.fixture(params=PLATFORMS)
def harness(request: pytest.FixtureRequest) -> Harness:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def start(
    harness: Harness,
    database_url: str,
    settings_factory: Any,
    runtime_factory: Any,
    make_policy: Callable[..., Path],
) -> Callable[[str], Service]:
    def _start(mode: str) -> Service:
        policy_file = make_policy(
            modes={"recovery": mode},
            recovery={
                "model": "rules",
                "retry_schedule_hours": {
                    "auto_retry": [RETRY_HOURS],
                    "retry_and_notify": [RETRY_HOURS],
                    "human_review": [],
                },
                "context_wait_seconds": 1,
            },
        )
        settings = settings_factory(database_url, policy_file=policy_file, **harness.settings())
        rt = runtime_factory(settings)
        return Service(TestClient(create_app(settings, manage_runtime=False)), rt)

    return _start


def test_shadow_decides_from_the_platform_and_writes_nothing(
    harness: Harness, start: Callable[[str], Service]
) -> None:
    svc = start("shadow")
    wf = harness.post_failure(svc.client)
    assert wf.startswith(f"{harness.platform}:")
    d = svc.decision(wf, status="recorded")
    assert d.platform == harness.platform and d.mode == "shadow"
    assert d.decline_code == "insufficient_funds" and d.decline_category == "soft"
    assert d.plan["retries"], "a soft decline gets retry times"
    assert "fresh read of the invoice from the API" in d.plan["context_notes"]
    assert harness.writes() == []
    assert svc.audit_actions(wf) == ["recovery.decided"]
    with svc.rt.db.reader() as s:
        assert verify(s).ok


def test_assist_waits_for_a_human_then_acts_and_recovers(
    harness: Harness, start: Callable[[str], Service]
) -> None:
    svc = start("assist")
    wf = harness.post_failure(svc.client)
    svc.awaiting(wf)
    assert harness.writes() == [], "nothing is done before the approval"
    ops = auth_headers(svc.rt, "operator")
    [item] = [a for a in svc.client.get("/api/approvals", headers=ops).json() if a["workflow_id"] == wf]
    r = svc.client.post(f"/api/approvals/{item['id']}/approve", json={"why": "looks right"}, headers=ops)
    assert r.status_code == 200, r.text

    done = svc.decision(wf, status="recovered", timeout=60)
    [pay] = harness.pay_requests()
    harness.check_pay_request(pay, wf)
    assert harness.invoice_paid()
    assert done.outcome["final"] == {"status": "recovered", "retry": 1}
    executed = {k.split(":", 1)[1]: v for k, v in done.outcome.items() if ":" in k and k[0].isdigit()}
    for kind, result in executed.items():
        assert result["status"] in ("done", "skipped"), (kind, result)
    writes = harness.writes()
    for pattern in harness.action_writes:
        assert any(re.match(pattern, w) for w in writes), (pattern, writes)
    actions = svc.audit_actions(wf)
    assert actions[:3] == ["recovery.decided", "approval.requested", "approval.approved"]
    assert "action.retry_payment" in actions and own(actions)[-1] == "recovery.finished"
    with svc.rt.db.reader() as s:
        assert verify(s).ok


def test_auto_acts_at_once_and_a_declined_retry_is_classified(
    harness: Harness, start: Callable[[str], Service]
) -> None:
    svc = start("auto")
    wf = harness.post_failure(svc.client)
    harness.decline_next_pay()  # the retry comes seconds after the decision
    done = svc.decision(wf, status="exhausted", timeout=60)
    [pay] = harness.pay_requests()
    harness.check_pay_request(pay, wf)
    assert not harness.invoice_paid()
    assert done.outcome["pay:1"]["status"] == "failed"
    assert done.outcome["pay:1"]["decline_code"] == "insufficient_funds"
    assert done.outcome["final"] == {"status": "exhausted", "retries": 1}
    assert "action.retry_payment" in svc.audit_actions(wf)
    with svc.rt.db.reader() as s:
        assert verify(s).ok
