"""What each platform's webhook path costs: authentication, normalization and, where the platform needs
it, the API reads made before an event is stored (Recurly's thin envelopes: 3 reads; a Chargebee
endpoint with re-fetching: 1 read; a Zuora decline callout: the invoice lookup).

    python benchmarks/platform_ingest.py --events 300

Runs the real app in-process (FastAPI TestClient, one client thread, embedded SQLite in a temporary
directory, shadow mode) against the local fake vendor APIs of the test suite (tests/support/*_api.py) on
127.0.0.1, posts N distinct valid webhooks per platform and case, and prints request latency (p50, p95)
and requests per second, then one JSON line. The fake APIs answer in well under a millisecond, so the
figures are BillOps's own cost plus loopback HTTP, not a vendor's latency.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake vendor APIs live with the tests

CB_CRED, Z_CRED, R_KEY = "billops:bench-password-1", "zuora:bench-password-1", "recurly-bench-key-000001"


def basic(cred: str) -> str:
    return "Basic " + base64.b64encode(cred.encode()).decode()


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def run_case(
    name: str, settings: dict[str, Any], make: Callable[[int], tuple[str, bytes, dict[str, str]]], n: int
) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from billops.app import create_app
    from billops.config import Settings
    from billops.runtime import start_runtime, stop_runtime

    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(data_dir=Path(tmp), executor_id=f"bench-{uuid.uuid4().hex[:6]}", **settings)
        start_runtime(s)
        try:
            with TestClient(create_app(s, manage_runtime=False)) as client:
                requests = [make(i) for i in range(n)]
                lat: list[float] = []
                started = time.perf_counter()
                for url, body, headers in requests:
                    t0 = time.perf_counter()
                    r = client.post(
                        url, content=body, headers={"content-type": "application/json", **headers}
                    )
                    lat.append((time.perf_counter() - t0) * 1000)
                    if r.status_code != 200 or r.json()["status"] != "accepted":
                        raise SystemExit(f"{name}: {r.status_code} {r.text}")
                elapsed = time.perf_counter() - started
        finally:
            stop_runtime()
    return {
        "case": name,
        "events": n,
        "p50_ms": round(percentile(lat, 50), 2),
        "p95_ms": round(percentile(lat, 95), 2),
        "per_second": round(n / elapsed, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300)
    n = ap.parse_args().events
    from support.chargebee_api import FakeChargebeeAPI, load_fixture
    from support.recurly_api import FakeRecurlyAPI
    from support.zuora_api import FakeZuoraAPI

    results = []
    with ExitStack() as stack:
        cb = stack.enter_context(FakeChargebeeAPI())
        rc = stack.enter_context(FakeRecurlyAPI())
        rc.seed_fixtures()
        zu = stack.enter_context(FakeZuoraAPI())
        zu.add_account("A1", default_payment_method="PM1")
        zu.add_payment_method("PM1", "A1")
        zu.add_invoice("INV1", "A1", amount="49.99")

        base_cb = load_fixture("payment_failed_insufficient_funds")

        def chargebee(i: int) -> tuple[str, bytes, dict[str, str]]:
            ev = json.loads(json.dumps(base_cb))
            ev["id"] = f"ev_bench_{uuid.uuid4().hex[:12]}"
            cb.add_event(ev)
            return "/webhooks/chargebee/default", json.dumps(ev).encode(), {"authorization": basic(CB_CRED)}

        cb_settings = {"chargebee_webhook_credentials": {"default": [CB_CRED]}}
        results.append(run_case("chargebee", cb_settings, chargebee, n))
        refetch = {
            **cb_settings,
            "chargebee_site": cb.site,
            "chargebee_api_key": cb.api_key,
            "chargebee_api_url": cb.url,
            "chargebee_refetch_events": True,
        }
        results.append(run_case("chargebee + re-fetch (1 read)", refetch, chargebee, n))

        def recurly(i: int) -> tuple[str, bytes, dict[str, str]]:
            env = json.loads((ROOT / "tests/fixtures/recurly/webhooks/payment.failed.json").read_text())
            env["id"] = f"r{uuid.uuid4().hex[:11]}"
            body = json.dumps(env).encode()
            ts = str(int(time.time()))
            sig = hmac.new(R_KEY.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            return "/webhooks/recurly/default", body, {"recurly-signature": f"{ts},{sig}"}

        rc_settings = {
            "recurly_webhook_keys": {"default": [R_KEY]},
            "recurly_api_key": rc.api_key,
            "recurly_api_url": rc.url,
        }
        results.append(run_case("recurly thin event (3 reads)", rc_settings, recurly, n))

        z_body = json.loads(
            (ROOT / "tests/fixtures/zuora/payment_declined_insufficient_funds.json").read_text()
        )

        def zuora(i: int) -> tuple[str, bytes, dict[str, str]]:
            pid = f"P{uuid.uuid4().hex[:12]}"
            zu.add_payment(pid, "A1", amount="49.99", created=datetime.now(UTC), payment_method="PM1")
            body = json.loads(json.dumps(z_body))
            body["timestamp"] = datetime.now(UTC).isoformat()
            body["account"]["id"] = body["payment"]["accountId"] = body["paymentMethod"]["accountId"] = "A1"
            body["payment"]["id"] = pid
            return "/webhooks/zuora/default", json.dumps(body).encode(), {"authorization": basic(Z_CRED)}

        z_settings: dict[str, Any] = {"zuora_webhook_endpoints": {"default": {"basic": [Z_CRED]}}}
        results.append(run_case("zuora decline", z_settings, zuora, n))
        z_api = {
            **z_settings,
            "zuora_api_url": zu.url,
            "zuora_client_id": zu.client_id,
            "zuora_client_secret": zu.client_secret,
        }
        results.append(run_case("zuora decline + invoice lookup", z_api, zuora, n))

    print(f"{'case':<34}{'events':>8}{'p50 ms':>9}{'p95 ms':>9}{'req/s':>9}")
    for r in results:
        print(f"{r['case']:<34}{r['events']:>8}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['per_second']:>9}")
    print(json.dumps({"benchmark": "platform_ingest", "results": results}))


if __name__ == "__main__":
    main()
