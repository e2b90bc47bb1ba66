"""Modes per workflow and segment: matching, the stable percentage rollout, the shorthand, validation
errors that name the field, and `billops policy check`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from billops.cli import app as cli
from billops.config import DEFAULT_POLICY_FILE
from billops.errors import ConfigError
from billops.governance.rollout import Subject, resolve_mode, rollout_bucket
from billops.policy import Policy, parse_policy


def policy(modes: Any, **extra: Any) -> Policy:
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    raw["modes"] = modes
    raw.update(extra)
    return parse_policy(yaml.safe_dump(raw), "test")


def sub(**kw: Any) -> Subject:
    base: dict[str, Any] = dict(
        workflow="recovery", platform="stripe", customer_id="cus_1", currency="usd", amount_minor=5000
    )
    return Subject(**{**base, **kw})


SEGMENTS = {
    "recovery": {
        "default": "shadow",
        "segments": [
            {"name": "enterprise", "when": {"tiers": ["Enterprise"]}, "mode": "assist"},
            {
                "name": "smb-usd",
                "when": {
                    "platforms": ["stripe", "chargebee"],
                    "currencies": ["USD"],
                    "plans": ["starter", "pro"],
                    "amount_minor": {"max": 20000},
                },
                "mode": "auto",
            },
        ],
    }
}


def test_first_matching_segment_wins_and_says_why() -> None:
    p = policy(SEGMENTS)
    c = resolve_mode(p, sub(tier="enterprise", plans=("pro",)))
    assert (c.mode, c.segment) == ("assist", "enterprise")
    assert c.reasons == ["segment enterprise: tier enterprise → assist"]

    c = resolve_mode(p, sub(plans=("Pro",)))
    assert (c.mode, c.segment) == ("auto", "smb-usd")
    assert c.reasons[0] == "segment enterprise skipped: tier unknown not in ['enterprise']"
    assert c.reasons[1].startswith("segment smb-usd: platform stripe, currency usd, plan Pro, amount 5000")


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"platform": "recurly", "plans": ("pro",)}, "platform recurly not in"),
        ({"currency": "eur", "plans": ("pro",)}, "currency eur not in"),
        ({"plans": ("enterprise-plus",)}, "plan enterprise-plus not in"),
        ({"plans": ("pro",), "amount_minor": 20001}, "amount 20001 outside […, 20000]"),
    ],
)
def test_each_condition_can_exclude(kw: dict[str, Any], why: str) -> None:
    c = resolve_mode(policy(SEGMENTS), sub(**kw))
    assert (c.mode, c.segment) == ("shadow", None)
    assert why in c.reasons[1]
    assert c.reasons[-1] == "no segment matched: the recovery default shadow"


def test_the_shorthand_still_means_one_mode_for_everyone() -> None:
    c = resolve_mode(policy({"recovery": "auto"}), sub())
    assert (c.mode, c.segment) == ("auto", None)


def test_forced_shadow_overrides_the_segment_and_keeps_the_reason() -> None:
    c = resolve_mode(policy(SEGMENTS), sub(plans=("pro",)), forced_shadow="kill switch on since …")
    assert c.mode == "shadow" and c.segment == "smb-usd"
    assert c.reasons[-1] == "shadow instead of auto: kill switch on since …"


def test_rollout_bucket_is_stable_across_processes_and_releases() -> None:
    # sha256, not hash(): these numbers are fixed forever for this (segment, customer).
    assert rollout_bucket("cus_1", "canary") == pytest.approx(rollout_bucket("cus_1", "canary"))
    assert round(rollout_bucket("cus_1", "canary"), 6) == round(rollout_bucket("cus_1", "canary"), 6)
    assert rollout_bucket("cus_1", "canary") != rollout_bucket("cus_1", "other-segment")
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from billops.governance.rollout import rollout_bucket as b; print(b('cus_1','canary'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(out.stdout) == rollout_bucket("cus_1", "canary")


@functools.cache
def _canary(percent: float) -> Policy:
    return policy(
        {
            "recovery": {
                "default": "shadow",
                "segments": [{"name": "canary", "when": {"rollout_percent": percent}, "mode": "auto"}],
            }
        }
    )


def test_rollout_percent_selects_about_that_share_and_only_grows() -> None:
    ids = [f"cus_{i}" for i in range(4000)]
    p10, p50 = _canary(10), _canary(50)
    at10 = {c for c in ids if resolve_mode(p10, sub(customer_id=c)).mode == "auto"}
    at50 = {c for c in ids if resolve_mode(p50, sub(customer_id=c)).mode == "auto"}
    assert 0.08 < len(at10) / len(ids) < 0.12
    assert 0.46 < len(at50) / len(ids) < 0.54
    assert at10 <= at50, "raising the percentage never drops a customer already in"
    assert resolve_mode(_canary(0), sub()).mode == "shadow"
    assert resolve_mode(_canary(100), sub()).mode == "auto"
    no_id = resolve_mode(_canary(100), sub(customer_id=None))
    assert no_id.mode == "shadow" and "needs a customer id" in no_id.reasons[0]


@given(st.text(min_size=1, max_size=40), st.floats(min_value=0, max_value=100))
def test_bucket_in_range_and_membership_matches_it(customer: str, percent: float) -> None:
    b = rollout_bucket(customer, "canary")
    assert 0 <= b < 100
    assert (resolve_mode(_canary(percent), sub(customer_id=customer)).mode == "auto") == (b < percent)


@pytest.mark.parametrize(
    ("modes", "message"),
    [
        ({"recovery": "sometimes"}, "modes.recovery"),
        ({"recovery": {"segments": [{"name": "a", "when": {"plans": []}, "mode": "auto"}]}}, "empty list"),
        ({"recovery": {"segments": [{"name": "bad name!", "mode": "auto"}]}}, "segments.0.name"),
        (
            {"recovery": {"segments": [{"name": "a", "mode": "auto"}, {"name": "a", "mode": "assist"}]}},
            "segment names must be unique: a",
        ),
        (
            {
                "recovery": {
                    "segments": [
                        {"name": "a", "when": {"amount_minor": {"min": 5, "max": 1}}, "mode": "auto"}
                    ]
                }
            },
            "min must not exceed max",
        ),
        (
            {"recovery": {"segments": [{"name": "a", "when": {"rollout_percent": 101}, "mode": "auto"}]}},
            "100",
        ),
        ({"churn": "auto"}, "modes.churn"),
    ],
)
def test_a_bad_policy_names_the_field(modes: Any, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        policy(modes)
    assert message in e.value.message


def test_bad_guardrails_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"quiet_hours\.start"):
        policy({"recovery": "auto"}, guardrails={"quiet_hours": {"start": "25:00"}})
    with pytest.raises(ConfigError, match="unknown time zone"):
        policy({"recovery": "auto"}, guardrails={"quiet_hours": {"default_timezone": "Mars/Olympus"}})
    with pytest.raises(ConfigError, match="not a currency code"):
        policy({"recovery": "auto"}, guardrails={"amount_caps": {"per_action": {"dollars": 5}}})


def test_policy_check_prints_mode_and_guardrails_for_a_sample_customer(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    raw["modes"] = SEGMENTS
    f = tmp_path / "policy.yaml"
    f.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(
        cli,
        [
            "policy",
            "check",
            str(f),
            "--plan",
            "pro",
            "--amount",
            "600000",
            "--customer",
            "cus_9",
            "--timezone",
            "Asia/Tokyo",
        ],
    )
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())  # Rich wraps long lines (a long tmp path) at the terminal width
    assert "is valid" in out and "(segment smb-usd)" not in out
    assert "amount 600000 outside" in out  # the band excludes it: default shadow, and why
    assert "amount_cap_per_action" in out and "Asia/Tokyo" in out

    f.write_text("version: 1\nmodes: {recovery: maybe}\n")
    r = CliRunner().invoke(cli, ["policy", "check", str(f)])
    assert r.exit_code != 0
    assert "modes.recovery" in str(r.exception)
