"""`billops demo`: a simulated business's Stripe webhooks, signed and posted to a real BillOps server.

The demo starts `python -m billops serve` on loopback with its own data directory and a fresh
`whsec_` secret (policy: the packaged default, shadow mode: decide and record, change nothing),
posts every event over HTTP with a `Stripe-Signature` made at send time, waits for the workflows,
then reads the decisions back through the API (with a viewer service user and API token it creates in
that database, see `demo_token`) and summarizes them. `run_demo(...)` returns the
summary numbers; the CLI command only prints them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import billops
from billops.domain.billing import Money
from billops.errors import BillopsError
from billops.sim.business import generate_business
from billops.sim.stream import build_events, encode, sign

MARKER = ".billops-demo"  # a demo data directory carries this file; only such a directory is ever wiped
DB_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".sqlite-wal", ".sqlite-shm")
ROUTES = ("auto_retry", "retry_and_notify", "human_review", "no_retry")


class DemoError(BillopsError):
    status = 500


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_data_dir(data_dir: Path, *, keep: bool) -> list[Path]:
    """Create the demo directory; unless `keep`, delete the demo database files in it (only those)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    marker = data_dir / MARKER
    dbs = [p for p in data_dir.iterdir() if p.is_file() and p.name.endswith(DB_SUFFIXES)]
    if dbs and not marker.exists():
        raise DemoError(
            f"{data_dir} holds a database but is not a demo directory (no {MARKER} file): "
            "choose another --data-dir, the demo never deletes a database it did not create",
            status=400,
        )
    marker.write_text("Created by `billops demo`. Its database files are recreated on every run.\n")
    if keep:
        return []
    for p in dbs:
        p.unlink()
    return dbs


def server_env(data_dir: Path, secret: str) -> dict[str, str]:
    """The server's environment: ours only (no inherited BILLOPS_* such as a production database)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLOPS_")}
    src = str(Path(billops.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    env.update(
        BILLOPS_DATA_DIR=str(data_dir),
        BILLOPS_DATABASE_URL=f"sqlite:///{data_dir / 'billops.db'}",
        BILLOPS_STRIPE_WEBHOOK_SECRETS=json.dumps({"default": [secret]}),
        BILLOPS_LOG_LEVEL="WARNING",
    )
    return env


class Server:
    """`python -m billops serve` as a child process; its output goes to <data dir>/server.log."""

    def __init__(
        self, data_dir: Path, port: int, env: dict[str, str], command: list[str] | None = None
    ) -> None:
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.log_path = data_dir / "server.log"
        self._log = self.log_path.open("wb")
        cmd = command or [
            sys.executable,
            "-m",
            "billops",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        self.proc = subprocess.Popen(cmd, env=env, cwd=data_dir, stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise DemoError(f"the server exited with code {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                time.sleep(0.2)
        raise DemoError(f"the server did not answer /healthz within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def post_events(
    url: str, bodies: list[bytes], secret: str, *, workers: int = 4, progress: Progress | None = None
) -> dict[str, Any]:
    """POST each body with a fresh signature; count answers by status. Order is kept per worker."""
    statuses: Counter[str] = Counter()
    codes: Counter[int] = Counter()
    samples: list[str] = []
    lock = threading.Lock()
    task = progress.add_task("posting webhooks", total=len(bodies)) if progress else None
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)

    with httpx.Client(timeout=30.0, limits=limits) as client:

        def send(body: bytes) -> None:
            headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)}
            status, detail = "", ""
            try:
                r = client.post(url, content=body, headers=headers)
                code = r.status_code
                if 200 <= code < 300:
                    answer = r.json()
                    status = str(answer.get("status", "accepted")) if isinstance(answer, dict) else "accepted"
                else:
                    detail = r.text[:300]
            except (httpx.HTTPError, ValueError) as exc:
                code, detail = 0, f"{type(exc).__name__}: {exc}"
            with lock:
                codes[code] += 1
                if status:
                    statuses[status] += 1
                elif len(samples) < 5:
                    samples.append(f"{code or 'no answer'}: {detail}")
            if progress is not None and task is not None:
                progress.advance(task)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(send, bodies))
        seconds = time.perf_counter() - started
    errors = sum(n for c, n in codes.items() if not 200 <= c < 300)
    return {
        "posted": len(bodies),
        "accepted": statuses.get("accepted", 0),
        "duplicates": statuses.get("duplicate", 0),
        "errors": errors,
        "error_samples": samples,
        "codes": dict(codes),
        "seconds": seconds,
    }


def demo_token(data_dir: Path) -> str:
    """A viewer service user and a one-day API token in the demo server's own database (created by the
    server at start-up), for reading /api: the same as `billops users add … --token-only` and
    `billops users token …` on that database. Audited as `billops demo`."""
    from billops.governance import users
    from billops.store.db import Database

    db = Database(f"sqlite:///{data_dir / 'billops.db'}")
    try:
        with db.session() as s:
            name = f"demo-{secrets.token_hex(4)}"  # unique: a kept (--keep) database has earlier ones
            users.create_user(s, name, "viewer", None, by="billops demo")
            return users.issue_token(s, name, "demo", days=1, max_days=1, by="billops demo")[1]
    finally:
        db.dispose()


def wait_settled(
    url: str, token: str, timeout: float = 90.0, quiet_seconds: float = 5.0
) -> tuple[dict[str, Any], bool]:
    """Poll /api/status until no workflow is pending or enqueued. Workflows that only wait (a timer,
    an approval) without any change for `quiet_seconds` while nothing is enqueued count as settled."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    unchanged_since = time.monotonic()
    with httpx.Client(timeout=10.0, headers={"Authorization": f"Bearer {token}"}) as client:
        while True:
            r = client.get(f"{url}/api/status")
            if r.status_code != 200:
                raise DemoError(f"GET /api/status answered {r.status_code}: {r.text[:300]}")
            status = r.json()
            wf = status.get("workflows", {})
            if wf.get("pending", 0) + wf.get("enqueued", 0) == 0:
                return status, True
            if status != last:
                last, unchanged_since = status, time.monotonic()
            elif wf.get("enqueued", 0) == 0 and time.monotonic() - unchanged_since >= quiet_seconds:
                return status, True
            if time.monotonic() >= deadline:
                return status, False
            time.sleep(0.25)


def summarize(decisions: list[dict[str, Any]]) -> dict[str, Any]:
    # Each invoice counts once (one decision per invoice episode; an older database may hold more).
    once = {(d.get("platform"), d.get("invoice_id") or d.get("workflow_id") or id(d)): d for d in decisions}
    decisions = list(once.values())
    routes: dict[str, dict[str, Any]] = {r: {"count": 0, "amount": {}, "retries": 0} for r in ROUTES}
    at_risk: dict[str, int] = defaultdict(int)
    projected: dict[str, int] = defaultdict(int)
    retries = 0
    deciders: dict[str, int] = defaultdict(int)
    too_late = 0
    for d in decisions:
        too_late += str((d.get("plan") or {}).get("retry_blocked") or "").startswith("no time left")
        deciders[str((d.get("versions") or {}).get("scorer") or "?")] += 1
        route = routes.setdefault(str(d.get("route")), {"count": 0, "amount": {}, "retries": 0})
        amount, cur = int(d.get("amount") or 0), str(d.get("currency") or "usd")
        planned = len((d.get("plan") or {}).get("retries") or [])
        route["count"] += 1
        route["amount"][cur] = route["amount"].get(cur, 0) + amount
        route["retries"] += planned
        retries += planned
        at_risk[cur] += amount
        projected[cur] += round(amount * int(d.get("score") or 0) / 100)
    return {
        "decisions": len(decisions),
        "deciders": dict(sorted(deciders.items())),
        "too_late": too_late,
        "routes": routes,
        "retries_planned": retries,
        "at_risk": dict(sorted(at_risk.items())),
        "projected_recovery": dict(sorted(projected.items())),
    }


def _money(by_currency: dict[str, int]) -> str:
    if not by_currency:
        return "—"
    return ", ".join(Money(amount=a, currency=c).format() for c, a in sorted(by_currency.items()))


def print_summary(console: Console, s: dict[str, Any]) -> None:
    b, w = s["business"], s["webhooks"]
    console.print(
        f"\n[bold]Business[/bold]: {b['customers']} customers, {b['renewals']} renewals in {b['days']} days, "
        f"{b['failed_renewals']} failed ({b['failure_rate']:.1%}), {b['recovered_in_window']} paid later"
    )
    t = Table(title="Webhooks", title_justify="left")
    for col in ("posted", "accepted", "duplicates", "errors (non-2xx)", "events/s"):
        t.add_column(col, justify="right")
    rate = w["posted"] / w["seconds"] if w["seconds"] else 0.0
    err_cell = f"[red]{w['errors']}[/red]" if w["errors"] else "0"
    t.add_row(str(w["posted"]), str(w["accepted"]), str(w["duplicates"]), err_cell, f"{rate:,.0f}")
    console.print(t)
    for sample in w["error_samples"]:
        console.print(f"  [red]error[/red] {sample}")
    t = Table(title="Decisions by route", title_justify="left")
    t.add_column("route")
    t.add_column("decisions", justify="right")
    t.add_column("amount")
    t.add_column("retries planned", justify="right")
    for route, r in s["routes"].items():
        t.add_row(route, str(r["count"]), _money(r["amount"]), str(r["retries"]))
    t.add_row(
        "[bold]total[/bold]",
        f"[bold]{s['decisions']}[/bold]",
        _money(s["at_risk"]),
        str(s["retries_planned"]),
    )
    console.print(t)
    deciders = ", ".join(f"{k} {v}" for k, v in s.get("deciders", {}).items()) or "—"
    console.print(f"Decided by:          {deciders}")
    if s.get("too_late"):
        console.print(
            f"Too late to retry:   {s['too_late']} failure(s) were older than the recovery window when the "
            "demo replayed them (it posts a month of history at once): no time left, a human reviews them"
        )
    console.print(f"Amount at risk:      {_money(s['at_risk'])}")
    console.print(f"Projected recovery:  {_money(s['projected_recovery'])}  (amount × score / 100)")
    wf = s["workflows"]
    console.print(
        f"Workflows: {wf.get('success', 0)} done, {wf.get('error', 0)} failed, "
        f"{wf.get('pending', 0) + wf.get('enqueued', 0)} still running or waiting"
        + ("" if s["settled"] else " [yellow](timed out waiting)[/yellow]")
    )
    d = s["data_dir"]
    console.print("\n[bold]Look further[/bold]")
    for cmd in (
        f"billops --data-dir {d} decisions list",
        f"billops --data-dir {d} approvals list",
        f"billops --data-dir {d} audit verify",
        f"billops --data-dir {d} recovery models",
        f"billops --data-dir {d} users add you --role admin   # then log in to the console",
        f"BILLOPS_DATA_DIR={d} billops serve   # console http://127.0.0.1:8400/console, API docs /docs",
        f"billops demo --data-dir {d} --keep   # post the same events again: all duplicates",
    ):
        console.print(f"  {cmd}")
    console.print(f"\nDone in {s['elapsed_seconds']:.1f} s.")


def train_demo_model(
    data_dir: Path, *, seed: int, before: datetime, customers: int = 6000, console: Console
) -> dict[str, Any]:
    """Train the recovery model on a year of simulated payment history (sim/payers.py) that ends where
    the demo's business begins, and register it in the demo's data directory: the server's recovery
    workflows then decide with it (see `billops recovery models`)."""
    import shutil

    from billops.recovery.model import register, registry_dir
    from billops.recovery.training import train
    from billops.sim.payers import World

    t0 = time.perf_counter()
    with console.status("training the recovery model on a simulated year of payments…"):
        world = World(seed=seed, customers=customers, start=before - timedelta(days=365), end=before)
        history = world.history()
        tmp = registry_dir(data_dir) / f".demo-training-{os.getpid()}"
        try:
            model, _ = train(
                history, out=tmp, source=f"simulator seed {seed}, {customers} customers, 12 months"
            )
            register(model, data_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    test = model.manifest["metrics"]["test"]
    info = {
        "version": model.version,
        "attempts": len(history),
        "examples": model.manifest["training"]["examples"],
        "auc": test.get("auc"),
        "brier": test.get("brier"),
        "seconds": time.perf_counter() - t0,
    }
    console.print(
        f"recovery model {info['version']}: {info['attempts']:,} simulated attempts, "
        f"{info['examples']:,} retries learned from, test AUC {info['auc']:.3f}, Brier {info['brier']:.3f} "
        f"({info['seconds']:.1f} s)"
    )
    return info


def run_demo(
    customers: int = 300,
    days: int = 30,
    seed: int = 7,
    data_dir: Path | str = Path(".billops/demo"),
    port: int | None = None,
    keep: bool = False,
    *,
    train_model: bool = True,
    train_customers: int = 6000,
    workers: int = 4,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the whole demo against a real server; return (and print) its summary."""
    started = time.perf_counter()
    console = console or Console()
    data_dir = Path(data_dir).resolve()
    prepare_data_dir(data_dir, keep=keep)
    model_info = None
    if not keep:
        import shutil

        from billops.recovery.model import registry_dir

        shutil.rmtree(registry_dir(data_dir), ignore_errors=True)
    if train_model:
        begin = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=days)
        model_info = train_demo_model(
            data_dir, seed=seed, before=begin, customers=train_customers, console=console
        )
    business = generate_business(customers=customers, days=days, seed=seed)
    bodies = [encode(e) for e in build_events(business)]
    failed = business.failed_renewals()
    secret = "whsec_" + secrets.token_hex(24)
    port = port or free_port()
    console.print(
        f"[bold]BillOps demo[/bold]: {customers} customers over {days} days (seed {seed}): "
        f"{len(bodies)} Stripe webhooks → http://127.0.0.1:{port}, data in {data_dir}"
        + (" (kept)" if keep else "")
    )
    server = Server(data_dir, port, server_env(data_dir, secret))
    try:
        with console.status("starting the server…"):
            server.wait_healthy(60.0)
        token = demo_token(data_dir)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            webhooks = post_events(
                f"{server.url}/webhooks/stripe/default", bodies, secret, workers=workers, progress=progress
            )
        with console.status("waiting for the workflows…"):
            status, settled = wait_settled(server.url, token, 90.0)
        limit = min(5000, max(1000, int(status.get("decisions") or 0)))
        r = httpx.get(
            f"{server.url}/api/decisions",
            params={"limit": limit},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )
        if r.status_code != 200:
            raise DemoError(f"GET /api/decisions answered {r.status_code}: {r.text[:300]}")
        decisions = r.json()
    except BaseException as exc:
        if server.proc.poll() is not None and not isinstance(exc, DemoError):
            console.print(f"[red]server log[/red] ({server.log_path}):\n{server.log_tail()}")
        raise
    finally:
        server.stop()
    summary = summarize(decisions)
    summary.update(
        business={
            "customers": customers,
            "days": days,
            "seed": seed,
            "renewals": len(business.renewals),
            "failed_renewals": len(failed),
            "failure_rate": len(failed) / len(business.renewals) if business.renewals else 0.0,
            "recovered_in_window": sum(1 for i in failed if i.paid),
        },
        webhooks=webhooks,
        model=model_info,
        events=webhooks["posted"],
        accepted=webhooks["accepted"],
        duplicates=webhooks["duplicates"],
        errors=webhooks["errors"],
        workflows=status.get("workflows", {}),
        events_stored=status.get("events"),
        settled=settled,
        data_dir=str(data_dir),
        port=port,
        elapsed_seconds=time.perf_counter() - started,
    )
    print_summary(console, summary)
    from billops.recovery.backtest_cli import demo_block

    summary["backtest"] = demo_block(console, data_dir, days)
    return summary
