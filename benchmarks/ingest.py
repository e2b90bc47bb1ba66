"""Webhook ingest throughput: BillOps' real Stripe endpoint against a bare endpoint on the same machine.

    python benchmarks/ingest.py --events 2000 --concurrency 16

1. Starts `python -m billops serve` in a fresh temporary data directory (packaged policy: shadow mode)
   and, from a separate client process, sends N distinct signed Stripe webhooks (from the simulated
   business in billops.sim) over loopback with C concurrent keep-alive connections. Each request's
   latency is measured from send to the full answer; the signature is computed before the clock starts.
2. Optionally waits for the workflows those events started to finish (`--drain-timeout`, 0 to skip).
3. Does the same against a bare endpoint: FastAPI + uvicorn with the same settings, a route that
   reads the body and answers 200. That is this machine's ceiling for the framework.

Prints a table and one JSON line (`{"benchmark": "ingest", ...}`). Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BARE_APP = """
import sys
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()

@app.get("/healthz")
def healthz():
    return {"status": "ok"}

@app.post("/webhooks/stripe/{endpoint}")
async def webhook(endpoint: str, request: Request):
    await request.body()
    return JSONResponse({"status": "accepted"})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


# ----------------------------------------------------------------------------- client process


def make_bodies(n: int, seed: int) -> list[bytes]:
    """N distinct Stripe events from the simulated business, spread evenly over its whole stream."""
    from billops.sim.stream import encode, generate_events

    customers = max(10, math.ceil(n / 7))
    while True:
        events = generate_events(customers=customers, days=30, seed=seed)
        if len(events) >= n:
            break
        customers = math.ceil(customers * 1.5)
    picked = [events[(i * len(events)) // n] for i in range(n)]
    return [encode(e) for e in picked]


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def run_client(url: str, secret: str, n: int, concurrency: int, seed: int) -> dict[str, Any]:
    import http.client
    from urllib.parse import urlsplit

    from billops.sim.stream import sign

    bodies = make_bodies(n, seed)
    parts = urlsplit(url)
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"accepted": 0, "duplicate": 0, "errors": 0}
    samples: list[str] = []
    start = threading.Barrier(concurrency + 1)

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine: list[float] = []
        local = {"accepted": 0, "duplicate": 0, "errors": 0}
        start.wait()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            body = bodies[i]
            headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)}
            t0 = time.perf_counter()
            try:
                conn.request("POST", parts.path, body=body, headers=headers)
                resp = conn.getresponse()
                answer = resp.read()
                mine.append(time.perf_counter() - t0)
                if 200 <= resp.status < 300:
                    status = json.loads(answer).get("status", "accepted")
                    local["duplicate" if status == "duplicate" else "accepted"] += 1
                else:
                    local["errors"] += 1
                    if len(samples) < 3:
                        samples.append(f"{resp.status}: {answer[:200]!r}")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                local["errors"] += 1
                if len(samples) < 3:
                    samples.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.close()
        with lock:
            latencies.extend(mine)
            for k, v in local.items():
                counts[k] += v

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(bodies),
        **counts,
        "seconds": round(seconds, 3),
        "events_per_second": round(counts["accepted"] / seconds, 1) if seconds else 0.0,
        "requests_per_second": round(len(bodies) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "error_samples": samples,
    }


# ----------------------------------------------------------------------------- orchestrator


def client_subprocess(url: str, secret: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--client", url, "--secret", secret,
        "--events", str(args.events), "--concurrency", str(args.concurrency), "--seed", str(args.seed),
    ]  # fmt: skip
    timeout = 120 + args.events / 20
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise SystemExit(f"client failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_drained(url: str, token: str, timeout: float) -> tuple[float | None, dict[str, Any]]:
    import httpx

    started = time.monotonic()
    status: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() - started < timeout:
        status = httpx.get(f"{url}/api/status", headers=headers, timeout=10).json()
        wf = status.get("workflows", {})
        if wf.get("pending", 0) + wf.get("enqueued", 0) == 0:
            return time.monotonic() - started, status
        time.sleep(0.5)
    return None, status


def bench_billops(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    import secrets

    from billops.sim.demo import Server, demo_token, free_port, server_env

    data_dir = Path(tempfile.mkdtemp(prefix="billops-bench-"))
    secret = "whsec_" + secrets.token_hex(24)
    server = Server(data_dir, free_port(), server_env(data_dir, secret))
    try:
        server.wait_healthy(60)
        token = demo_token(data_dir)  # a viewer token in the server's database, to read /api/status
        result = client_subprocess(f"{server.url}/webhooks/stripe/default", secret, args)
        drain: dict[str, Any] = {}
        if args.drain_timeout > 0:
            seconds, status = wait_drained(server.url, token, args.drain_timeout)
            wf = status.get("workflows", {})
            drain = {
                "drain_seconds_after_send": None if seconds is None else round(seconds, 1),
                "workflows": wf,
                "decisions": status.get("decisions"),
                "workflows_per_second": (
                    round(wf.get("success", 0) / (result["seconds"] + seconds), 1)
                    if seconds is not None
                    else None
                ),
            }
        return result, drain
    finally:
        server.stop()
        print(f"billops server log: {server.log_path}", file=sys.stderr)


def bench_bare(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from billops.sim.demo import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the bare endpoint did not start")
            time.sleep(0.1)
        return client_subprocess(f"http://127.0.0.1:{port}/webhooks/stripe/default", "whsec_bare", args)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    head = f"{'endpoint':<10}{'requests':>10}{'accepted':>10}{'errors':>8}{'seconds':>9}{'events/s':>10}"
    head += f"{'p50 ms':>9}{'p99 ms':>9}"
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        print(
            f"{name:<10}{r['requests']:>10}{r['accepted']:>10}{r['errors']:>8}{r['seconds']:>9.2f}"
            f"{r['events_per_second']:>10.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=2000, help="distinct webhooks to send (default 2000)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent connections (default 16)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--drain-timeout", type=float, default=120.0,
                   help="seconds to wait for the started workflows to finish (0: do not wait)")  # fmt: skip
    p.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--secret", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.events < 1 or args.concurrency < 1:
        p.error("--events and --concurrency must be positive")
    if args.client:
        print(json.dumps(run_client(args.client, args.secret, args.events, args.concurrency, args.seed)))
        return
    billops_result, drain = bench_billops(args)
    bare_result = bench_bare(args)
    print_table({"billops": billops_result, "bare": bare_result})
    ratio = (
        billops_result["events_per_second"] / bare_result["events_per_second"]
        if bare_result["events_per_second"]
        else None
    )
    if drain:
        print(
            f"workflows: drained {drain['drain_seconds_after_send']} s after the last webhook "
            f"({drain['workflows_per_second']} workflows/s overall), {drain['workflows']}"
        )
    for name, r in (("billops", billops_result), ("bare", bare_result)):
        for s in r.pop("error_samples", []):
            print(f"{name} error: {s}", file=sys.stderr)
    line = {
        "benchmark": "ingest",
        "events": args.events,
        "concurrency": args.concurrency,
        "billops": billops_result,
        "bare": bare_result,
        "billops_vs_bare": None if ratio is None else round(ratio, 3),
        "drain": drain,
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
