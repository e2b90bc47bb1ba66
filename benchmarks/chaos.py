"""Chaos benchmark: signed Stripe webhooks through several `billops serve` workers on one PostgreSQL
database while workers are SIGKILLed and restarted, in `auto` mode, against a deterministic Stripe
stand-in; then checks that nothing was lost, nothing ran twice and every recovery ended as it would
have without the kills.

    python benchmarks/chaos.py                                   # 10,000 events, 10 kills, 3 workers
    python benchmarks/chaos.py --events 400 --kills 2 --rate 15  # a small run while developing
    python benchmarks/chaos.py --baseline                        # also a run without kills, compared

See benchmarks/README.md ("chaos.py") for what is measured and how to read it. Every wait is bounded;
the workers, the stand-in and the database it created are removed at the end, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from chaos_figures import collect, report  # noqa: E402
from chaos_procs import Db, Worker, billops_cmd, free_port, http_get  # noqa: E402
from chaos_world import build_world, write_policy  # noqa: E402

from billops.sim.stream import encode, sign  # noqa: E402

IDLE_S = 3.0  # a kept-alive connection idle longer than this is not reused
FINISHED = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


# ----------------------------------------------------------------------------- sending


@dataclass
class SendStats:
    sent: int = 0
    accepted: int = 0
    duplicate_answers: int = 0
    rejected: int = 0
    given_up: int = 0
    retried: int = 0
    accepted_ids: set[str] = field(default_factory=set)
    samples: list[str] = field(default_factory=list)
    resend_reasons: Counter[str] = field(default_factory=Counter)  # why a request was sent again
    lock: threading.Lock = field(default_factory=threading.Lock)


def send_all(
    events: list[dict[str, Any]],
    workers: list[Worker],
    secret: str,
    stats: SendStats,
    threads: int,
    stop: threading.Event,
) -> None:
    """Each event at its scheduled time to a worker (round robin); on a connection error or a 5xx, the
    next live worker (bounded: 30 tries or 90 s per event)."""
    bodies = [encode({k: v for k, v in e.items() if k != "_send_at"}) for e in events]
    cursor = iter(range(len(events)))
    cursor_lock = threading.Lock()

    def one(conns: dict[int, http.client.HTTPConnection], used: dict[int, float], i: int) -> None:
        body, ev_id = bodies[i], events[i]["id"]
        give_up = time.monotonic() + 90
        note, tries = "no live worker", 0
        for attempt in range(30):
            w = workers[(i + attempt) % len(workers)]
            if not w.healthy and any(x.healthy for x in workers):
                continue  # like a load balancer's health check; a worker killed mid-request still fails
            conn = conns.get(w.index)
            if conn is not None and time.monotonic() - used.get(w.index, 0.0) > IDLE_S:
                conn.close()  # the server may be closing it (uvicorn's keep-alive timeout is 5 s)
                conn = None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=20)
            conns[w.index] = conn
            used[w.index] = time.monotonic()
            tries += 1
            try:
                conn.request(
                    "POST",
                    "/webhooks/stripe/default",
                    body=body,
                    headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)},
                )
                r = conn.getresponse()
                answer = r.read()
                used[w.index] = time.monotonic()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conns.pop(w.index, None)
                note = f"{type(exc).__name__} from {w.executor_id}"
                reason = f"{type(exc).__name__} ({'live' if w.healthy else 'down'} worker)"
            else:
                if 200 <= r.status < 300:
                    dup = json.loads(answer).get("status") == "duplicate"
                    with stats.lock:
                        stats.accepted += 1
                        stats.duplicate_answers += dup
                        stats.retried += tries > 1
                        stats.accepted_ids.add(ev_id)
                    return
                note = f"HTTP {r.status} from {w.executor_id}: {answer[:160]!r}"
                reason = f"HTTP {r.status} ({'live' if w.healthy else 'down'} worker)"
                if r.status < 500:
                    with stats.lock:
                        stats.rejected += 1
                        if len(stats.samples) < 5:
                            stats.samples.append(note)
                    return
            with stats.lock:
                stats.resend_reasons[reason] += 1
            if time.monotonic() > give_up or stop.is_set():
                break
            time.sleep(0.2 if attempt < 5 else 1.0)
        with stats.lock:
            stats.given_up += 1
            if len(stats.samples) < 5:
                stats.samples.append(f"{ev_id}: gave up ({note})")

    def loop() -> None:
        conns: dict[int, http.client.HTTPConnection] = {}
        used: dict[int, float] = {}
        while not stop.is_set():
            with cursor_lock:
                i = next(cursor, None)
            if i is None:
                break
            delay = events[i]["_send_at"] - time.time()
            if delay > 0:
                time.sleep(delay)
            with stats.lock:
                stats.sent += 1
            one(conns, used, i)
        for c in conns.values():
            c.close()

    pool = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        while t.is_alive():
            t.join(0.5)


# ----------------------------------------------------------------------------- kills and resume times


@dataclass
class Kill:
    executor: str
    at: float
    pending: dict[str, tuple[str, int, int]]  # workflow id -> (status, recovery attempts, steps) at the kill
    restart_at: float = 0.0
    ready_s: float | None = None
    picked_up_s: float | None = None  # every pending workflow recovered (attempts++ / status / a step)
    progressed_s: float | None = None  # every pending workflow finished or recorded a new step
    each_progressed_s: list[float] = field(default_factory=list)  # per workflow, restart -> progress
    left: int = 0


def snapshot(db: Db, executor: str) -> dict[str, tuple[str, int, int]]:
    rows = db.rows(
        "SELECT w.workflow_uuid, w.status, COALESCE(w.recovery_attempts, 0),"
        " (SELECT count(*) FROM dbos.operation_outputs o WHERE o.workflow_uuid = w.workflow_uuid)"
        " FROM dbos.workflow_status w WHERE w.executor_id = %s AND w.status = 'PENDING'",
        (executor,),
    )
    return {r[0]: (r[1], int(r[2]), int(r[3])) for r in rows}


def track_resume(db: Db, k: Kill, timeout: float, stop: threading.Event) -> None:
    ids = list(k.pending)
    picked: set[str] = set()
    progressed: set[str] = set()
    deadline = time.monotonic() + timeout
    while ids and time.monotonic() < deadline and not stop.is_set():
        rows = db.rows(
            "SELECT w.workflow_uuid, w.status, COALESCE(w.recovery_attempts, 0),"
            " (SELECT count(*) FROM dbos.operation_outputs o WHERE o.workflow_uuid = w.workflow_uuid)"
            " FROM dbos.workflow_status w WHERE w.workflow_uuid = ANY(%s)",
            (ids,),
        )
        now = time.monotonic() - k.restart_at
        for wf, status, attempts, steps in rows:
            st0, at0, steps0 = k.pending[wf]
            moved = status in FINISHED or int(steps) > steps0
            if wf not in picked and (moved or int(attempts) > at0 or status != st0):
                picked.add(wf)
            if wf not in progressed and moved:
                progressed.add(wf)
                k.each_progressed_s.append(now)
        if len(picked) == len(ids) and k.picked_up_s is None:
            k.picked_up_s = now
        if len(progressed) == len(ids):
            k.progressed_s = now
            break
        time.sleep(0.5)
    k.left = len(ids) - len(progressed)


def run_kills(
    args: argparse.Namespace,
    workers: list[Worker],
    db: Db,
    progress: Any,
    kills: list[Kill],
    stop: threading.Event,
    trackers: list[threading.Thread],
) -> None:
    """Kill moments are random points of the run's progress, so they follow the sending even when it
    falls behind its schedule: from 5 % of the events sent to the last retries' due time after the last
    send (a share `tail` of the span is that time after the sending)."""
    rng = random.Random(args.seed * 7919 + 1)
    tail_s = max(args.retry_seconds) + 5
    tail = 0.1
    points = sorted(0.05 + (1.0 + tail - 0.05) * (i + rng.random()) / args.kills for i in range(args.kills))
    for point in points:
        while not stop.is_set():
            sent, done_at = progress()
            if point <= 1.0 and sent >= point:
                break
            if done_at is not None and (
                point <= 1.0 or time.time() >= done_at + (point - 1.0) / tail * tail_s
            ):
                break
            time.sleep(0.1)
        # Only a healthy worker is killed, and never the last healthy one (bounded wait for a restart).
        deadline = time.monotonic() + 120
        while not stop.is_set() and sum(w.healthy for w in workers) < min(2, len(workers)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if stop.is_set():
            return
        victim = rng.choice([w for w in workers if w.healthy] or workers)
        pending = snapshot(db, victim.executor_id)
        victim.kill()
        k = Kill(victim.executor_id, time.time(), pending)
        kills.append(k)
        time.sleep(rng.uniform(0.5, 3.0))
        victim.start()
        k.restart_at = victim.started_at
        t = threading.Thread(target=_restarted, args=(victim, db, k, stop), daemon=True)
        t.start()
        trackers.append(t)


def _restarted(w: Worker, db: Db, k: Kill, stop: threading.Event) -> None:
    """Follow the killed worker's workflows from the restart on (DBOS recovers them while the process
    starts, before it answers ready), and time the restart."""
    tracker = threading.Thread(target=track_resume, args=(db, k, 300, stop), daemon=True)
    tracker.start()
    try:
        k.ready_s = w.wait_ready(180)
    except RuntimeError as exc:
        print(f"  ! {exc}", file=sys.stderr)
    tracker.join(310)


# ----------------------------------------------------------------------------- one run


def wait_drained(db: Db, timeout: float, stop: threading.Event) -> tuple[float | None, dict[str, int]]:
    started = time.monotonic()
    counts: dict[str, int] = {}
    while time.monotonic() - started < timeout and not stop.is_set():
        counts = dict(db.rows("SELECT status, count(*) FROM dbos.workflow_status GROUP BY status"))
        if counts.get("PENDING", 0) + counts.get("ENQUEUED", 0) == 0:
            return time.monotonic() - started, counts
        time.sleep(1.0)
    return None, counts


def run(args: argparse.Namespace, kills_wanted: int, label: str, tmp: Path) -> dict[str, Any]:
    """One full run: fresh database and stand-in, workers, events (with kills), drain, figures."""
    t_begin = time.monotonic()
    run_dir = tmp / label
    run_dir.mkdir()
    stop = threading.Event()
    policy = write_policy(run_dir, args)
    secret = "whsec_" + secrets.token_hex(24)
    db_name = f"billops_chaos_{os.getpid()}_{label}"
    base = args.database_url.rstrip("/")
    admin_url, db_url = f"{base}/postgres", f"{base}/{db_name}"
    standin: subprocess.Popen[bytes] | None = None
    workers: list[Worker] = []
    db: Db | None = None
    created_db = False
    try:
        standin_port = free_port()
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{db_name}"')
        created_db = True
        env = {k: v for k, v in os.environ.items() if not k.startswith("BILLOPS_")}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "BILLOPS_DATABASE_URL": db_url,
                "BILLOPS_POLICY_FILE": str(policy),
                "BILLOPS_STRIPE_API_KEY": "sk_test_chaos_bench",
                "BILLOPS_STRIPE_API_BASE": f"http://127.0.0.1:{standin_port}",
                "BILLOPS_STRIPE_WEBHOOK_SECRETS": json.dumps({"default": [secret]}),
                "BILLOPS_LOG_LEVEL": "WARNING",
                "BILLOPS_SESSION_SECRET": secrets.token_hex(32),
                "BILLOPS_WORKER_CONCURRENCY": str(args.worker_concurrency),
                # Every worker signs the audit chain with the same key (docs/audit.md), and so does the check.
                "BILLOPS_AUDIT_KEYS": json.dumps({"chaos": secrets.token_hex(32)}),
                "BILLOPS_AUDIT_KEY_ID": "chaos",
            }
        )
        subprocess.run(
            [*billops_cmd(), "db", "upgrade"],
            env={**env, "BILLOPS_DATA_DIR": str(run_dir)},
            check=True,
            capture_output=True,
            timeout=120,
        )
        for i in range(args.workers):
            wenv = {
                **env,
                "BILLOPS_EXECUTOR_ID": f"chaos-w{i + 1}",
                "BILLOPS_DATA_DIR": str(run_dir / f"w{i + 1}"),
            }
            workers.append(Worker(i, free_port(), wenv, run_dir / f"worker-{i + 1}.log"))
        for w in workers:  # one after the other: the first one creates DBOS's tables
            w.start()
            w.wait_ready(120)
        db = Db(db_url)
        # The world's times start now: the failures are dated when they are sent, so retries come due
        # during the run.
        spec, events, failed_ids = build_world(args, time.time())
        (run_dir / "world.json").write_text(json.dumps(spec))
        port_file = run_dir / "standin.port"
        standin = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "standins" / "stripe_deterministic.py"),
                "--world",
                str(run_dir / "world.json"),
                "--port",
                str(standin_port),
                "--port-file",
                str(port_file),
                "--max-seconds",
                "3600",
            ],
            stdin=subprocess.DEVNULL,
            stderr=(run_dir / "standin.log").open("wb"),
            start_new_session=True,
        )
        for _ in range(100):
            if port_file.exists() or standin.poll() is not None:
                break
            time.sleep(0.1)
        if not port_file.exists():
            raise RuntimeError(f"the Stripe stand-in did not start; see {run_dir / 'standin.log'}")
        print(
            f"[{label}] {len(events)} events ({len(failed_ids)} failed invoices) at {args.rate}/s to "
            f"{len(workers)} workers, {kills_wanted} kills; logs in {run_dir}",
            flush=True,
        )

        stats = SendStats()
        kills: list[Kill] = []
        trackers: list[threading.Thread] = []
        killer = None
        t_send0 = events[0]["_send_at"]
        sender_done: list[float | None] = [None]
        if kills_wanted:
            a = argparse.Namespace(**{**vars(args), "kills": kills_wanted})
            killer = threading.Thread(
                target=run_kills,
                daemon=True,
                args=(
                    a,
                    workers,
                    db,
                    lambda: (stats.sent / len(events), sender_done[0]),
                    kills,
                    stop,
                    trackers,
                ),
            )
            killer.start()
        sender = threading.Thread(
            target=send_all, args=(events, workers, secret, stats, args.threads, stop), daemon=True
        )
        sender.start()
        conns = {"ours_max": 0, "server_max": 0}
        while sender.is_alive():
            sender.join(5)
            ours, total = db.rows(
                "SELECT count(*) FILTER (WHERE datname = current_database()), count(*) FROM pg_stat_activity"
            )[0]
            conns["ours_max"] = max(conns["ours_max"], ours)
            conns["server_max"] = max(conns["server_max"], total)
            print(
                f"  [{label}] sent {stats.sent}/{len(events)}, accepted {stats.accepted}, "
                f"kills {len(kills)}, PostgreSQL connections {ours} (all databases {total})",
                flush=True,
            )
        send_s = time.time() - t_send0
        sender_done[0] = time.time()
        while killer is not None and killer.is_alive():
            killer.join(1)
        for w in workers:
            if not w.healthy:
                w.wait_ready(180)
        drained, wf_counts = wait_drained(db, args.drain_timeout, stop)
        drain_s = None if drained is None else time.time() - (sender_done[0] or time.time())
        for t in trackers:
            t.join(max(0.0, 60))
        _, body = http_get(standin_port, "/_standin/stats", timeout=10)
        audit = subprocess.run(
            [*billops_cmd(), "audit", "verify"],
            env={**env, "BILLOPS_DATA_DIR": str(run_dir)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        said = (audit.stdout + audit.stderr).strip().splitlines()
        return collect(
            args,
            label,
            db,
            events,
            failed_ids,
            stats,
            kills,
            json.loads(body),
            (audit.returncode == 0, said[-1] if said else ""),
            send_s,
            drain_s,
            wf_counts,
            conns,
            time.monotonic() - t_begin,
        )
    finally:
        stop.set()
        for w in workers:
            w.stop()
        if standin is not None and standin.poll() is None:
            standin.terminate()
            standin.wait(10)
        if db is not None:
            db.close()
        if created_db and not args.keep:
            with psycopg.connect(admin_url, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000, help="distinct signed events (default 10000)")
    p.add_argument("--kills", type=int, default=10, help="SIGKILLs of a random worker (default 10)")
    p.add_argument("--workers", type=int, default=3, help="billops serve processes (default 3)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate", type=float, default=20.0, help="events per second sent (default 20)")
    p.add_argument(
        "--failure-share", type=float, default=0.2, help="share of invoices that fail (default 0.2)"
    )
    p.add_argument(
        "--success-percent", type=int, default=50, help="chance that one pay succeeds (default 50)"
    )
    p.add_argument(
        "--retry-seconds",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[20.0, 45.0],
        help="retries due this many seconds after each failure (default 20,45)",
    )
    p.add_argument("--worker-concurrency", type=int, default=8, help="BILLOPS_WORKER_CONCURRENCY (default 8)")
    p.add_argument("--threads", type=int, default=12, help="sending threads (default 12)")
    p.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the workflows")
    p.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432",
        help="server to create the benchmark's database on (trust auth)",
    )
    p.add_argument("--baseline", action="store_true", help="first a run without kills, compared per invoice")
    p.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = p.parse_args()
    if args.events < 5 or args.workers < 1 or args.kills < 0 or args.rate <= 0:
        p.error("--events ≥ 5, --workers ≥ 1, --kills ≥ 0, --rate > 0")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="billops-chaos-"))
    started = time.monotonic()
    try:
        runs = []
        if args.baseline:
            runs.append(run(args, 0, "baseline", tmp))
        runs.append(run(args, args.kills, "chaos", tmp))
        bad = []
        for r in runs:
            bad += [f"{r['run']}: {b}" for b in report(r)]
        compare: dict[str, Any] = {}
        if args.baseline:
            a, b = runs[0]["_outcomes"], runs[1]["_outcomes"]
            diff = sorted(inv for inv in a if a[inv] != b.get(inv))
            compare = {
                "invoices": len(a),
                "differ": len(diff),
                "samples": [f"{inv}: {a[inv]} without kills, {b.get(inv)} with" for inv in diff[:8]],
            }
            n, of = compare["differ"], compare["invoices"]
            print(f"\nwithout kills vs with kills: {n} of {of} recoveries differ")
            for s in compare["samples"]:
                print(f"              {s}")
            if diff:
                bad.append(f"runs differ: {len(diff)}")
        total = time.monotonic() - started
        print(
            f"\nelapsed {total:.0f} s; " + ("all checks zero" if not bad else "NOT zero: " + "; ".join(bad))
        )
        line = {
            "benchmark": "chaos",
            "events": args.events,
            "kills": args.kills,
            "workers": args.workers,
            "seed": args.seed,
            "runs": [{k: v for k, v in r.items() if k != "_outcomes"} for r in runs],
            "compare": compare,
            "elapsed_s": round(total, 1),
            "failed_checks": bad,
        }
        print(json.dumps(line, default=str))
        sys.exit(1 if bad else 0)
    except KeyboardInterrupt:
        print("interrupted: workers, stand-in and database cleaned up", file=sys.stderr)
        sys.exit(130)
    finally:
        if args.keep:
            print(f"kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
