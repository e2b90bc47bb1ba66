"""The chaos benchmark's figures (benchmarks/chaos.py): read back from the database, the Stripe
stand-in's counters and the sender's tally, compared with the stand-in's deterministic rules, and
printed. `collect` returns one run's figures; `report` prints them and names every must-be-zero figure
that is not zero."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "standins"))
from stripe_deterministic import expected_outcome


def collect(
    args: argparse.Namespace,
    label: str,
    db: Any,
    events: list[dict[str, Any]],
    failed_ids: list[str],
    stats: Any,
    kills: list[Any],
    standin: dict[str, Any],
    audit: tuple[bool, str],
    send_s: float,
    drain_s: float | None,
    wf_counts: dict[str, int],
    conns: dict[str, int],
    elapsed: float,
) -> dict[str, Any]:
    ids = [e["id"] for e in events]
    stored = {r[0] for r in db.rows("SELECT event_id FROM inbox_events WHERE platform = 'stripe'")}
    errors = db.rows(
        "SELECT name, left(COALESCE(error, status), 300), count(*) FROM dbos.workflow_status"
        " WHERE status NOT IN ('SUCCESS', 'PENDING', 'ENQUEUED') GROUP BY 1, 2 ORDER BY 3 DESC"
    )
    doubled_ga = db.rows(
        "SELECT workflow_id, step, count(*) FROM governed_actions GROUP BY 1, 2 HAVING count(*) > 1"
    )
    ga_total = db.rows("SELECT count(*) FROM governed_actions")[0][0]
    decisions = {
        r[0]: {"wf": r[1], "status": r[2], "outcome": r[3], "retries": len((r[4] or {}).get("retries") or [])}
        for r in db.rows("SELECT invoice_id, workflow_id, status, outcome, plan FROM decisions")
    }
    st = standin
    charges, paid = st["charges_per_invoice"], st["paid_charges_per_invoice"]

    outcomes: dict[str, tuple[str, int]] = {}
    differs: list[str] = []
    plan_differs = 0
    same_money = 0  # differing outcomes whose charges are still the expected ones (only the label differs)
    for inv in failed_ids:
        d = decisions.get(inv)
        actual = (d["status"] if d else "no decision", int(charges.get(inv, 0)))
        outcomes[inv] = actual
        planned = d["retries"] if d else len(args.retry_seconds)
        plan_differs += planned != len(args.retry_seconds)
        want = expected_outcome(args.seed, inv, planned, args.success_percent)
        if actual != want:
            out = (d["outcome"] if d else None) or {}
            steps = {
                k: v.get("status") for k, v in out.items() if k.startswith("pay:") and isinstance(v, dict)
            }
            wf = d["wf"] if d else "-"
            same_money += actual[1] == want[1]
            differs.append(
                f"{inv}: expected {want[0]} after {want[1]} pay(s), got {actual[0]} after {actual[1]} "
                f"({wf}: pays recorded {json.dumps(steps)}, final {json.dumps(out.get('final'))})"
            )
    finals: dict[str, int] = {}
    for inv in failed_ids:
        finals[outcomes[inv][0]] = finals.get(outcomes[inv][0], 0) + 1

    def spread(values: list[float | None]) -> dict[str, Any]:
        got = sorted(v for v in values if v is not None)
        missing = sum(v is None for v in values)
        if not got:
            return {"n": 0, "missing": missing}
        return {
            "n": len(got),
            "min": round(got[0], 1),
            "median": round(statistics.median(got), 1),
            "max": round(got[-1], 1),
            "missing": missing,
        }

    return {
        "run": label,
        "workers": args.workers,
        "events": {
            "distinct": len(ids),
            "sent": stats.sent,
            "accepted": len(stats.accepted_ids),
            "answered_duplicate": stats.duplicate_answers,
            "resent_after_error": stats.retried,
            "rejected_4xx": stats.rejected,
            "given_up": stats.given_up,
            "stored": len(stored & set(ids)),
            "lost": len(set(ids) - stored),
            "accepted_not_stored": len(stats.accepted_ids - stored),
            "samples": stats.samples,
            "resend_reasons": dict(stats.resend_reasons),
        },
        "workflows": {
            "by_status": wf_counts,
            "drained_after_s": None if drain_s is None else round(drain_s, 1),
            "in_error": sum(r[2] for r in errors),
            "errors": [{"name": r[0], "error": r[1], "count": r[2]} for r in errors[:10]],
        },
        "recoveries": {
            "failed_invoices": len(failed_ids),
            "decisions": sum(i in decisions for i in failed_ids),
            "finals": finals,
            "plan_differs": plan_differs,
            "differs_from_uninterrupted": len(differs),
            "differs_but_same_charges": same_money,
            "samples": differs[:8],
        },
        "pays": {
            "charges": sum(charges.values()),
            "invoices_paid": len(paid),
            "invoices_paid_twice": sum(1 for v in paid.values() if v > 1),
            "pays_on_paid_invoice": sum(st["pays_refused_already_paid"].values()),
            "replayed": st["replays"],
            "key_conflicts": st["key_conflict_count"],
            "writes_without_key": st["writes_without_key"],
        },
        "governed_actions": {
            "rows": ga_total,
            "doubled": len(doubled_ga),
            "samples": [list(r) for r in doubled_ga[:5]],
        },
        "audit": {"ok": audit[0], "says": audit[1]},
        "kills": {
            "count": len(kills),
            "restart_to_ready_s": spread([k.ready_s for k in kills]),
            "with_pending": sum(1 for k in kills if k.pending),
            "resume_picked_up_s": spread([k.picked_up_s for k in kills if k.pending]),
            "resume_progressed_s": spread([k.progressed_s for k in kills if k.pending]),
            "per_workflow_progressed_s": spread([t for k in kills for t in k.each_progressed_s]),
            "pending_at_kill": [len(k.pending) for k in kills],
            "not_progressed": sum(k.left for k in kills),
        },
        "postgres_connections": conns,
        "seconds": {"sending": round(send_s, 1), "elapsed": round(elapsed, 1)},
        "_outcomes": outcomes,
    }


def args_workers(r: dict[str, Any]) -> int:
    return int(r.get("workers", 0))


def _mmm(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "n/a"
    return f"min {s['min']} / median {s['median']} / max {s['max']} (n={s['n']})"


def report(r: dict[str, Any]) -> list[str]:
    """Print one run's figures; returns the must-be-zero checks that failed."""
    e, wf, rc, p, ga, k = (
        r["events"],
        r["workflows"],
        r["recoveries"],
        r["pays"],
        r["governed_actions"],
        r["kills"],
    )
    print(f"\n== {r['run']} ==")
    print(
        f"events        distinct {e['distinct']}, sent {e['sent']}, accepted {e['accepted']}, "
        f"stored {e['stored']}, lost {e['lost']} (accepted but not stored {e['accepted_not_stored']}; "
        f"rejected {e['rejected_4xx']}, "
        f"gave up {e['given_up']}; resent after an error {e['resent_after_error']}, answered duplicate "
        f"{e['answered_duplicate']}; why sent again: {e['resend_reasons'] or 'never'})"
    )
    print(
        f"workflows     {wf['by_status']}; in ERROR {wf['in_error']}; drained "
        f"{wf['drained_after_s']} s after the last send"
    )
    for err in wf["errors"]:
        print(f"              {err['count']} × {err['name']}: {err['error']}")
    print(
        f"recoveries    {rc['failed_invoices']} failed invoices, {rc['decisions']} decisions, "
        f"finals {rc['finals']}; "
        f"differ from the uninterrupted outcome {rc['differs_from_uninterrupted']} (of which with the "
        f"expected charges, only the final status differing: {rc['differs_but_same_charges']}; "
        f"plans not as the policy "
        f"says {rc['plan_differs']})"
    )
    for s in rc["samples"]:
        print(f"              {s}")
    print(
        f"pays          {p['charges']} charges, {p['invoices_paid']} invoices paid, paid twice "
        f"{p['invoices_paid_twice']}, pay on a paid invoice {p['pays_on_paid_invoice']}, replayed by key "
        f"{p['replayed']}, key conflicts {p['key_conflicts']}, writes without key {p['writes_without_key']}"
    )
    print(
        f"governed      {ga['rows']} rows, doubled (same workflow+step) {ga['doubled']} {ga['samples'] or ''}"
    )
    print(f"audit chain   {'verified' if r['audit']['ok'] else 'FAILED'}: {r['audit']['says']}")
    print(
        f"kills         {k['count']} (workflows pending on the killed worker: {k['pending_at_kill']}); "
        f"seconds from the restart:\n"
        f"              to ready {_mmm(k['restart_to_ready_s'])}\n"
        f"              until all the killed worker's workflows were picked up again "
        f"{_mmm(k['resume_picked_up_s'])}\n"
        f"              until all of them progressed (a new step or finished) "
        f"{_mmm(k['resume_progressed_s'])}"
        f" (not progressed: {k['not_progressed']})\n"
        f"              per workflow, until it progressed {_mmm(k['per_workflow_progressed_s'])}"
    )
    c = r["postgres_connections"]
    print(
        f"connections   PostgreSQL, at most {c['ours_max']} to this database by {args_workers(r)} workers "
        f"(all databases on the server: at most {c['server_max']})"
    )
    print(f"time          sending {r['seconds']['sending']} s, elapsed {r['seconds']['elapsed']} s")
    bad = []
    for name, value in (
        ("events lost", e["lost"] + e["accepted_not_stored"] + e["given_up"]),
        ("workflows in ERROR", wf["in_error"]),
        ("not drained", int(wf["drained_after_s"] is None)),
        ("recoveries differ", rc["differs_from_uninterrupted"]),
        ("invoices paid twice", p["invoices_paid_twice"]),
        ("key conflicts", p["key_conflicts"]),
        ("governed actions doubled", ga["doubled"]),
        ("audit chain broken", int(not r["audit"]["ok"])),
    ):
        if value:
            bad.append(f"{name}: {value}")
    return bad
