"""Grounding: template drafts always pass; drafts with a changed amount, date, invoice or plan fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from billops.domain import Money
from billops.drafting.facts import long_date, retry_stamp, tone_for
from billops.drafting.grounding import check
from billops.drafting.schema import (
    KINDS,
    CaseSummary,
    DraftFacts,
    DraftLocal,
    EmailDraft,
    InternalNote,
    SmsDraft,
)
from billops.drafting.service import template_output
from support.llm import sample

ROUTES = ["auto_retry", "retry_and_notify", "no_retry", "human_review"]


@st.composite
def facts_strategy(draw: st.DrawFn) -> DraftFacts:
    kind = draw(st.sampled_from(list(KINDS)))
    route = draw(st.sampled_from(ROUTES))
    currency = draw(st.sampled_from(["usd", "eur", "gbp", "jpy", "chf"]))
    minor = draw(st.integers(1, 5_000_000))
    failed = draw(st.datetimes(datetime(2025, 1, 1), datetime(2028, 12, 31))).replace(tzinfo=UTC)
    gaps = draw(st.lists(st.integers(1, 24 * 20), max_size=3))
    retries = [failed + timedelta(hours=sum(gaps[: i + 1])) for i in range(len(gaps))]
    number = draw(
        st.one_of(
            st.integers(1, 99999).map(lambda n: f"INV-{n:04d}"),
            st.integers(1, 10**7).map(str),
            st.from_regex(r"in_1[A-Za-z0-9]{12}", fullmatch=True),
        )
    )
    money = Money(amount=minor, currency=currency)
    return DraftFacts(
        kind=kind,
        channel=KINDS[kind][0],
        tone=tone_for(route),
        route=route,
        company=draw(st.sampled_from([None, "Acme", "Quill & Ink Books"])),
        amount=money.format(),
        amount_minor=minor,
        currency=currency,
        invoice_number=number,
        plan_name=draw(st.sampled_from([None, "Pro", "Team Annual", "Starter Plan", "Business 2024"])),
        failed_date=long_date(failed),
        next_retry_date=long_date(retries[0]) if retries else None,
        decline_hint=draw(st.sampled_from([None, "insufficient funds", "the card has expired"])),
        other_method=draw(st.booleans()),
        score=draw(st.integers(0, 100)),
        scorer="rules-v1",
        reasons=[f"decline code soft with p=0.{draw(st.integers(10, 99))}", "3 payments in the last 90 days"],
        decline_code=draw(st.sampled_from(["insufficient_funds", "expired_card", "do_not_honor"])),
        decline_category=draw(st.sampled_from(["soft", "hard", "needs_new_card", "try_later"])),
        network_advice=draw(st.sampled_from([None, "03", "21"])),
        past_successes=draw(st.integers(0, 40)),
        past_failures=draw(st.integers(0, 10)),
        attempt_number=draw(st.integers(1, 6)),
        card_brand=draw(st.sampled_from([None, "visa", "mastercard"])),
        card_funding=draw(st.sampled_from([None, "credit", "debit"])),
        other_methods=draw(st.integers(0, 3)),
        retries=[retry_stamp(t) for t in retries],
        retry_blocked=None if retries else "Mastercard MAC 03: never retry",
        next_steps=["call the account owner; offer to split the amount or move to invoice/bank transfer"],
    )


LOCAL = DraftLocal(
    first_name="Ada", customer_ref="cus_9", card_desc="visa credit ending 4242, expires 12/2030"
)


@settings(max_examples=300, deadline=None)
@given(facts_strategy())
def test_template_drafts_are_always_grounded(facts: DraftFacts) -> None:
    out = template_output(facts.kind, facts, LOCAL, "recovery-v1")
    assert check(facts.kind, out, facts) == []


def _mutate(out: EmailDraft | InternalNote, old: str, new: str) -> EmailDraft | InternalNote:
    assert old in out.body
    return out.model_copy(update={"body": out.body.replace(old, new)})


@settings(max_examples=200, deadline=None)
@given(facts_strategy(), st.integers(1, 10_000), st.integers(1, 400))
def test_changed_amount_date_or_invoice_fails(facts: DraftFacts, delta: int, days: int) -> None:
    kind = "card_update_email" if KINDS[facts.kind][1] is not InternalNote else "internal_note"
    facts = facts.model_copy(update={"kind": kind, "channel": KINDS[kind][0]})
    out = template_output(kind, facts, LOCAL, "recovery-v1")
    assert isinstance(out, (EmailDraft, InternalNote))

    other_amount = Money(amount=facts.amount_minor + delta, currency=facts.currency).format()
    errors = check(kind, _mutate(out, facts.amount, other_amount), facts)
    assert any("amount" in e for e in errors), errors

    failed = datetime.strptime(facts.failed_date, "%B %d, %Y")
    given_dates = {facts.failed_date, facts.next_retry_date, *(r[:10] for r in facts.retries)}
    other = failed + timedelta(days=days)
    if long_date(other) not in given_dates and f"{other:%Y-%m-%d}" not in given_dates:
        errors = check(kind, _mutate(out, facts.failed_date, long_date(other)), facts)
        assert any("date" in e for e in errors), errors

    number = facts.invoice_number
    wrong = number[:-1] + ("7" if number[-1] != "7" else "3")
    errors = check(kind, _mutate(out, f"invoice {number}", f"invoice {wrong}"), facts)
    assert any("invoice" in e for e in errors), errors


def test_error_messages_name_the_problem() -> None:
    facts, _ = sample()
    bad = EmailDraft(
        subject="Your Enterprise plan",
        body="Hi {first_name}, pay $59.00 or 49,00 € for invoice INV-0043 and #77 by December 1, 2026 at "
        "https://pay.example.com or {promo}.",
        tone="reassuring",
    )
    errors = check("urgent_email", bad, facts)
    assert errors == [
        "contains a web address ('https://pay.example.com'): write {card_update_link} instead, never a URL",
        "contains the placeholder '{promo}': only {first_name} and {card_update_link} are allowed",
        "does not contain {card_update_link} where the customer should update their card",
        "tone is 'reassuring' but the decision asks for 'urgent'",
        "mentions the amount '$59.00', but the amount is 49.00 USD",
        "mentions the amount '49,00 €' in another currency than 49.00 USD",
        "mentions the date 'December 1, 2026', which is not one of the given dates "
        "(November 2, 2026, November 5, 2026, 2026-11-05 12:00 UTC)",
        "mentions invoice 'INV-0043', but the invoice number is INV-0042",
        "mentions invoice '77', but the invoice number is INV-0042",
        "mentions the 'Enterprise' plan, but the plan is 'Pro'",
    ]


def test_equivalent_formats_are_accepted() -> None:
    facts, _ = sample()
    ok = EmailDraft(
        subject="Your Pro plan payment of $49.00",
        body="Hi {first_name}, we could not collect USD 49 (49.00 USD) for invoice #INV-0042 on Nov 2. "
        "We retry on 5 November 2026 (2026-11-05, 11/05/2026). Update: {card_update_link}",
        tone="urgent",
    )
    assert check("urgent_email", ok, facts) == []
    sms = SmsDraft(body="x" * 300 + " {card_update_link}")
    assert check("sms", sms, facts.model_copy(update={"kind": "sms", "channel": "sms"})) == []


def test_case_summary_fields_are_all_checked() -> None:
    facts, _ = sample("case_summary")
    cs = CaseSummary(
        headline="Invoice INV-0042 (49.00 USD)",
        risk_factors=["soft decline"],
        payment_history="paid 4 times",
        next_steps=["retry on November 5, 2026"],
        negotiation_points=["offer a 20.00 USD discount"],
    )
    assert check("case_summary", cs, facts) == [
        "mentions the amount '20.00 USD', but the amount is 49.00 USD"
    ]
