"""The chaos benchmark's world (benchmarks/chaos.py): customers, cards and invoices for the Stripe
stand-in, the signed webhook events that describe them in sending order, and the policy file.

Each customer has one card and one invoice and yields five events: customer.created,
payment_method.attached, invoice.finalized, then (about eight seconds of sending later) either
charge.failed + invoice.payment_failed (a recovery) or charge.succeeded + invoice.paid. Ids, amounts and
which invoices fail come from the seed; times are "now" plus the sending schedule, so that the retries
the policy plans fall within the run.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "standins"))
from stripe_deterministic import World, charge_obj

from billops.config import DEFAULT_POLICY_FILE

API_VERSION = "2020-08-27"  # the invoice.charge / invoice.payment_intent shape


def build_world(
    args: argparse.Namespace, t0: float
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """Customers (one card, one invoice each) and their webhook events, in sending order. A share of the
    invoices fail (charge.failed + invoice.payment_failed: a recovery each), the others are paid.
    Returns the stand-in's world spec, the events and the ids of the failed invoices."""
    rng = random.Random(args.seed)
    n = -(-args.events // 5)  # five events per customer
    failing = set(rng.sample(range(n), max(1, round(n * args.failure_share))))
    order = list(range(n))
    rng.shuffle(order)
    # Sending slots: a customer's three set-up events, then (lag slots later) its payment events.
    keyed: list[tuple[float, int, int, str]] = []
    lag = max(5, int(args.rate * 8))  # ~8 s between a customer's set-up and its payment
    for slot, i in enumerate(order):
        base = slot * 5
        for j, kind in enumerate(("customer.created", "payment_method.attached", "invoice.finalized")):
            keyed.append((base + j * 0.01, i, j, kind))
        pay = (
            ("charge.failed", "invoice.payment_failed")
            if i in failing
            else ("charge.succeeded", "invoice.paid")
        )
        for j, kind in enumerate(pay, start=3):
            keyed.append((base + lag + j * 0.01, i, j, kind))
    keyed.sort()
    send_at = {(i, j): t0 + 10 + idx / args.rate for idx, (_, i, j, _) in enumerate(keyed)}

    customers, pms, invoices = [], [], []
    failed_ids = []
    for i in range(n):
        cid, pmid, inv_id = (
            f"cus_chaos{args.seed}x{i:06d}",
            f"pm_chaos{args.seed}x{i:06d}",
            f"in_chaos{args.seed}x{i:06d}",
        )
        created = int(t0) - 400 * 86400 - i
        customers.append(
            {
                "id": cid,
                "object": "customer",
                "email": f"c{i}@chaos.test",
                "name": f"Customer {i}",
                "created": created,
                "currency": "usd",
                "address": {"country": "US"},
                "livemode": False,
                "invoice_settings": {"default_payment_method": pmid},
                "metadata": {"timezone": "UTC"},
                "phone": None,
                "default_source": None,
            }
        )
        brand = rng.choice(["visa", "mastercard"])
        pms.append(
            {
                "id": pmid,
                "object": "payment_method",
                "type": "card",
                "customer": cid,
                "created": created,
                "card": {
                    "brand": brand,
                    "country": "US",
                    "exp_month": 12,
                    "exp_year": 2031,
                    "funding": "credit",
                    "fingerprint": f"fp{args.seed}x{i:06d}",
                    "last4": f"{i % 10000:04d}",
                },
                "livemode": False,
                "metadata": {},
            }
        )
        at = int(send_at[(i, 3)])
        fails = i in failing
        invoices.append(
            {
                "id": inv_id,
                "customer": cid,
                "payment_method": pmid,
                "payment_intent": f"pi_chaos{args.seed}x{i:06d}",
                "subscription": f"sub_chaos{args.seed}x{i:06d}",
                "number": f"CHAOS-{i:06d}",
                "plan": "Pro",
                "amount_due": rng.randrange(1000, 49000, 100),
                "currency": "usd",
                "created": at - 3600,
                "status": "open" if fails else "paid",
                "attempt_count": 1,
                "auto_advance": True,
                "metadata": {},
                "paid_at": None if fails else at,
                "charges": [
                    {
                        "id": f"ch_chaos{args.seed}x{i:06d}_0",
                        "status": "failed" if fails else "succeeded",
                        "created": at,
                    }
                ],
            }
        )
        if fails:
            failed_ids.append(inv_id)
    spec = {
        "seed": args.seed,
        "success_percent": args.success_percent,
        "customers": customers,
        "payment_methods": pms,
        "invoices": invoices,
    }

    w = World(spec)
    events = []
    for _, i, j, kind in keyed:
        inv = w.invoices[f"in_chaos{args.seed}x{i:06d}"]
        if kind == "customer.created":
            obj: dict[str, Any] = w.customers[inv["customer"]]
        elif kind == "payment_method.attached":
            obj = w.pms[inv["payment_method"]]
        elif kind == "invoice.finalized":
            obj = {
                **(w.invoice(inv["id"]) or {}),
                "status": "open",
                "charge": None,
                "attempt_count": 0,
                "attempted": False,
                "amount_paid": 0,
                "amount_remaining": inv["amount_due"],
                "paid": False,
            }
        elif kind.startswith("charge."):
            obj = charge_obj(w.charges[inv["charge"]], inv, w.pms[inv["payment_method"]])
        else:
            obj = w.invoice(inv["id"]) or {}
        events.append(
            {
                "id": f"evt_chaos{args.seed}x{i:06d}_{j}",
                "object": "event",
                "api_version": API_VERSION,
                "created": int(send_at[(i, j)]),
                "data": {"object": obj},
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "type": kind,
                "_send_at": send_at[(i, j)],
            }
        )
    return spec, events, failed_ids


def write_policy(tmp: Path, args: argparse.Namespace) -> Path:
    """The packaged policy, in auto mode, with retries due seconds after each failure and the guardrails
    opened up so that they never depend on the clock or on how many recoveries run at once."""
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    offsets = [s / 3600 for s in args.retry_seconds]
    raw["version"] = "chaos-bench"
    raw["modes"] = {"recovery": "auto"}
    raw["recovery"].update(
        thresholds={"auto_retry_above": 0, "notify_from": 0},
        retry_schedule_hours={"auto_retry": offsets, "retry_and_notify": offsets, "human_review": []},
        context_wait_seconds=2,
        model="rules",
    )
    g = raw["guardrails"]
    g["quiet_hours"] = None
    g["rate_limits"] = {
        "per_customer": {"max_actions": 100, "per_hours": 24},
        "overall": {"max_actions": 10_000_000, "per_hours": 1},
    }
    g["circuit_breaker"] = {"max_action_failures_per_hour": None, "max_decisions_per_hour": None}
    rules = tmp / "network_rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "version": "chaos-bench",
                "min_spacing_hours": min(offsets) / 2,
                "networks": {
                    "visa": {"max_reattempts": 15, "window_days": 30},
                    "mastercard": {"max_attempts_24h": 10, "max_attempts": 35, "window_days": 30},
                    "default": {"max_reattempts": 15, "window_days": 30},
                },
            }
        )
    )
    raw["network_rules"] = str(rules)
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
