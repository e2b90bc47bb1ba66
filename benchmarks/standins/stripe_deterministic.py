"""A deterministic local Stripe stand-in for the chaos benchmark (benchmarks/chaos.py).

    python benchmarks/standins/stripe_deterministic.py --world world.json --port 0 --port-file port.txt

A small threaded HTTP server on 127.0.0.1 that implements only the Stripe endpoints BillOps's Stripe
client (`billops.platforms.stripe.client`) calls, in the 2020-era API shape (`invoice.charge`,
`invoice.payment_intent`), from a world file written by the benchmark (customers, cards, invoices and
each failed invoice's first, declined charge):

    GET  /v1/invoices/{id}              GET  /v1/customers/{id}
    POST /v1/invoices/{id}              (auto_advance, metadata[…])
    POST /v1/invoices/{id}/pay          GET  /v1/payment_intents/{id}   (expand[]=latest_charge)
    GET  /v1/charges/{id}               GET  /v1/invoice_payments?invoice=…
    GET  /v1/payment_methods?customer=… GET  /v1/payment_methods/{id}
    POST /v1/billing_portal/sessions

Rules (so that the outcome of every recovery is a function of its inputs):
- the k-th real pay of invoice X (a pay request that is not an idempotent replay, on an open invoice)
  succeeds iff `succeeds(seed, X, k, percent)`: a SHA-256 of (seed, X, k) below `percent`; a decline
  is a 402 card_error `insufficient_funds` with a new failed charge; a pay on a paid invoice is a 400
  "Invoice is already paid";
- `Idempotency-Key` is honoured as Stripe documents it: the same key with the same method, path and
  parameters replays the stored answer (status and body, header `Idempotent-Replayed: true`); the
  same key with anything else is a 400 `idempotency_error`. A request whose handler is still running
  under the same key waits for it (bounded), then replays.

Counters for the benchmark: `GET /_standin/stats` (charges and successful charges per invoice, pay
requests, replays, key conflicts, requests per endpoint); `POST /_standin/reset` reloads the world.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DECLINE_CODE = "insufficient_funds"
DECLINE_MESSAGE = "Your card has insufficient funds."


def succeeds(seed: int, invoice_id: str, k: int, percent: int) -> bool:
    """Whether the k-th real pay of an invoice succeeds: the stand-in's only source of chance."""
    digest = hashlib.sha256(f"{seed}:{invoice_id}:{k}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < percent


def expected_outcome(seed: int, invoice_id: str, retries: int, percent: int) -> tuple[str, int]:
    """What an uninterrupted recovery with `retries` planned retries ends with under these rules:
    ("recovered", k) at the first retry k that succeeds, else ("exhausted", retries)."""
    for k in range(1, retries + 1):
        if succeeds(seed, invoice_id, k, percent):
            return "recovered", k
    return "exhausted", retries


# ----------------------------------------------------------------------------- objects


def card_of(pm: dict[str, Any]) -> dict[str, Any]:
    return {**pm["card"], "network": pm["card"]["brand"]}


def charge_obj(ch: dict[str, Any], inv: dict[str, Any], pm: dict[str, Any]) -> dict[str, Any]:
    ok = ch["status"] == "succeeded"
    return {
        "id": ch["id"],
        "object": "charge",
        "amount": inv["amount_due"],
        "amount_captured": inv["amount_due"] if ok else 0,
        "amount_refunded": 0,
        "captured": ok,
        "created": ch["created"],
        "currency": inv["currency"],
        "customer": inv["customer"],
        "invoice": inv["id"],
        "payment_intent": inv["payment_intent"],
        "payment_method": pm["id"],
        "payment_method_details": {"type": "card", "card": card_of(pm)},
        "paid": ok,
        "status": ch["status"],
        "failure_code": None if ok else "card_declined",
        "failure_message": None if ok else DECLINE_MESSAGE,
        "livemode": False,
        "metadata": {},
        "outcome": {
            "type": "authorized" if ok else "issuer_declined",
            "network_status": "approved_by_network" if ok else "declined_by_network",
            "reason": None if ok else DECLINE_CODE,
            "risk_level": "normal",
            "seller_message": "Payment complete."
            if ok
            else f"The bank returned the decline code `{DECLINE_CODE}`.",
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
        },
        "refunded": False,
        "disputed": False,
    }


class World:
    """The stand-in's state: what Stripe would know. Every mutation holds `lock`."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.seed = int(spec["seed"])
        self.percent = int(spec["success_percent"])
        self.customers: dict[str, dict[str, Any]] = {c["id"]: c for c in spec["customers"]}
        self.pms: dict[str, dict[str, Any]] = {p["id"]: p for p in spec["payment_methods"]}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        for inv in spec["invoices"]:
            inv = json.loads(json.dumps(inv))
            for ch in inv.pop("charges", []):
                self.charges[ch["id"]] = {**ch, "invoice": inv["id"]}
                inv["charge"] = ch["id"]
            self.invoices[inv["id"]] = inv
        self.lock = threading.Lock()
        self.idem: dict[str, dict[str, Any]] = {}
        self.idem_busy: dict[str, threading.Event] = {}
        self.real_pays: Counter[str] = Counter()  # charges made per invoice (not replays)
        self.paid_charges: Counter[str] = Counter()  # successful charges per invoice
        self.pays_on_paid: Counter[str] = Counter()  # pay requests refused: already paid
        self.pay_keys: dict[str, list[str]] = defaultdict(list)  # invoice -> idempotency keys of real pays
        self.replays: Counter[str] = Counter()  # per endpoint kind
        self.conflicts: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.no_key_writes = 0

    # -------------------------------------------------------------- renderings

    def invoice(self, inv_id: str) -> dict[str, Any] | None:
        inv = self.invoices.get(inv_id)
        if inv is None:
            return None
        paid = inv["status"] == "paid"
        return {
            "id": inv["id"],
            "object": "invoice",
            "amount_due": inv["amount_due"],
            "amount_paid": inv["amount_due"] if paid else 0,
            "amount_remaining": 0 if paid else inv["amount_due"],
            "attempt_count": inv["attempt_count"],
            "attempted": inv["attempt_count"] > 0,
            "auto_advance": inv["auto_advance"],
            "billing_reason": "subscription_cycle",
            "charge": inv.get("charge"),
            "collection_method": "charge_automatically",
            "created": inv["created"],
            "currency": inv["currency"],
            "customer": inv["customer"],
            "customer_email": self.customers[inv["customer"]]["email"],
            "hosted_invoice_url": f"https://invoice.stripe.test/{inv['id']}",
            "lines": {
                "object": "list",
                "data": [
                    {
                        "id": f"il_{inv['id']}",
                        "object": "line_item",
                        "amount": inv["amount_due"],
                        "currency": inv["currency"],
                        "description": f"1 × {inv['plan']}",
                        "plan": {"id": "plan_bench", "object": "plan", "nickname": inv["plan"]},
                        "price": {"id": "price_bench", "object": "price", "nickname": inv["plan"]},
                        "subscription": inv["subscription"],
                    }
                ],
                "has_more": False,
                "url": f"/v1/invoices/{inv['id']}/lines",
            },
            "livemode": False,
            "metadata": dict(inv["metadata"]),
            "next_payment_attempt": None,
            "number": inv["number"],
            "paid": paid,
            "payment_intent": inv["payment_intent"],
            "period_end": inv["created"],
            "period_start": inv["created"] - 30 * 86400,
            "status": inv["status"],
            "subscription": inv["subscription"],
            "status_transitions": {"paid_at": inv.get("paid_at"), "finalized_at": inv["created"]},
        }

    def payment_intent(self, pi_id: str, expand: bool) -> dict[str, Any] | None:
        inv = next((i for i in self._by_pi() if i["payment_intent"] == pi_id), None)
        if inv is None:
            return None
        ch = self.charges.get(inv.get("charge") or "")
        pm = self.pms[inv["payment_method"]]
        error = None
        status = "requires_payment_method"
        if ch is not None and ch["status"] == "failed":
            error = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": DECLINE_CODE,
                "message": DECLINE_MESSAGE,
                "charge": ch["id"],
                "payment_method": pm,
            }
        elif ch is not None:
            status = "succeeded"
        latest: Any = None
        if ch is not None:
            latest = charge_obj(ch, inv, pm) if expand else ch["id"]
        return {
            "id": pi_id,
            "object": "payment_intent",
            "amount": inv["amount_due"],
            "amount_received": inv["amount_due"] if status == "succeeded" else 0,
            "created": inv["created"],
            "currency": inv["currency"],
            "customer": inv["customer"],
            "invoice": inv["id"],
            "last_payment_error": error,
            "latest_charge": latest,
            "livemode": False,
            "metadata": {},
            "payment_method": pm["id"] if status == "succeeded" else None,
            "payment_method_types": ["card"],
            "status": status,
        }

    def _by_pi(self) -> list[dict[str, Any]]:
        if not hasattr(self, "_pi_index"):
            self._pi_index = {i["payment_intent"]: i for i in self.invoices.values()}
        return list(self._pi_index.values())

    def pi_invoice(self, pi_id: str) -> dict[str, Any] | None:
        self._by_pi()
        return self._pi_index.get(pi_id)

    # -------------------------------------------------------------- the writes

    def pay(self, inv_id: str, key: str | None) -> tuple[int, dict[str, Any]]:
        inv = self.invoices.get(inv_id)
        if inv is None:
            return 404, _error(
                "invalid_request_error", f"No such invoice: '{inv_id}'", code="resource_missing"
            )
        if inv["status"] == "paid":
            self.pays_on_paid[inv_id] += 1
            return 400, _error(
                "invalid_request_error", "Invoice is already paid", code="invoice_already_paid"
            )
        self.real_pays[inv_id] += 1
        if key:
            self.pay_keys[inv_id].append(key)
        k = self.real_pays[inv_id]
        pm = self.pms[inv["payment_method"]]
        ok = succeeds(self.seed, inv_id, k, self.percent)
        ch: dict[str, Any] = {
            "id": f"ch_{inv_id[3:]}_{k}",
            "status": "succeeded" if ok else "failed",
            "created": int(time.time()),
        }
        self.charges[ch["id"]] = {**ch, "invoice": inv_id}
        inv["charge"] = ch["id"]
        inv["attempt_count"] += 1
        if ok:
            self.paid_charges[inv_id] += 1
            inv["status"] = "paid"
            inv["paid_at"] = ch["created"]
            inv["auto_advance"] = False
            return 200, self.invoice(inv_id) or {}
        body = _error("card_error", DECLINE_MESSAGE, code="card_declined")
        body["error"].update(
            {
                "decline_code": DECLINE_CODE,
                "charge": ch["id"],
                "payment_intent": self.payment_intent(inv["payment_intent"], expand=False),
                "payment_method": pm,
            }
        )
        return 402, body

    def update_invoice(self, inv_id: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        inv = self.invoices.get(inv_id)
        if inv is None:
            return 404, _error(
                "invalid_request_error", f"No such invoice: '{inv_id}'", code="resource_missing"
            )
        for k, v in params.items():
            m = re.fullmatch(r"metadata\[(.+)\]", k)
            if m:
                inv["metadata"][m.group(1)] = v
            elif k == "auto_advance":
                inv["auto_advance"] = v == "true"
        return 200, self.invoice(inv_id) or {}

    def stats(self) -> dict[str, Any]:
        return {
            "charges_per_invoice": dict(self.real_pays),
            "paid_charges_per_invoice": dict(self.paid_charges),
            "pays_refused_already_paid": dict(self.pays_on_paid),
            "pay_keys": dict(self.pay_keys),
            "replays": dict(self.replays),
            "key_conflicts": self.conflicts[:50],
            "key_conflict_count": len(self.conflicts),
            "requests": dict(self.requests),
            "writes_without_key": self.no_key_writes,
        }


def _error(kind: str, message: str, *, code: str | None = None) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "code": code}}


# ----------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandinServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any], replayed: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", f"req_{time.monotonic_ns()}")
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(data)

    def _params(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            params.update(parse_qsl(self.rfile.read(n).decode(), keep_blank_values=True))
        return parts.path, params

    def do_GET(self) -> None:
        path, params = self._params()
        w = self.server.world
        with w.lock:
            status, body = self.route_get(w, path, params)
        self._send(status, body)

    def route_get(self, w: World, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if path == "/_standin/stats":
            return 200, w.stats()
        seg = path.strip("/").split("/")
        if len(seg) < 2 or seg[0] != "v1":
            return 404, _error("invalid_request_error", f"Unrecognized request URL (GET: {path})")
        res = seg[1]
        w.requests[f"GET {res}"] += 1
        missing = 404, _error("invalid_request_error", f"No such {res}: {path}", code="resource_missing")
        if res == "invoices" and len(seg) == 3:
            inv = w.invoice(seg[2])
            return (200, inv) if inv else missing
        if res == "customers" and len(seg) == 3:
            c = w.customers.get(seg[2])
            return (200, c) if c else missing
        if res == "payment_intents" and len(seg) == 3:
            expand = any(v == "latest_charge" for k, v in params.items() if k.startswith("expand"))
            pi = w.payment_intent(seg[2], expand)
            return (200, pi) if pi else missing
        if res == "charges" and len(seg) == 3:
            ch = w.charges.get(seg[2])
            if ch is None:
                return missing
            inv = w.invoices[ch["invoice"]]
            return 200, charge_obj(ch, inv, w.pms[inv["payment_method"]])
        if res == "invoice_payments" and len(seg) == 2:
            inv = w.invoices.get(params.get("invoice", ""))
            data = []
            if inv is not None:
                data.append(
                    {
                        "id": f"inpay_{inv['id'][3:]}",
                        "object": "invoice_payment",
                        "created": inv["created"],
                        "invoice": inv["id"],
                        "payment": {"type": "payment_intent", "payment_intent": inv["payment_intent"]},
                        "status": "paid" if inv["status"] == "paid" else "open",
                    }
                )
            return 200, {"object": "list", "data": data, "has_more": False, "url": "/v1/invoice_payments"}
        if res == "payment_methods" and len(seg) == 2:
            cus = params.get("customer", "")
            data = [p for p in w.pms.values() if p["customer"] == cus]
            return 200, {"object": "list", "data": data, "has_more": False, "url": "/v1/payment_methods"}
        if res == "payment_methods" and len(seg) == 3:
            pm = w.pms.get(seg[2])
            return (200, pm) if pm else missing
        return 404, _error("invalid_request_error", f"Unrecognized request URL (GET: {path})")

    def do_POST(self) -> None:
        path, params = self._params()
        w = self.server.world
        if path == "/_standin/reset":
            self.server.world = World(self.server.spec)
            self._send(200, {"reset": True})
            return
        key = self.headers.get("Idempotency-Key")
        fingerprint = json.dumps([path, sorted(params.items())])
        if not key:
            with w.lock:
                w.no_key_writes += 1
                status, body = self.route_post(w, path, params, None)
            self._send(status, body)
            return
        for _ in range(300):  # a concurrent request with the same key: wait for it (≤ 30 s)
            with w.lock:
                stored = w.idem.get(key)
                busy = w.idem_busy.get(key)
                if stored is None and busy is None:
                    w.idem_busy[key] = threading.Event()
                    break
            if stored is not None:
                if stored["fingerprint"] != fingerprint:
                    with w.lock:
                        w.conflicts.append({"key": key, "first": stored["fingerprint"], "then": fingerprint})
                    self._send(
                        400,
                        _error(
                            "idempotency_error",
                            f"Keys for idempotent requests can only be used with the same parameters they "
                            f"were first used with. Try using a key other than '{key}' if you meant to "
                            "execute a different request.",
                        ),
                    )
                    return
                with w.lock:
                    w.replays["pay" if path.endswith("/pay") else path.strip("/").split("/")[1]] += 1
                self._send(stored["status"], stored["body"], replayed=True)
                return
            assert busy is not None
            busy.wait(0.1)
        else:
            self._send(409, _error("idempotency_error", "a request with this key is still in progress"))
            return
        with w.lock:
            status, body = self.route_post(w, path, params, key)
            w.idem[key] = {"fingerprint": fingerprint, "status": status, "body": body}
            w.idem_busy.pop(key).set()
        self._send(status, body)

    def route_post(
        self, w: World, path: str, params: dict[str, str], key: str | None
    ) -> tuple[int, dict[str, Any]]:
        seg = path.strip("/").split("/")
        if len(seg) < 2 or seg[0] != "v1":
            return 404, _error("invalid_request_error", f"Unrecognized request URL (POST: {path})")
        w.requests[f"POST {'/'.join(seg[1:2] + seg[3:4])}"] += 1
        if seg[1] == "invoices" and len(seg) == 4 and seg[3] == "pay":
            return w.pay(seg[2], key)
        if seg[1] == "invoices" and len(seg) == 3:
            return w.update_invoice(seg[2], params)
        if seg[1:3] == ["billing_portal", "sessions"] and len(seg) == 3:
            cus = params.get("customer", "")
            if cus not in w.customers:
                return 404, _error(
                    "invalid_request_error", f"No such customer: '{cus}'", code="resource_missing"
                )
            sid = hashlib.sha256((key or cus).encode()).hexdigest()[:16]
            return 200, {
                "id": f"bps_{sid}",
                "object": "billing_portal.session",
                "customer": cus,
                "url": f"https://billing.stripe.test/p/session/{sid}",
                "livemode": False,
            }
        return 404, _error("invalid_request_error", f"Unrecognized request URL (POST: {path})")


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], spec: dict[str, Any]) -> None:
        super().__init__(addr, Handler)
        self.spec = spec
        self.world = World(spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=Path, required=True, help="world JSON written by benchmarks/chaos.py")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    p.add_argument("--max-seconds", type=float, default=3600, help="stop by itself after this long")
    args = p.parse_args()
    spec = json.loads(args.world.read_text())
    server = StandinServer(("127.0.0.1", args.port), spec)
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.rename(args.port_file)
    print(f"stripe stand-in on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    timer = threading.Timer(args.max_seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
