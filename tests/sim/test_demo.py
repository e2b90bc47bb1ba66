"""`billops demo` end to end against the real server (slow), and its pieces that need no server."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from billops.errors import BillopsError
from billops.sim.demo import MARKER, ROUTES, prepare_data_dir, server_env, summarize


def test_fresh_run_deletes_only_the_demo_database(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    prepare_data_dir(d, keep=False)
    for name in ("billops.db", "billops.db-wal", "billops.db-shm", "notes.txt", "server.log"):
        (d / name).write_text("x")
    assert prepare_data_dir(d, keep=True) == []
    assert (d / "billops.db").exists()
    removed = prepare_data_dir(d, keep=False)
    assert sorted(p.name for p in removed) == ["billops.db", "billops.db-shm", "billops.db-wal"]
    assert sorted(p.name for p in d.iterdir()) == sorted([MARKER, "notes.txt", "server.log"])


def test_refuses_to_wipe_a_directory_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "billops.db").write_text("production data")
    with pytest.raises(BillopsError, match="not a demo directory"):
        prepare_data_dir(tmp_path, keep=False)
    assert (tmp_path / "billops.db").read_text() == "production data"


def test_server_environment_drops_inherited_billops_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BILLOPS_DATABASE_URL", "postgresql://prod/billing")
    monkeypatch.setenv("BILLOPS_STRIPE_API_KEY", "rk_live_x")
    monkeypatch.setenv("BILLOPS_POLICY_FILE", "/etc/billops/auto.yaml")
    env = server_env(tmp_path, "whsec_demo")
    assert env["BILLOPS_DATABASE_URL"] == f"sqlite:///{tmp_path / 'billops.db'}"
    assert "BILLOPS_STRIPE_API_KEY" not in env and "BILLOPS_POLICY_FILE" not in env
    assert env["BILLOPS_STRIPE_WEBHOOK_SECRETS"] == '{"default": ["whsec_demo"]}'


def test_summary_counts_routes_amounts_and_projected_recovery() -> None:
    decisions = [
        {
            "route": "auto_retry",
            "amount": 7900,
            "currency": "usd",
            "score": 90,
            "plan": {"retries": ["a", "b"]},
        },
        {"route": "human_review", "amount": 24900, "currency": "eur", "score": 30, "plan": {"retries": []}},
        {"route": "auto_retry", "amount": 1900, "currency": "usd", "score": 88, "plan": {"retries": ["a"]}},
    ]
    s = summarize(decisions)
    assert s["decisions"] == 3 and s["retries_planned"] == 3
    assert s["routes"]["auto_retry"] == {"count": 2, "amount": {"usd": 9800}, "retries": 3}
    assert s["routes"]["no_retry"]["count"] == 0
    assert s["at_risk"] == {"eur": 24900, "usd": 9800}
    assert s["projected_recovery"] == {"eur": 7470, "usd": 7110 + 1672}


@pytest.mark.slow
def test_demo_against_the_real_server(tmp_path: Path) -> None:
    from billops.sim.demo import run_demo

    out = io.StringIO()
    console = Console(file=out, width=120)
    data_dir = tmp_path / "demo"
    # 90 days so that a few dozen renewals (and, at ~10%, several failures) are certain.
    s = run_demo(customers=25, days=90, seed=7, data_dir=data_dir, console=console, train_customers=2000)
    text = out.getvalue()
    # The model trained on the simulated year decided every recovery (no rules-v1 fallback).
    assert s["model"]["version"].startswith("recovery-lgbm-") and s["model"]["examples"] >= 200
    assert s["deciders"] == {s["model"]["version"]: s["decisions"]}
    assert "recovery model recovery-lgbm-" in text and "Decided by" in text
    assert s["errors"] == 0, s["webhooks"]["error_samples"]
    assert s["accepted"] == s["events"] > 0 and s["duplicates"] == 0
    assert s["business"]["failed_renewals"] > 0
    assert s["decisions"] > 0 and s["settled"]
    assert set(ROUTES) <= set(s["routes"])
    assert sum(r["count"] for r in s["routes"].values()) == s["decisions"]
    assert s["at_risk"] and all(isinstance(v, int) and v > 0 for v in s["at_risk"].values())
    assert s["workflows"].get("error", 0) == 0
    assert "Decisions by route" in text and "Look further" in text and "audit verify" in text
    assert s["elapsed_seconds"] < 120

    # --keep: the same events again are recognized as duplicates, nothing is decided twice
    again = run_demo(
        customers=25, days=90, seed=7, data_dir=data_dir, keep=True, console=console, train_customers=2000
    )
    assert again["errors"] == 0
    assert again["duplicates"] >= 0.9 * again["events"]
    assert again["decisions"] >= s["decisions"]


@pytest.mark.slow
def test_demo_command_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "billops", "demo", "--customers", "8", "--days", "30",
           "--data-dir", str(tmp_path / "d")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Look further" in out.stdout and "Done in" in out.stdout


def test_summary_counts_each_invoice_once() -> None:
    """A database from before migration 0008 may hold several decisions for one invoice."""
    d = {"platform": "stripe", "invoice_id": "in_1", "route": "auto_retry", "amount": 21900}
    d["currency"] = "gbp"
    s = summarize([d, {**d, "workflow_id": "b"}, {**d, "workflow_id": "c"}])
    assert s["decisions"] == 1 and s["at_risk"] == {"gbp": 21900}
