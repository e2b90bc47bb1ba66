"""Every prompt sent while drafting every kind over the fixture corpus: no personal data in any of them.

The corpus is every webhook fixture (Stripe, Chargebee, Zuora) that names an invoice or a payment
attempt, normalised by the platform's own normalizer, decided by the rules scorer, and given a
customer whose name, email, phone, address and card digits are known, unusual strings."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from billops.config import Settings
from billops.domain import CardInfo, Customer, Invoice, InvoiceStatus, PaymentAttempt
from billops.domain.declines import load_taxonomy
from billops.drafting import llm
from billops.drafting.facts import build_facts
from billops.drafting.schema import KINDS
from billops.drafting.service import llm_draft, template_draft
from billops.platforms.chargebee.normalize import normalize_event as chargebee
from billops.platforms.stripe.normalize import normalize_event as stripe
from billops.platforms.zuora.normalize import normalize_event as zuora
from billops.recovery.decision import decide
from billops.recovery.features import RecoveryContext
from billops.recovery.planner import load_network_rules
from billops.recovery.scoring import RulesScorer
from billops.runtime import Runtime
from support.llm import Scripted, grounded

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NORMALIZERS = {"stripe": stripe, "chargebee": chargebee, "zuora": zuora}
TAX = load_taxonomy()
LAST4 = "8173"
EXP = "11/2031"


def corpus() -> list[tuple[RecoveryContext, list[str], str]]:
    """(context, the PII strings planted or found in it, the first name a draft should greet)."""
    out = []
    files = [p for plat in NORMALIZERS for p in sorted((FIXTURES / plat).rglob("*.json"))]
    for i, path in enumerate(files):
        platform = path.relative_to(FIXTURES).parts[0]
        try:
            ev = NORMALIZERS[platform](json.loads(path.read_text()))
        except Exception:
            continue  # not an event this normalizer reads (API fixtures)
        if ev.invoice is None and ev.attempt is None:
            continue
        given = ev.customer
        first = f"Quillon{i}"
        name = given.name if given and given.name else f"{first} Vantastic"
        email = given.email if given and given.email else f"quillon{i}.vantastic@mailhost{i}.example"
        pii = [name, email, f"+44 7700 9{i:05d}", f"{i + 17} Larkspur Avenue", f"cus_pii_{i}"]
        customer = Customer(
            platform=platform, id=pii[4], name=name, email=email, phone=pii[2],
            created_at=ev.occurred_at - timedelta(days=500), metadata={"address": pii[3]},
        )  # fmt: skip
        att = ev.attempt
        decline = att.decline if att and att.decline else TAX.classify("generic_decline")
        amount = ev.invoice.amount_due if ev.invoice else (att.amount if att else 1000)
        currency = ev.invoice.currency if ev.invoice else (att.currency if att else "usd")
        card = CardInfo(
            brand=(att.card.brand if att and att.card else None) or "visa", funding="credit",
            exp_month=11, exp_year=2031, last4=LAST4, fingerprint="fp",
        )  # fmt: skip
        attempt = PaymentAttempt(
            platform=platform, id=att.id if att else f"att_{i}",
            invoice_id=ev.invoice.id if ev.invoice else f"inv_{i}", customer_id=customer.id,
            amount=amount or 1000, currency=currency, attempted_at=ev.occurred_at, outcome="failed",
            decline=decline, card=card,
            # the platform's decline text is customer-adjacent free text: it must never reach a prompt
        )  # fmt: skip
        invoice = ev.invoice or Invoice(
            platform=platform, id=attempt.invoice_id, customer_id=customer.id, number=None,
            status=InvoiceStatus.open, currency=currency, amount_due=amount or 1000,
        )  # fmt: skip
        ctx = RecoveryContext(
            platform=platform, invoice=invoice.model_copy(update={"amount_due": invoice.amount_due or 1000}),
            failed_at=ev.occurred_at, decline=decline.model_copy(update={"message": f"Contact {email}"}),
            attempt=attempt, customer=customer, notes=[f"customer wrote: call me at {pii[2]}"],
        )  # fmt: skip
        if given and given.phone:
            pii.append(given.phone)
        out.append((ctx, pii, name.split()[0]))
    return out


PATTERNS = [
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),  # an email
    re.compile(r"\+\d[\d ().-]{7,}\d"),  # an international phone number
    re.compile(r"(?<![\w])\d(?:[ -]?\d){11,18}(?![\w])"),  # a card number (not inside an id like in_000…)
]


@pytest.fixture
def rt_big(
    database_url: str,
    settings_factory: Callable[..., Settings],
    runtime_factory: Callable[[Settings], Runtime],
    make_policy: Callable[..., Path],
) -> Runtime:
    policy = make_policy(drafting={"backend": {"recovery": "llm"}, "daily_token_budget": 10_000_000})
    return runtime_factory(settings_factory(database_url, policy_file=policy))


def test_no_pii_in_any_prompt(rt_big: Runtime) -> None:
    rt = rt_big
    policy = rt.policy()
    cases = corpus()
    assert len(cases) >= 15  # the corpus is real: most payment fixtures of three platforms
    fake = Scripted(grounded)
    greeted = 0
    with llm.use_model(fake.model):
        for ctx, pii, first_name in cases:
            now = ctx.failed_at + timedelta(minutes=5)
            plan = decide(ctx, policy=policy, scorer=RulesScorer(), rules=load_network_rules(), now=now)
            for kind in KINDS:
                facts, local = build_facts(
                    ctx, kind=kind, route=plan.route, score=plan.score, scorer=plan.scorer,
                    reasons=plan.reasons, retries=plan.retries, retry_blocked=plan.retry_blocked,
                    other_pm=plan.retry_payment_method is not None, next_steps=["call the account owner"],
                )  # fmt: skip
                fallback = template_draft(kind, facts, local, policy.templates)
                d = llm_draft(
                    kind,
                    facts,
                    local,
                    policy=policy,
                    settings=rt.settings,
                    workflow_id="pii",
                    fallback=fallback,
                )
                assert d.record.backend == "llm", (kind, d.record.fallback)
                if d.channel == "email":
                    assert d.body.startswith(f"Hi {first_name},")  # the name is filled locally...
                    greeted += 1
                if kind == "case_summary":
                    assert local.customer_ref and local.customer_ref in d.body
                    assert f"ending {LAST4}" in d.body
            read = "\n".join(fake.texts[-len(KINDS) :])  # every part's content and the instructions
            sent = "\n".join(fake.requests[-len(KINDS) :])  # the whole requests as JSON (ids included)
            for secret in [*pii, f"ending {LAST4}", LAST4, EXP, first_name]:  # ...and never sent
                assert secret not in read, secret
                if not any(c.isdigit() for c in secret):  # run ids are random hex: digits may occur
                    assert secret not in sent, secret
    assert greeted == 3 * len(cases) and fake.calls == len(KINDS) * len(cases)
    everything = "\n".join(fake.texts)  # (the full JSON also carries run ids: UUIDs look like digits)
    for pattern in PATTERNS:
        assert not pattern.search(everything), pattern.search(everything)
    assert len(rt.policy().drafting.prompts) > 0
