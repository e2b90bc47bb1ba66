"""What an API token check and a console login cost, against a bare endpoint in the same run.

    python benchmarks/auth.py [--requests 200] [--database-url postgresql+psycopg://…]

Through the real app in-process (TestClient, no network), on a fresh database (default: a temporary
SQLite file), one request at a time, for each kind:

- bare: a route that answers {} (the framework's own cost; every ratio is against it)
- token: unknown id / wrong secret on a real id / valid (GET /api/me)
- login: unknown user / wrong password / throttled (a pair in back-off; POST /console/login)

Per kind: wall ms and process CPU ms per request (p50), the ratio of each to the bare endpoint, and the
argon2 checks made per request. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def measure(n: int, prepare: Callable[[int], Any], send: Callable[[Any], int], want: int) -> dict[str, float]:
    from billops.governance import token_secrets

    calls = [0]
    real = token_secrets._verify_argon2

    def counting(stored: str, secret: str) -> bool:
        calls[0] += 1
        return real(stored, secret)

    token_secrets._verify_argon2 = counting
    wall: list[float] = []
    cpu: list[float] = []
    try:
        for i in range(n):
            arg = prepare(i)
            w, c = time.perf_counter(), time.process_time()
            status = send(arg)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
            if status != want:
                raise SystemExit(f"request {i}: status {status}, expected {want}")
    finally:
        token_secrets._verify_argon2 = real
    return {
        "wall_ms": statistics.median(wall) * 1000,
        "cpu_ms": statistics.median(cpu) * 1000,
        "argon2_per_request": calls[0] / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    n = args.requests

    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from billops.app import create_app
    from billops.config import Settings
    from billops.governance import users
    from billops.runtime import start_runtime, stop_runtime
    from billops.store.models import LoginThrottle

    tmp = Path(tempfile.mkdtemp(prefix="billops-auth-bench-"))
    settings = Settings(
        data_dir=tmp,
        database_url=args.database_url or f"sqlite:///{tmp / 'bench.db'}",
        login_account_max_failures=100_000,  # the wrong-password runs must not slow themselves
    )
    rt = start_runtime(settings, launch_dbos=False)
    try:
        password = "a-long-benchmark-password"
        with rt.db.session() as s:
            users.create_user(s, "bench", "viewer", password, by="benchmark")
            _, good = users.issue_token(s, "bench", "bench", days=1, max_days=1, by="benchmark")
        app = create_app(settings, manage_runtime=False)

        @app.get("/bench/bare")
        def bare() -> dict[str, str]:
            return {}

        token_id = good.split("_", 2)[1]
        clients: dict[str, TestClient] = {}

        def client(ip: str) -> TestClient:
            if ip not in clients:
                clients[ip] = TestClient(app, follow_redirects=False, client=(ip, 40000))
            return clients[ip]

        def get(path: str, token: str | None = None) -> Callable[[Any], int]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return lambda _: client("10.9.9.9").get(path, headers=headers).status_code

        def login_form(ip: str, username: str, pw: str) -> tuple[TestClient, dict[str, str]]:
            c = client(ip)
            page = c.get("/console/login")
            m = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert m is not None
            return c, {"username": username, "password": pw, "csrf": m.group(1)}

        def post_login(arg: tuple[TestClient, dict[str, str]]) -> int:
            c, form = arg
            return c.post("/console/login", data=form).status_code

        # One pair in back-off for an hour (as after many failures), from its own address.
        with rt.db.session() as s:
            now = datetime.now(UTC)
            s.add(
                LoginThrottle(
                    scope="pair",
                    account="bench",
                    client="10.7.7.7",
                    failures=50,
                    first_failure_at=now,
                    last_failure_at=now,
                    blocked_until=now + timedelta(hours=1),
                    unaudited=0,
                    audited_at=now,
                )
            )

        none = lambda i: None  # noqa: E731
        rotate = lambda i: f"10.{i // 250}.{i % 250}.1"  # noqa: E731  (under every per-client limit)
        kinds: dict[str, tuple[Callable[[int], Any], Callable[[Any], int], int]] = {
            "bare": (none, get("/bench/bare"), 200),
            "token_unknown_id": (none, get("/api/me", "bo_999999_" + "x" * 43), 401),
            "token_wrong_secret": (none, get("/api/me", f"bo_{token_id}_" + "x" * 43), 401),
            "token_valid": (none, get("/api/me", good), 200),
            "login_unknown_user": (
                lambda i: login_form(rotate(i), f"ghost{i}", "wrong-pw-" * 3),
                post_login,
                401,
            ),
            "login_wrong_password": (
                lambda i: login_form(rotate(i), "bench", "wrong-pw-" * 3),
                post_login,
                401,
            ),
            "login_throttled": (lambda i: login_form("10.7.7.7", "bench", password), post_login, 429),
        }
        for prepare, send, _want in kinds.values():  # warm up each path
            for i in range(3):
                send(prepare(10_000 + i))
        with rt.db.session() as s:  # the warm-up's own failures must not throttle the runs
            s.execute(sa.delete(LoginThrottle).where(LoginThrottle.client != "10.7.7.7"))
        results = {kind: measure(n, *spec) for kind, spec in kinds.items()}
    finally:
        stop_runtime()
    base = results["bare"]
    print(f"{'kind':24} {'wall ms':>9} {'× bare':>8} {'cpu ms':>9} {'× bare':>8} {'argon2/req':>11}")
    for kind, r in results.items():
        r["wall_vs_bare"] = r["wall_ms"] / base["wall_ms"]
        r["cpu_vs_bare"] = r["cpu_ms"] / base["cpu_ms"] if base["cpu_ms"] else float("nan")
        print(
            f"{kind:24} {r['wall_ms']:9.2f} {r['wall_vs_bare']:8.2f} {r['cpu_ms']:9.2f} "
            f"{r['cpu_vs_bare']:8.2f} {r['argon2_per_request']:11.2f}"
        )
    print(json.dumps({"benchmark": "auth", "requests": n, "database": rt.db.safe_url, "results": results}))


if __name__ == "__main__":
    main()
