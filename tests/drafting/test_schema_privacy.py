"""Typed outputs, the allow-list and redaction."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from billops.drafting.privacy import prompt_payload, redact
from billops.drafting.schema import KINDS, CaseSummary, DraftFacts, EmailDraft, InternalNote, SmsDraft
from support.llm import sample


def test_typed_outputs_reject_bad_values() -> None:
    EmailDraft(subject="s", body="b", tone="urgent")
    with pytest.raises(ValidationError):
        EmailDraft(subject="s", body="b", tone="cheerful")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        EmailDraft(subject="x" * 121, body="b", tone="firm")
    with pytest.raises(ValidationError):
        SmsDraft(body="x" * 321)
    with pytest.raises(ValidationError):
        InternalNote(body="x" * 1001)
    with pytest.raises(ValidationError):
        CaseSummary(
            headline="h", risk_factors="not a list", payment_history="p", next_steps=[], negotiation_points=[]
        )  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        SmsDraft(body="hi", extra="no")  # type: ignore[call-arg]
    assert {k: c for k, (c, _) in KINDS.items()} == {
        "reassuring_email": "email",
        "urgent_email": "email",
        "card_update_email": "email",
        "sms": "sms",
        "case_summary": "internal",
        "internal_note": "internal",
    }


def test_facts_are_an_allow_list() -> None:
    facts, _ = sample()
    with pytest.raises(ValidationError):
        DraftFacts.model_validate({**facts.model_dump(), "email": "ada@example.com"})
    forbidden = {"name", "first_name", "email", "phone", "address", "last4", "exp_month", "customer_id"}
    assert not forbidden & set(DraftFacts.model_fields)


def test_prompt_payload_redacts_every_string() -> None:
    facts, _ = sample(
        reasons=["customer wrote from ada@example.com, call +44 20 7946 0958"],
        next_steps=["card 4242 4242 4242 4242"],
    )
    payload = prompt_payload(facts)
    text = str(payload)
    assert "ada@example.com" not in text and "7946" not in text and "4242 4242" not in text
    assert payload["reasons"] == ["customer wrote from [redacted email], call [redacted phone]"]
    assert payload["amount"] == "49.00 USD" and payload["retries"] == ["2026-11-05 12:00 UTC"]


def test_redact_keeps_facts_intact() -> None:
    s = "49.00 USD for invoice INV-0042 on November 2, 2026; retry 2026-11-05 12:00 UTC; score 64/100"
    assert redact(s) == s
    assert redact("lives at 221B Baker Street, London") == "lives at [redacted address], London"
    assert redact("pay at https://pay.example.com/x?token=abc now") == "pay at [redacted url] now"
    assert redact("IBAN DE89 3704 0044 0532 0130 00") == "IBAN [redacted iban]"


_local = st.from_regex(r"[a-z][a-z0-9._+-]{0,15}[a-z0-9]", fullmatch=True)
_domain = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]\.(com|org|co\.uk|io|de)", fullmatch=True)


@given(st.emails())
def test_any_email_is_redacted(email: str) -> None:
    out = redact(f"write to {email} today")
    assert email not in out and "[redacted email]" in out


@given(_local, _domain)
def test_plain_emails_are_redacted_whole(local: str, domain: str) -> None:
    assert redact(f"mail {local}@{domain}, thanks") == "mail [redacted email], thanks"


@given(
    st.sampled_from(["+1", "+44", "+49", "+33", "+351"]),
    st.lists(st.integers(10, 9999), min_size=2, max_size=4),
    st.sampled_from([" ", "-", "."]),
)
def test_international_phones_are_redacted(cc: str, groups: list[int], sep: str) -> None:
    phone = cc + " " + sep.join(str(g) for g in groups)
    if sum(len(str(g)) for g in groups) < 6:
        phone += sep + "123"
    out = redact(f"call {phone} now")
    assert not re.search(r"\d", out.replace("[redacted phone]", "")), out


@given(st.integers(200, 999), st.integers(200, 999), st.integers(0, 9999), st.sampled_from(["-", " ", "."]))
def test_national_phones_are_redacted(a: int, b: int, c: int, sep: str) -> None:
    out = redact(f"call ({a}) {b}{sep}{c:04d} or {a}{sep}{b}{sep}{c:04d}.")
    assert out == "call [redacted phone] or [redacted phone].", out


@given(st.text("0123456789", min_size=12, max_size=19), st.sampled_from(["", " ", "-"]), st.integers(3, 5))
def test_card_numbers_are_redacted(digits: str, sep: str, group: int) -> None:
    shown = sep.join(digits[i : i + group] for i in range(0, len(digits), group)) if sep else digits
    out = redact(f"card {shown} declined")
    assert out == "card [redacted card] declined", out
