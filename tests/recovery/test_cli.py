"""The command-line contract users script against: simulate → train → models → plan → evaluate, and
clear errors (file, line, column) with nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from billops.cli import app
from billops.recovery.data import ATTEMPT_COLUMNS, read_attempts

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output + (str(res.exception) if res.exception and res.exit_code != 2 else "")


def test_simulate_train_models_plan_evaluate(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    sim = tmp_path / "sim"
    code, out = run(
        *data,
        "recovery",
        "simulate",
        "--customers",
        "2500",
        "--months",
        "12",
        "--seed",
        "5",
        "--end",
        "2026-11-01",
        "--out",
        str(sim),
    )
    assert code == 0, out
    assert {p.name for p in sim.iterdir()} == {"attempts.csv", "test_attempts.csv", "failures.jsonl"}
    assert list(read_attempts(sim / "attempts.csv").columns) == [*ATTEMPT_COLUMNS, "card_fingerprint"]

    code, out = run(*data, "recovery", "models")
    assert code == 0 and "rules-v1 decides" in out

    model = tmp_path / "model"
    code, out = run(*data, "recovery", "train", "--attempts", str(sim / "attempts.csv"), "--out", str(model))
    assert code == 0, out
    manifest = json.loads((model / "manifest.json").read_text())
    assert f"model {manifest['version']}" in out and "test AUC" in out

    code, out = run(*data, "recovery", "models", "--json")
    [listed] = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and listed["version"] == manifest["version"] and listed["active"], "--out also registers"
    assert listed["metrics"]["test"]["auc"] == manifest["metrics"]["test"]["auc"]

    plans = tmp_path / "plans.jsonl"
    code, out = run(
        *data,
        "recovery",
        "plan",
        "--model",
        str(model),
        "--history",
        str(sim / "attempts.csv"),
        "--failures",
        str(sim / "failures.jsonl"),
        "--out",
        str(plans),
        "--max-retries",
        "3",
    )
    assert code == 0, out
    failures = [json.loads(x) for x in (sim / "failures.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in plans.read_text().splitlines()]
    assert [r["invoice_id"] for r in rows] == [f["invoice_id"] for f in failures]
    for r, f in zip(rows, failures, strict=True):
        assert set(r) >= {"invoice_id", "recovery_score", "route", "retries", "reasons"}
        assert r["route"] in {"auto_retry", "retry_and_notify", "human_review", "no_retry"}
        assert len(r["retries"]) <= 3 and r["retries"] == sorted(r["retries"])
        assert all(f["failed_at"] < t <= f["deadline"] for t in r["retries"])

    # The contract as outside evaluations call it: --model-out, and plan without --history (the model
    # keeps the history it was trained on, so the same plans come out).
    same = tmp_path / "same-model"
    code, out = run(
        *data, "recovery", "train", "--attempts", str(sim / "attempts.csv"), "--model-out", str(same)
    )
    assert code == 0, out
    assert json.loads((same / "manifest.json").read_text())["version"] == manifest["version"]
    bare = tmp_path / "bare.jsonl"
    code, out = run(
        *data, "recovery", "plan", "--model", str(same), "--failures", str(sim / "failures.jsonl"),
        "--out", str(bare), "--max-retries", "3",
    )  # fmt: skip
    assert code == 0, out
    assert [json.loads(x) for x in bare.read_text().splitlines()] == rows

    report = tmp_path / "report"
    code, out = run(
        *data,
        "recovery",
        "evaluate",
        "--model",
        str(model),
        "--customers",
        "2500",
        "--months",
        "12",
        "--seed",
        "5",
        "--end",
        "2026-11-01",
        "--out",
        str(report),
    )
    assert code == 0, out
    assert {"report.md", "report.json", "calibration.png"} <= {p.name for p in report.iterdir()}
    assert (report / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = json.loads((report / "report.json").read_text())
    assert rep["scoring"]["rows"] > 0 and rep["scoring"]["auc"] is not None
    assert set(rep["backtest"]["policies"]) == {
        "billops_learned_max4",
        "billops_learned_max8",
        "polar_2_7_14_21d",
        "killbill_every_8d",
        "eight_in_14d",
    }
    assert "Revenue backtest" in (report / "report.md").read_text()

    # Scoring your own held-out attempts (no simulator): a time split after the training window.
    own = tmp_path / "own-report"
    code, out = run(
        *data, "recovery", "evaluate", "--model", str(model), "--attempts", str(sim / "test_attempts.csv"),
        "--history", str(sim / "attempts.csv"), "--no-backtest", "--out", str(own),
    )  # fmt: skip
    assert code == 0, out
    rep = json.loads((own / "report.json").read_text())
    assert "backtest" not in rep and rep["scoring"]["rows"] > 0 and 0.5 < rep["scoring"]["auc"] <= 1
    assert (own / "calibration.png").exists()


def test_bad_input_names_the_line_and_writes_nothing(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    sim = tmp_path / "sim"
    assert (
        run(
            *data,
            "recovery",
            "simulate",
            "--customers",
            "1500",
            "--seed",
            "3",
            "--end",
            "2026-11-01",
            "--out",
            str(sim),
        )[0]
        == 0
    )
    model = tmp_path / "model"
    assert (
        run(*data, "recovery", "train", "--attempts", str(sim / "attempts.csv"), "--out", str(model))[0] == 0
    )

    lines = (sim / "failures.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join([lines[0], lines[1].replace('"failed_at": "', '"failed_at": "not-a-time'), *lines[2:]])
    )
    out_file = tmp_path / "plans.jsonl"
    code, out = run(
        *data,
        "recovery",
        "plan",
        "--model",
        str(model),
        "--history",
        str(sim / "attempts.csv"),
        "--failures",
        str(bad),
        "--out",
        str(out_file),
    )
    assert code == 2
    assert "bad.jsonl line 2" in out and "failed_at" in out
    assert not out_file.exists()

    code, out = run(
        *data,
        "recovery",
        "plan",
        "--model",
        str(tmp_path),
        "--history",
        str(sim / "attempts.csv"),
        "--failures",
        str(sim / "failures.jsonl"),
        "--out",
        str(out_file),
    )
    assert code == 2 and "not a BillOps recovery model directory" in out and not out_file.exists()

    code, out = run(*data, "recovery", "train", "--attempts", str(sim / "attempts.csv"))
    assert code == 0, "without --out the model goes straight into the registry"
    code, out = run(*data, "recovery", "train")
    assert code == 2 and "--attempts" in out


def test_train_from_the_mirror_after_a_history_import(tmp_path: Path) -> None:
    """The mirror's attempts (imports, webhooks, BillOps' own retries) are training data too."""
    data = ["--data-dir", str(tmp_path / "data")]
    sim = tmp_path / "sim"
    assert (
        run(
            *data,
            "recovery",
            "simulate",
            "--customers",
            "1200",
            "--seed",
            "4",
            "--end",
            "2026-11-01",
            "--out",
            str(sim),
        )[0]
        == 0
    )
    code, out = run(*data, "history", "import", str(sim / "attempts.csv"))
    assert code == 0, out
    code, out = run(*data, "recovery", "train", "--from-mirror")
    assert code == 0, out
    code, out = run(*data, "recovery", "models", "--json")
    [m] = [json.loads(x) for x in out.splitlines()]
    assert m["active"] and m["training"]["attempts"] == len(read_attempts(sim / "attempts.csv"))
