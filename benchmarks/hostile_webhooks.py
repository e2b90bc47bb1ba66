"""Hostile webhook requests against a real `billops serve`, on SQLite and on PostgreSQL.

    python benchmarks/hostile_webhooks.py --requests 10000 [--backend sqlite|postgresql|both]
                                          [--connections 4]

For each backend: starts `python -m billops serve` (uvicorn on a loopback port) in a fresh temporary
data directory (SQLite) or a fresh PostgreSQL database on 127.0.0.1:5432, configured for every webhook
route of the four platforms (tests/support/fuzz.py: Stripe, Chargebee, Recurly, and Zuora with HTTP
Basic, HMAC over the raw body and HMAC over body fields), with the local fake Recurly API of the tests
for Recurly's event reads. Then sends N requests, spread evenly over the routes and over the classes
of tests/support/fuzz.py (deep nesting, UTF-16, BOM, invalid UTF-8, lone surrogates, NUL, ids and types
out of bounds, NaN, huge numbers, oversized, not JSON, forged, stale, unauthenticated; valid events of
known and unknown types; replays), over C persistent HTTP/1.1 connections. Afterwards it reads the
database and prints, per class, the requests and the answers, then: responses >= 500 (must be 0),
answers other than expected (must be 0), stored forgeries or malformed events (must be 0), valid events
sent and stored exactly once (must be equal), workflows started for unknown types (must be 0), dropped
connections (must be 0), elapsed time; and one JSON line. Exit status 1 when a must-be figure is off.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the hostile request builders and the fake Recurly API

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def server_env(data_dir: Path, database_url: str, settings: dict[str, Any]) -> dict[str, str]:
    from billops.sim.demo import server_env as demo_env
    from support.helpers import SECRET

    env = demo_env(data_dir, SECRET)
    env["BILLOPS_DATABASE_URL"] = database_url
    env["BILLOPS_EXECUTOR_ID"] = f"hostile-{uuid.uuid4().hex[:6]}"
    for key, value in settings.items():
        env[f"BILLOPS_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def plan(n: int) -> list[tuple[str, str]]:
    """N (route, class) pairs: every route gets every class (and replays) in turn."""
    from support import fuzz

    names = list(fuzz.TARGETS)
    classes = [*fuzz.CLASSES, "replay"]
    return [(names[i % len(names)], classes[(i // len(names)) % len(classes)]) for i in range(n)]


class Run:
    def __init__(self, host: str, port: int) -> None:
        from support import fuzz

        self.host, self.port = host, port
        self.ledger = fuzz.Ledger()
        self.lock = threading.Lock()
        self.per_class: dict[str, Counter[int]] = {}
        self.wrong: list[str] = []
        self.server_errors = 0
        self.dropped = 0

    def worker(self, jobs: list[tuple[int, str, str]]) -> None:
        from support import fuzz

        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        conn.connect()
        sock = conn.sock
        sent: list[fuzz.Request] = []
        for i, name, cls in jobs:
            if cls == "replay":
                if not sent:
                    cls = "valid"
                else:
                    req = fuzz.resend(sent[i % len(sent)])
            if cls != "replay":
                req = fuzz.build(fuzz.TARGETS[name], cls, f"{cls}-{name}-b{i}", n=i * 7919)
            headers = {"content-type": "application/json", **req.headers}
            try:
                conn.request("POST", req.target.url, body=req.body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:  # the connection was lost
                with self.lock:
                    self.dropped += 1
                    self.wrong.append(f"{name} {cls}: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                conn.connect()
                sock = conn.sock
                continue
            try:
                answer = json.loads(raw) if raw else None
            except ValueError:
                answer = None
            why = fuzz.answer_ok(req, status, answer)
            with self.lock:
                self.per_class.setdefault(cls, Counter())[status] += 1
                if status >= 500:
                    self.server_errors += 1
                if why is not None:
                    self.wrong.append(f"{name} {cls}: {why}")
                self.ledger.record(req)
                if resp.will_close or conn.sock is not sock:
                    self.dropped += 1
            if resp.will_close or conn.sock is not sock:
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                conn.connect()
                sock = conn.sock
            if cls in fuzz.VALID:
                sent.append(req)
        conn.close()


def run_backend(backend: str, n: int, connections: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from billops.sim.demo import Server, free_port
    from support import fuzz
    from support.recurly_api import FakeRecurlyAPI

    db_name = f"billops_hostile_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp, FakeRecurlyAPI() as recurly:
        recurly.seed_fixtures()
        data_dir = Path(tmp)
        if backend == "sqlite":
            url = f"sqlite:///{data_dir / 'billops.db'}"
        else:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{db_name}"')
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
        server = Server(
            data_dir,
            free_port(),
            server_env(data_dir, url, fuzz.target_settings(recurly.api_key, recurly.url)),
        )
        try:
            server.wait_healthy(90)
            run = Run("127.0.0.1", server.port)
            jobs = [(i, name, cls) for i, (name, cls) in enumerate(plan(n))]
            shares = [jobs[k::connections] for k in range(connections)]
            threads = [threading.Thread(target=run.worker, args=(share,)) for share in shares]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(1800)
            elapsed = time.perf_counter() - started
            engine = sa.create_engine(url)
            try:
                with engine.connect() as conn:
                    figures = fuzz.check_inbox(conn, run.ledger)
            finally:
                engine.dispose()
        finally:
            server.stop()
            if backend != "sqlite":
                import psycopg

                with psycopg.connect(PG_ADMIN, autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    return {
        "backend": backend,
        "requests": sum(sum(c.values()) for c in run.per_class.values()) + run.dropped,
        "per_class": {cls: dict(sorted(c.items())) for cls, c in sorted(run.per_class.items())},
        "responses_5xx": run.server_errors,
        "unexpected_answers": len(run.wrong),
        "unexpected_examples": run.wrong[:5],
        "dropped_connections": run.dropped,
        "stored_forgeries_or_malformed": figures["stored_forgeries_or_malformed"],
        "valid_events_sent": figures["valid_sent"],
        "valid_events_stored_once": figures["valid_stored_once"],
        "workflows_for_unknown_types": figures["workflows_for_unknown_types"],
        "database_problems": len(figures["problems"]),
        "database_problem_examples": figures["problems"][:5],
        "elapsed_s": round(elapsed, 1),
        "requests_per_s": round(n / elapsed, 1),
    }


def report(r: dict[str, Any]) -> bool:
    print(f"\n== {r['backend']}: {r['requests']} hostile and valid webhook requests")
    print(f"{'class':<18} {'requests':>8}  answers")
    for cls, statuses in r["per_class"].items():
        answers = ", ".join(f"{s}×{k}" for s, k in statuses.items())
        print(f"{cls:<18} {sum(statuses.values()):>8}  {answers}")
    ok = (
        r["responses_5xx"] == 0
        and r["unexpected_answers"] == 0
        and r["dropped_connections"] == 0
        and r["stored_forgeries_or_malformed"] == 0
        and r["valid_events_sent"] == r["valid_events_stored_once"]
        and r["workflows_for_unknown_types"] == 0
        and r["database_problems"] == 0
    )
    print(f"responses >= 500            {r['responses_5xx']:>8}   (must be 0)")
    print(
        f"answers other than expected {r['unexpected_answers']:>8}   (must be 0) {r['unexpected_examples']}"
    )
    print(f"dropped connections         {r['dropped_connections']:>8}   (must be 0)")
    print(f"stored forgeries/malformed  {r['stored_forgeries_or_malformed']:>8}   (must be 0)")
    print(f"valid events sent           {r['valid_events_sent']:>8}")
    print(f"valid events stored once    {r['valid_events_stored_once']:>8}   (must equal the line above)")
    print(f"workflows for unknown types {r['workflows_for_unknown_types']:>8}   (must be 0)")
    examples = r["database_problem_examples"]
    print(f"other database differences  {r['database_problems']:>8}   (must be 0) {examples}")
    print(f"elapsed                     {r['elapsed_s']:>8} s  ({r['requests_per_s']} requests/s)")
    print("OK" if ok else "FAILED")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--connections", type=int, default=4)
    args = ap.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = [run_backend(b, args.requests, args.connections) for b in backends]
    ok = all([report(r) for r in results])
    print(json.dumps({"benchmark": "hostile_webhooks", "results": [
        {k: v for k, v in r.items() if not k.endswith("_examples")} for r in results
    ]}))  # fmt: skip
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
