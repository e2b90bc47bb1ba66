"""Routes, scores and retry plans: the seeds' thresholds and the card-network rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billops.domain import CardInfo, Customer, Invoice, InvoiceStatus, PaymentAttempt, PaymentMethod
from billops.domain.declines import load_taxonomy
from billops.policy import default_policy
from billops.recovery.decision import decide
from billops.recovery.features import RecoveryContext
from billops.recovery.planner import load_network_rules, plan_retries
from billops.recovery.scoring import RulesScorer

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
TAX = load_taxonomy()
RULES = load_network_rules()


def attempt(i: int, outcome: str, days_ago: float, fp: str = "fp1", brand: str = "visa") -> PaymentAttempt:
    return PaymentAttempt(
        platform="stripe",
        id=f"ch_{i}",
        invoice_id=f"in_{i}",
        customer_id="cus_1",
        amount=4900,
        currency="usd",
        attempted_at=NOW - timedelta(days=days_ago),
        outcome=outcome,
        card=CardInfo(brand=brand, fingerprint=fp, exp_month=12, exp_year=2030),
    )


def context(
    code: str = "insufficient_funds",
    *,
    brand: str = "visa",
    mac: str | None = None,
    ndc: str | None = None,
    successes: int = 0,
    amount: int = 4900,
    attempt_count: int = 1,
    methods: list[PaymentMethod] | None = None,
    card_attempts: list[PaymentAttempt] | None = None,
    tenure_days: int = 400,
) -> RecoveryContext:
    decline = TAX.classify(code, network_advice_code=mac, network_decline_code=ndc, network=brand)
    failed = PaymentAttempt(
        platform="stripe",
        id="ch_fail",
        invoice_id="in_x",
        customer_id="cus_1",
        amount=amount,
        currency="usd",
        attempted_at=NOW,
        outcome="failed",
        decline=decline,
        payment_method_id="pm_failing",
        card=CardInfo(
            brand=brand, funding="credit", fingerprint="fp1", exp_month=12, exp_year=2030, last4="4242"
        ),
    )
    inv = Invoice(
        platform="stripe",
        id="in_x",
        customer_id="cus_1",
        number="INV-1",
        status=InvoiceStatus.open,
        currency="usd",
        amount_due=amount,
        amount_remaining=amount,
        attempt_count=attempt_count,
    )
    cust = Customer(
        platform="stripe", id="cus_1", name="Ada Lovelace", created_at=NOW - timedelta(days=tenure_days)
    )
    return RecoveryContext(
        platform="stripe",
        invoice=inv,
        failed_at=NOW,
        decline=decline,
        attempt=failed,
        customer=cust,
        history=[attempt(i, "succeeded", 30 * (i + 1)) for i in range(successes)],
        card_attempts=card_attempts or [],
        payment_methods=methods or [],
    )


def run(ctx: RecoveryContext):  # type: ignore[no-untyped-def]
    return decide(ctx, policy=default_policy(), scorer=RulesScorer(), rules=RULES, now=NOW)


def test_loyal_customer_soft_decline_auto_retries_in_about_a_day() -> None:
    d = run(context("insufficient_funds", successes=8))
    assert d.score > 85 and d.route == "auto_retry"
    assert d.retries[0] == NOW + timedelta(hours=24)
    assert [m.kind for m in d.messages] == ["reassuring_email"]
    assert "$" not in d.messages[0].body and "49.00 USD" in d.messages[0].body
    assert d.versions["scorer"] == "rules-v1" and d.reasons[1].startswith(
        "decline insufficient_funds is soft"
    )


def test_middle_band_notifies_and_links_card_update() -> None:
    d = run(context("generic_decline", successes=2))
    assert 50 <= d.score <= 85 and d.route == "retry_and_notify"
    kinds = {a.type for a in d.actions}
    assert {"card_update_link", "send_email", "send_sms", "retry_payment"} <= kinds
    assert {m.kind for m in d.messages} == {"urgent_email", "sms"}


def test_other_stored_method_is_tried_first() -> None:
    other = PaymentMethod(
        platform="stripe",
        id="pm_backup",
        customer_id="cus_1",
        card=CardInfo(brand="mastercard", fingerprint="fp2", exp_month=1, exp_year=2031),
    )
    d = run(context("generic_decline", successes=2, methods=[other]))
    assert d.route == "retry_and_notify" and d.retry_payment_method == "pm_backup"
    first = next(a for a in d.actions if a.type == "retry_payment")
    assert first.detail["payment_method"] == "pm_backup"


def test_low_score_goes_to_a_human_with_a_case_summary() -> None:
    d = run(context("do_not_honor", successes=0, tenure_days=20, attempt_count=3))
    assert d.score < 50 and d.route == "human_review"
    summary = next(m for m in d.messages if m.kind == "case_summary")
    assert "Risk factors" in summary.body and "Suggested next steps" in summary.body
    assert "Ada" not in summary.body  # the internal summary refers to the customer by id


@pytest.mark.parametrize(
    "code", ["lost_card", "stolen_card", "fraudulent", "pickup_card", "revocation_of_authorization"]
)
def test_hard_declines_are_never_retried(code: str) -> None:
    d = run(context(code, successes=20))
    assert d.route == "no_retry" and d.retries == [] and d.retry_blocked
    assert not any(a.type == "retry_payment" for a in d.actions)
    assert any(a.type == "disable_platform_retries" for a in d.actions)  # the platform must not retry either


@pytest.mark.parametrize("mac", ["03", "21"])
def test_mastercard_stop_codes_are_never_retried(mac: str) -> None:
    d = run(context("insufficient_funds", brand="mastercard", mac=mac, successes=20))
    assert d.route == "no_retry" and d.retries == []


def test_visa_category_1_is_never_retried() -> None:
    d = run(context("do_not_honor", brand="visa", ndc="R1", successes=20))
    assert d.route == "no_retry" and d.retries == []


def test_expired_card_gets_a_card_update_request_and_keeps_its_scheduled_retries() -> None:
    # Not a "never" rule: account updaters refresh cards in place, so the schedule still retries.
    d = run(context("expired_card", successes=10))
    assert d.route == "retry_and_notify" and d.retries and d.retry_blocked is None
    assert any(a.type == "card_update_link" for a in d.actions)


def test_repeated_failure_on_high_value_escalates() -> None:
    d = run(context("insufficient_funds", successes=10, amount=250_000, attempt_count=2))
    assert d.route == "human_review" and "high-value" in d.reasons[0]


# ---------------------------------------------------------------- planner


def plan(
    code: str = "insufficient_funds",
    *,
    brand: str = "visa",
    mac: str | None = None,
    route: str = "auto_retry",
    card_attempts: list[PaymentAttempt] | None = None,
    now: datetime = NOW,
):  # type: ignore[no-untyped-def]
    decline = TAX.classify(code, network_advice_code=mac, network=brand)
    return plan_retries(
        route=route,
        decline=decline,
        card_brand=brand,
        failed_at=NOW,
        now=now,
        card_attempts=card_attempts or [],
        policy=default_policy().recovery,
        rules=RULES,
    )


@pytest.mark.parametrize(
    ("mac", "hours"), [("24", 1), ("25", 24), ("26", 48), ("27", 96), ("28", 144), ("29", 192), ("30", 240)]
)
def test_mastercard_wait_codes_are_honoured(mac: str, hours: int) -> None:
    p = plan(brand="mastercard", mac=mac, route="retry_and_notify")
    assert p.times and p.times[0] >= NOW + timedelta(hours=hours)


def test_visa_reattempt_cap_counts_the_cards_history() -> None:
    history = [attempt(i, "failed", days_ago=i + 1) for i in range(15)]  # 14 reattempts already used
    p = plan(card_attempts=history)
    assert len(p.times) <= 1
    assert any("reattempts" in n for n in p.notes)


def test_mastercard_24h_cap() -> None:
    # Ten attempts on this card in the 24 h before the planned +24 h retry.
    burst = [attempt(i, "failed", days_ago=-(14 + i) / 24, brand="mastercard") for i in range(10)]
    p = plan(brand="mastercard", card_attempts=burst)
    assert all(t != NOW + timedelta(hours=24) for t in p.times)
    assert any("24 h" in n for n in p.notes)


def test_retries_are_future_ascending_spaced_and_inside_the_window() -> None:
    late_now = NOW + timedelta(days=5)
    p = plan(now=late_now)
    assert p.times == sorted(p.times)
    assert all(t >= late_now for t in p.times)
    assert all(t <= NOW + timedelta(days=default_policy().recovery.window_days) for t in p.times)
    gaps = [(b - a).total_seconds() / 3600 for a, b in zip(p.times, p.times[1:], strict=False)]
    assert all(g >= RULES.min_spacing_hours for g in gaps)


def test_scores_are_explained() -> None:
    s = RulesScorer().score(
        __import__("billops.recovery.features", fromlist=["x"]).build_features(
            context("insufficient_funds", successes=8), high_value_minor=50_000
        )
    )
    assert s.value == min(100, 78 + 10 + 4)
    assert any("8 successful payments" in r for r in s.reasons)


def test_the_plan_fits_what_the_platform_can_do() -> None:
    """A platform without card-update links or a per-invoice dunning stop (Zuora, Recurly) gets no
    such actions, and the decision says why; retries stay planned."""
    from dataclasses import asdict, replace

    from billops.platforms.base import Capabilities

    full = [k for k, on in asdict(Capabilities(**dict.fromkeys(asdict(Capabilities()), True))).items() if on]
    hard = replace(context("stolen_card"), capabilities=full)
    assert {a.type for a in run(hard).actions} >= {"card_update_link", "disable_platform_retries"}

    limited = [c for c in full if c not in ("card_update_link", "disable_native_retries")]
    hard = replace(context("stolen_card"), capabilities=limited)
    plan = run(hard)
    assert not {a.type for a in plan.actions} & {"card_update_link", "disable_platform_retries"}
    assert any("offers no card-update link" in n for n in plan.context_notes)
    assert any("cannot stop its own dunning" in n for n in plan.context_notes)

    soft = replace(context("insufficient_funds"), capabilities=[c for c in limited if c != "retry_invoice"])
    plan = run(soft)
    assert [a for a in plan.actions if a.type == "retry_payment"]  # advice a human can still act on
    assert any("cannot retry a payment through BillOps" in n for n in plan.context_notes)

    unknown = context("insufficient_funds")  # no client at all: actions kept, skipped at execution
    assert unknown.capabilities is None
    assert not any("stripe" in n and "cannot" in n for n in run(unknown).context_notes)
