"""Screenshots of the console's main pages for docs/screenshots/, taken from real workflow runs: Stripe
webhooks through the real server and DBOS, humans approving, editing and rejecting in the console, and
approved retries paid (or declined again) by a real localstripe through the official Stripe SDK.

Run by hand:  BILLOPS_SCREENSHOTS=1 pytest tests/web/test_screenshots.py -k sqlite
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.localstripe import (
    API_KEY,
    CARD_DECLINED_ON_CHARGE,
    CARD_OK,
    add_card,
    create_customer_with_card,
    create_plan,
    create_subscription,
    run_localstripe,
    sdk_client,
)
from support.scenario import Failure
from web.live import CHROMIUM, PASSWORD, Live

OUT = Path(__file__).parents[2] / "docs" / "screenshots"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("BILLOPS_SCREENSHOTS") != "1", reason="set BILLOPS_SCREENSHOTS=1 to run"
    ),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"Debian chromium is not installed at {CHROMIUM}"
    ),
]

FAILURES: list[dict[str, Any]] = [
    {"decline_code": "insufficient_funds", "amount": 4900},
    {"decline_code": "insufficient_funds", "amount": 12900},
    {"decline_code": "do_not_honor", "amount": 2900},
    {"decline_code": "expired_card", "failure_code": "expired_card", "amount": 9900},
    {"decline_code": "stolen_card", "failure_code": "stolen_card", "amount": 19900},
    {"decline_code": "insufficient_funds", "amount": 4500, "currency": "eur"},
    {"decline_code": "generic_decline", "amount": 7900, "currency": "eur"},
    {"decline_code": "try_again_later", "amount": 1500},
    {"decline_code": "insufficient_funds", "amount": 29900},
    {"decline_code": "card_velocity_exceeded", "amount": 5900, "currency": "eur"},
]


# Real invoices on localstripe, all failed with a declining card: (amount, currency, card update before
# the retry?). Approved in the console, their retries recover or are exhausted for real.
SEEDED = [(2900, "usd", True), (9900, "usd", True), (4900, "eur", True), (19900, "usd", False)]


@pytest.fixture(scope="module")
def localstripe_url() -> Iterator[str]:
    with run_localstripe() as url:
        yield url


def envelope(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "api_version": "2017-08-15",
        "livemode": False,
        "data": {"object": obj},
    }


def test_console_screenshots(live_console_factory: Callable[..., Live], localstripe_url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    hours = 0.006  # the planned retry comes ~20 s after the failure: time to approve and update a card
    schedule = {"auto_retry": [hours], "retry_and_notify": [hours], "human_review": [hours]}
    live = live_console_factory(
        recovery={"retry_schedule_hours": schedule}, stripe_api_key=API_KEY, stripe_api_base=localstripe_url
    )
    sdk = sdk_client(localstripe_url)
    seeded = []
    for amount, currency, updates in SEEDED:
        cus = create_customer_with_card(
            sdk, card=CARD_DECLINED_ON_CHARGE, email=f"{uuid.uuid4().hex[:8]}@x.com"
        )
        _, invoice_id = create_subscription(
            sdk, cus.customer_id, create_plan(sdk, amount=amount, currency=currency)
        )
        inv = sdk.v1.invoices.retrieve(invoice_id).to_dict()
        wf = live.fail([envelope("charge.failed", inv["charge"]), envelope("invoice.payment_failed", inv)])
        seeded.append((wf, cus.customer_id, updates))
    real = [live.approval_id(wf, timeout=60) for wf, _, _ in seeded]
    wfs = [live.fail(Failure(**f).events()) for f in FAILURES]
    ids = [live.approval_id(wf, timeout=60) for wf in wfs]
    OUT.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()

        def shot(name: str, max_height: int = 860) -> None:
            """1280 px wide, at most `max_height` tall (keeps each PNG small)."""
            height = min(int(page.evaluate("document.documentElement.scrollHeight")), max_height)
            clip = {"x": 0, "y": 0, "width": 1280, "height": height}
            page.screenshot(path=str(OUT / f"{name}.png"), full_page=True, clip=clip)

        page.goto(f"{live.url}/console/login")
        page.fill("input[name=username]", "ada")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live.url}/console")

        def decide(appr_id: int, action: str, why: str) -> None:
            page.goto(f"{live.url}/console/approvals/{appr_id}")
            form = page.locator(f'form[action="/console/approvals/{appr_id}/{action}"]')
            form.locator("input[name=why]").fill(why)
            form.locator("button[type=submit]").click()
            expect(page.locator("p.ok")).to_be_visible()

        for appr_id, why in zip(
            real, ("usual payer", "retry is fine", "ok", "long-time customer"), strict=True
        ):
            decide(appr_id, "approve", why)
        for _, customer_id, updates in seeded:
            if updates:  # the customer puts in a working card before the retry
                add_card(sdk, customer_id, card=CARD_OK, make_default=True)
        decide(ids[4], "reject", "customer disputes the charge: support will call")
        # Edit-then-approve: a gentler message.
        page.goto(f"{live.url}/console/approvals/{ids[8]}")
        page.locator("details.box summary").click()
        body = page.locator("details.box textarea").first
        body.fill(body.input_value().replace("\n\n", "\n\nWe know this can happen to anyone.\n\n", 1))
        page.locator("details.box input[name=why]").fill("softer wording for a long-time customer")
        page.locator("details.box button[type=submit]").click()
        expect(page.locator("p.ok")).to_be_visible()
        decided = [wf for wf, _, _ in seeded] + [wfs[4]]
        deadline = time.monotonic() + 90
        while any((d := live.decision(wf)) is None or "final" not in d.outcome for wf in decided):
            assert time.monotonic() < deadline, "workflows did not finish"
            time.sleep(0.5)

        page.goto(f"{live.url}/console")
        shot("overview", 1500)
        page.goto(f"{live.url}/console/approvals")
        shot("approvals")
        page.goto(f"{live.url}/console/approvals/{ids[1]}")
        shot("approval-detail", 1400)
        page.goto(f"{live.url}/console/decisions/{seeded[0][0]}")
        shot("decision-detail", 1300)
        page.goto(f"{live.url}/console/audit")
        shot("audit")
        page.goto(f"{live.url}/console/policy")
        why = page.locator("#controls input[name=why]")
        why.fill("incident 1234: provider outage, hold every action")
        page.get_by_role("button", name="Pause all (kill switch)").click()
        expect(page.locator(".banner")).to_be_visible()
        shot("policy")
        browser.close()
    for name in ("overview", "approvals", "approval-detail", "decision-detail", "audit", "policy"):
        size = (OUT / f"{name}.png").stat().st_size
        assert 10_000 < size <= 260_000, (name, size)
