"""The console in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against the
real server: an operator logs in, approves an item with a why and watches the workflow go on; a viewer
sees no approve button and a forged POST from their session is refused."""

from __future__ import annotations

import os
import re
import time

import pytest

from support.scenario import Failure
from web.live import CHROMIUM, PASSWORD, Live

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"Debian chromium is not installed at {CHROMIUM}"
    ),
]


def login(page: object, url: str, username: str) -> None:
    page.goto(f"{url}/console/approvals")  # type: ignore[attr-defined]
    assert "/console/login?next=" in page.url  # type: ignore[attr-defined]
    page.fill("input[name=username]", username)  # type: ignore[attr-defined]
    page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}/console/approvals")  # type: ignore[attr-defined]


def test_operator_approves_and_viewer_cannot(live_console: Live) -> None:
    from playwright.sync_api import expect, sync_playwright

    live = live_console
    wf = live.fail(Failure(amount=12900).events())
    other = live.fail(Failure(amount=3100).events())
    appr_id, other_id = live.approval_id(wf), live.approval_id(other)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            # The operator: the queue, the item, approve with a why.
            op = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            login(op, live.url, "otto")
            expect(op.locator("header .who")).to_have_text("otto")
            row = op.locator(f'a[href="/console/approvals/{appr_id}"]')
            expect(row).to_be_visible()
            expect(op.locator("#queue")).to_contain_text("129.00 USD")
            row.click()
            op.wait_for_url(f"{live.url}/console/approvals/{appr_id}")
            expect(op.locator("h1")).to_contain_text(f"Approval #{appr_id}")
            expect(op.get_by_text("Proposed actions")).to_be_visible()
            approve_form = op.locator(f'form[action="/console/approvals/{appr_id}/approve"]')
            approve_form.locator("input[name=why]").fill("customer confirmed by phone")
            approve_form.locator("button[type=submit]").click()
            expect(op.locator("p.ok")).to_contain_text("Done: approved")
            expect(op.locator("h1 .st")).to_have_text("approved")

            # The workflow continues: poll the decision page until the plan's actions have outcomes.
            op.goto(f"{live.url}/console/decisions/{wf}")
            deadline = time.monotonic() + 45
            while op.locator("#decision-status").inner_text() in ("approved", "awaiting_approval"):
                assert time.monotonic() < deadline, "the workflow did not continue after the approval"
                time.sleep(0.5)
                op.reload()
            expect(op.locator("#decision-status")).to_have_text("not_executed")  # no Stripe keys here
            expect(op.locator("#outcomes")).to_contain_text("skipped")
            timeline = op.locator("table.timeline")
            expect(timeline).to_contain_text("approval.approved")
            expect(timeline).to_contain_text("otto")
            expect(timeline).to_contain_text("recovery.finished")

            # The queue's status filter (htmx swaps the table and updates the address).
            op.goto(f"{live.url}/console/approvals")
            expect(op.locator(f'#queue a[href="/console/approvals/{appr_id}"]')).to_have_count(0)
            op.select_option("select[name=status]", "approved")
            expect(op.locator(f'#queue a[href="/console/approvals/{appr_id}"]')).to_be_visible()
            op.wait_for_url(f"{live.url}/console/approvals?status=approved")

            # The viewer: reads the other item, has no approve button, and a forged POST is refused.
            vctx = browser.new_context(viewport={"width": 1280, "height": 900})
            vp = vctx.new_page()
            login(vp, live.url, "vera")
            vp.goto(f"{live.url}/console/approvals/{other_id}")
            expect(vp.locator("h1")).to_contain_text(f"Approval #{other_id}")
            assert vp.locator("form[action$='/approve']").count() == 0
            assert vp.get_by_role("button", name="Approve").count() == 0
            expect(vp.get_by_text("approving needs the operator role")).to_be_visible()
            token = vp.locator("header input[name=csrf]").get_attribute("value")
            assert token
            status = vp.evaluate(
                """async ([url, token]) => {
                    const body = new URLSearchParams({csrf: token, why: "forged"});
                    const r = await fetch(url, {method: "POST", body, headers: {"X-CSRF-Token": token}});
                    return [r.status, await r.text()];
                }""",
                [f"/console/approvals/{other_id}/approve", token],
            )
            assert status[0] == 403 and "vera has role viewer" in status[1]
            forged = vctx.request.post(
                f"{live.url}/console/approvals/{other_id}/approve", form={"why": "no token"}
            )
            assert forged.status == 403 and "CSRF check failed" in forged.text()
            vp.reload()
            expect(vp.locator("h1 .st")).to_have_text("pending")

            # Logging out ends the session: the console asks for a login again.
            vp.get_by_role("button", name="Log out").click()
            vp.wait_for_url(re.compile(r".*/console/login.*"))
            vp.goto(f"{live.url}/console")
            assert "/console/login" in vp.url
        finally:
            browser.close()
    appr = live.decision(other)
    assert appr is not None and appr.status == "awaiting_approval"
