"""The Workflows page in real headless Chromium (Playwright) against the real server on loopback: an
operator finds the failed workflow from the nav, opens it, presses Resume and sees it gone; the
workflow finishes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from billops.governance.users import create_user
from web.live import CHROMIUM, free_port

from .conftest import CALLS, Ops, wait_status

PASSWORD = "correct-horse-battery"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"Debian chromium is not installed at {CHROMIUM}"
    ),
]


@pytest.fixture
def served(ops: Ops) -> Iterator[tuple[Ops, str]]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(ops.api.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the console server did not start"
        time.sleep(0.05)
    try:
        yield ops, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_operator_resumes_a_failed_workflow_in_the_browser(served: tuple[Ops, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    ops, url = served
    with ops.rt.db.session() as s:
        create_user(s, "otto", "operator", PASSWORD, by="test")
    wid = ops.fail("stripe:evt_browser_1:followup", "in_browser")
    ops.platform.status = 200

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(f"{url}/console")
            page.fill("input[name=username]", "otto")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/console")
            page.click("header nav >> text=Workflows")
            page.wait_for_url(f"{url}/console/workflows")
            expect(page.locator("#failed")).to_contain_text(wid)
            page.locator("#failed a", has_text=wid).click()
            expect(page.locator("h1")).to_contain_text(wid)
            expect(page.locator("#steps")).to_contain_text("ops_test_charge")
            expect(page.locator("#workflow-error")).to_contain_text("platform stand-in answered 500")
            page.click("button:has-text('Resume from step 2')")
            expect(page.locator("p.ok")).to_contain_text("was sent back to the workers")
            wait_status(wid, "SUCCESS")
            page.reload()
            expect(page.locator("#failed")).to_contain_text("No workflow in ERROR.")
        finally:
            browser.close()
    assert CALLS == {"prepare": 1, "charge": 4}
