"""What governance costs per action and per API request.

    python benchmarks/governance.py [--rows 100000] [--checks 2000] [--database-url postgresql://…]

1. `guardrails.check_action` (kill switch, caps, rate limits, quiet hours) with `--rows` earlier
   governed actions in the table (spread over 30 days and 5,000 customers): the check every action
   pays before it runs, as p50/p95 in milliseconds.
2. An API request with a bearer token through the real app (TestClient, in-process). Token secrets are
   verified with a keyed HMAC-SHA256 (governance/token_secrets.py), no argon2 and no cache: every request
   pays the same hash and reads the token's revocation, expiry and role from the database. The first
   request also pays the app's warm-up.

Prints one JSON line per measurement. Default database: a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--checks", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--database-url")
    args = ap.parse_args()

    from billops.governance import guardrails
    from billops.governance.rollout import Subject
    from billops.policy import load_policy
    from billops.store.db import Database
    from billops.store.models import GovernedAction

    tmp = Path(tempfile.mkdtemp(prefix="billops-gov-bench-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    db = Database(url)
    db.migrate()
    policy = load_policy()
    now = datetime.now(UTC)
    rng = random.Random(7)
    kinds = ["retry_payment", "send_email", "send_sms", "write_note", "disable_platform_retries"]
    t0 = time.perf_counter()
    with db.session() as s:
        batch = []
        for i in range(args.rows):
            batch.append(
                GovernedAction(
                    at=now - timedelta(seconds=rng.uniform(0, 30 * 86400)),
                    workflow_id=f"wf{i // 5}",
                    step=f"{i % 5}",
                    platform="stripe",
                    customer_id=f"cus_{rng.randrange(5000)}",
                    action=rng.choice(kinds),
                    amount=rng.randrange(500, 50000),
                    currency="usd",
                    status="done",
                )
            )
            if len(batch) == 5000:
                s.add_all(batch)
                s.flush()
                batch = []
        s.add_all(batch)
    fill = time.perf_counter() - t0

    times = []
    for i in range(args.checks):
        sub = Subject(
            workflow="recovery",
            platform="stripe",
            customer_id=f"cus_{rng.randrange(5000)}",
            currency="usd",
            amount_minor=12000,
            timezone=rng.choice(["Europe/Paris", "America/New_York", "Asia/Tokyo", None]),
        )
        action = {"type": rng.choice(["retry_payment", "send_email", "send_sms"])}
        t = time.perf_counter()
        with db.reader() as s:
            guardrails.check_action(
                s, policy, wf=f"new{i}", step="0", action=action, sub=sub, human_approved=False, now=now
            )
        times.append((time.perf_counter() - t) * 1000)
    print(
        json.dumps(
            {
                "measure": "check_action",
                "database": db.safe_url.split(":")[0],
                "governed_actions_rows": args.rows,
                "fill_seconds": round(fill, 1),
                "checks": args.checks,
                "p50_ms": round(statistics.median(times), 3),
                "p95_ms": round(pct(times, 0.95), 3),
            }
        )
    )

    # API requests with a bearer token, in-process.
    from fastapi.testclient import TestClient

    from billops.app import create_app
    from billops.config import load_settings
    from billops.governance import users
    from billops.runtime import start_runtime, stop_runtime

    settings = load_settings(data_dir=tmp, database_url=url)
    start_runtime(settings, launch_dbos=False)
    try:
        with db.session() as s:
            users.create_user(s, "bench", "viewer", None, by="benchmark")
            _, token = users.issue_token(s, "bench", "bench", days=1, max_days=1, by="benchmark")
        client = TestClient(create_app(settings, manage_runtime=False))
        headers = {"Authorization": f"Bearer {token}"}
        lat = []
        for _ in range(args.requests):
            t = time.perf_counter()
            r = client.get("/api/me", headers=headers)
            lat.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
        print(
            json.dumps(
                {
                    "measure": "api_request_with_token",
                    "route": "GET /api/me",
                    "requests": args.requests,
                    "first_ms": round(lat[0], 1),
                    "later_p50_ms": round(statistics.median(lat[1:]), 3),
                    "later_p95_ms": round(pct(lat[1:], 0.95), 3),
                }
            )
        )
    finally:
        stop_runtime()
        db.dispose()


if __name__ == "__main__":
    main()
