"""Run localstripe (a local fake of the Stripe API) as a separate process, and seed it through the
official SDK.

localstripe is GPL: it only ever runs in its own test process (started with `sys.executable -c …`),
and nothing in billops or in the test process imports it.

Quirks found in localstripe 1.15.10 (read its resources.py before relying on more):

- Payload shapes are from ~2017-2019 whatever `Stripe-Version` the SDK sends: invoices carry
  `payment_intent` (an id) and `charge` (the *whole* charge object, not an id), charges always have
  `invoice: null` (the PaymentIntent carries `invoice`), events say `api_version: 2017-08-15`.
- No idempotency: the `Idempotency-Key` header is ignored (use tests.support.recording_proxy to see it).
- No billing portal (`/v1/billing_portal/*` answers a plain-text 404), no `/v1/prices` (use Plans),
  no `/v1/invoice_payments`, no `/v1/invoices/{id}/finalize`.
- `POST /v1/invoices/{id}` only accepts attributes the fake invoice already has: `auto_advance` is
  refused with 400 "Bad request"; `metadata` is merged key by key (like Stripe).
- `POST /v1/invoices/{id}/pay` accepts no parameters (`payment_method`, `expand` → HTTP 500 TypeError)
  and, unlike Stripe, a declined card does NOT answer 402: the invoice stays `open`, its new
  PaymentIntent's latest charge is `failed` (`failure_code: card_declined`, no `outcome`), and no
  `invoice.payment_failed` event is sent. Paying a paid invoice answers 400 "Invoice is already paid".
- A declined charge through `POST /v1/charges` or a confirmed PaymentIntent does answer 402
  `{code: card_declined, charge: ch_…}` (no `decline_code`).
- Card 4000000000000341 attaches fine and is declined on every charge; 4242424242424242 pays.
  PaymentMethods must be created with the raw card (`number`, `exp_month`, `exp_year`, `cvc` and
  nothing else); `exp_year` between 2019 and 2099.
- `payment_methods.list` requires `customer` and `type=card` and does not list legacy `card_…` sources.
- `POST /v1/invoices` only works for a customer with a (not canceled) subscription: it builds the
  *next period's* invoice from the subscription plus pending invoice items ("No upcoming invoices for
  customer" otherwise). There are no standalone invoices: seed a subscription first.
- `subscriptions.list` hides canceled and incomplete_expired subscriptions unless `status=all`.
  A subscription whose first invoice is declined stays `incomplete` with the invoice `open`.
- Lists: `limit` defaults to 10 and `starting_after` works; customers/charges come oldest first,
  invoices newest first (real Stripe: newest first everywhere).
- Every write pickles the whole store to the shared file /tmp/localstripe.pickle (and fails if another
  user owns it); the launcher below turns that off in the child process, so instances stay isolated.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import stripe

API_KEY = "sk_test_localstripe"  # localstripe accepts any key that starts with sk_
CARD_DECLINED_ON_CHARGE = "4000000000000341"  # attaches, then fails on every charge
CARD_OK = "4242424242424242"

_SERVER_CODE = """
import sys
import aiohttp.web
import localstripe.resources as resources
# Keep this instance's store in memory only (see the module docstring).
resources.Store.dump_to_disk = lambda self: None
from localstripe.server import app
aiohttp.web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    req = urllib.request.Request(f"{url}/v1/balance", headers={"Authorization": f"Bearer {API_KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=1) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


@contextlib.contextmanager
def run_localstripe(*, startup_timeout: float = 30.0, attempts: int = 3) -> Iterator[str]:
    """Start localstripe on a free loopback port, yield its base URL, terminate it afterwards."""
    last_log = ""
    for _ in range(attempts):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryFile(mode="w+") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER_CODE, str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=tempfile.gettempdir(),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                deadline = time.monotonic() + startup_timeout
                while time.monotonic() < deadline and proc.poll() is None and not _answers(url):
                    time.sleep(0.1)
                if proc.poll() is None and _answers(url):
                    yield url
                    return
                log.seek(0)
                last_log = log.read()[-2000:]
                if proc.poll() is None:
                    raise RuntimeError(
                        f"localstripe did not answer on {url} within {startup_timeout}s:\n{last_log}"
                    )
                # exited early (e.g. the port was taken meanwhile): try another port
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=5)
    raise RuntimeError(f"localstripe failed to start after {attempts} attempts:\n{last_log}")


def flush(base_url: str) -> None:
    """Delete everything localstripe stores (DELETE /_config/data)."""
    req = urllib.request.Request(f"{base_url}/_config/data", method="DELETE")
    with urllib.request.urlopen(req, timeout=5):
        pass


# ---------------------------------------------------------------- seeding through the official SDK


def sdk_client(base_url: str, api_key: str = API_KEY) -> stripe.StripeClient:
    """A plain SDK client pointed at localstripe (or at a recording proxy in front of it)."""
    return stripe.StripeClient(api_key, base_addresses={"api": base_url}, max_network_retries=0)


@dataclass
class SeededCustomer:
    customer_id: str
    payment_method_id: str


def create_customer_with_card(
    sdk: stripe.StripeClient,
    *,
    card: str = CARD_DECLINED_ON_CHARGE,
    email: str = "ada@example.com",
    name: str = "Ada Lovelace",
) -> SeededCustomer:
    """A customer whose default payment method (invoice_settings) is a card PaymentMethod."""
    pm = add_card(sdk, None, card=card)
    cus = sdk.v1.customers.create(
        {
            "email": email,
            "name": name,
            "payment_method": pm,
            "invoice_settings": {"default_payment_method": pm},
        }
    )
    return SeededCustomer(customer_id=cus.id, payment_method_id=pm)


def add_card(
    sdk: stripe.StripeClient, customer_id: str | None, *, card: str = CARD_OK, make_default: bool = False
) -> str:
    """Create a card PaymentMethod (raw number: localstripe only), attach it, optionally make it default."""
    pm = sdk.v1.payment_methods.create(
        {"type": "card", "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}  # type: ignore[typeddict-item]
    )
    if customer_id is not None:
        sdk.v1.payment_methods.attach(pm.id, {"customer": customer_id})
        if make_default:
            sdk.v1.customers.update(customer_id, {"invoice_settings": {"default_payment_method": pm.id}})
    return pm.id


def create_plan(
    sdk: stripe.StripeClient, *, amount: int = 2900, currency: str = "usd", interval: str = "month"
) -> str:
    """A Plan (localstripe has no Prices) with an inline product."""
    plan = sdk.v1.plans.create(
        {"amount": amount, "currency": currency, "interval": interval, "product": {"name": "Pro"}}  # type: ignore[typeddict-item]
    )
    return plan.id


def create_open_invoice(
    sdk: stripe.StripeClient,
    customer_id: str,
    *,
    amount: int = 4900,
    currency: str = "usd",
    attempt: bool = True,
) -> str:
    """One more invoice (invoice item + invoice) for a customer who already has a subscription
    (localstripe needs one, see above). With `attempt`, the platform's own first payment attempt is
    made (POST /pay); with a declining card the invoice stays open with a failed charge."""
    sdk.v1.invoice_items.create(
        {"customer": customer_id, "amount": amount, "currency": currency, "description": "Usage"}
    )
    inv = sdk.v1.invoices.create({"customer": customer_id})
    if attempt:
        sdk.v1.invoices.pay(inv.id)
    return inv.id


def create_subscription(sdk: stripe.StripeClient, customer_id: str, plan_id: str) -> tuple[str, str]:
    """A subscription on a Plan; returns (subscription id, its first invoice id).
    With a declining card the subscription stays `incomplete` and the invoice `open`."""
    sub = sdk.v1.subscriptions.create({"customer": customer_id, "items": [{"plan": plan_id}]})  # type: ignore[typeddict-item]
    return sub.id, str(sub.latest_invoice)


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
