"""What drafting and delivering a message costs, without the network's own latency.

    python benchmarks/messages.py [--n 500] [--database-url postgresql://…]

1. `template_draft` per kind (facts → Jinja2 → typed output), the grounding check of a draft, and
   `privacy.redact` on 1 KB of free text: p50/p95 in milliseconds.
2. `send_email` to a real SMTP server (aiosmtpd) on 127.0.0.1, one connection per message as the delivery
   step does; `send_sms` and `deliver_webhook` (Standard Webhooks signing) to a local HTTP server.
3. The contact guardrails (`check_action` for an SMS: opt-out, frequency cap, rate limits, SMS night)
   with `--rows` earlier deliveries in the table (5,000 customers over 30 days).

Prints one JSON line per measurement. Default database: a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def timed(name: str, n: int, fn: Callable[[int], Any], **extra: Any) -> None:
    ms = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        ms.append((time.perf_counter() - t) * 1000)
    p50, p95 = round(statistics.median(ms), 3), round(pct(ms, 0.95), 3)
    print(json.dumps({"measure": name, "n": n, "p50_ms": p50, "p95_ms": p95, **extra}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--database-url")
    args = ap.parse_args()

    from billops.actions.email import send_email
    from billops.actions.settings import OutboundWebhook
    from billops.actions.sms import send_sms
    from billops.actions.webhooks import deliver_webhook, new_secret
    from billops.config import Settings
    from billops.drafting.grounding import check
    from billops.drafting.privacy import redact
    from billops.drafting.schema import output_model
    from billops.drafting.service import template_draft
    from billops.policy import load_policy
    from support.channels import running_smtp, scripted, twilio_created
    from support.llm import sample

    for kind in ("urgent_email", "sms", "case_summary"):
        facts, local = sample(kind)
        d = template_draft(kind, facts, local, "recovery-v1")
        out = output_model(kind).model_validate(d.output)

        def draft(_i: int, kind: str = kind, facts: Any = facts, local: Any = local) -> None:
            template_draft(kind, facts, local, "recovery-v1")

        def ground(_i: int, kind: str = kind, out: Any = out, facts: Any = facts) -> None:
            check(kind, out, facts)

        timed(f"template_draft:{kind}", args.n, draft)
        timed(f"grounding_check:{kind}", args.n, ground)
    text = "Call me at +1 415 555 0100 or write to jane.doe@example.com; card 4242 4242 4242 4242. " * 12
    timed("redact_1kb", args.n, lambda _i: redact(text[:1024]))

    tmp = Path(tempfile.mkdtemp())
    with running_smtp() as smtp, scripted(twilio_created()) as http:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=tmp,
            **smtp.settings(),
            twilio_account_sid="AC0123456789abcdef0123456789abcdef",
            twilio_auth_token="bench-token",
            twilio_messaging_service_sid="MG0123456789abcdef0123456789abcdef",
            twilio_api_url=http.url,
        )
        body = template_draft("urgent_email", *sample("urgent_email"), "recovery-v1").body
        hook = OutboundWebhook(name="bench", url=f"{http.url}/hooks", secret=new_secret())  # type: ignore[arg-type]
        data = {
            "workflow_id": "wf",
            "platform": "stripe",
            "customer_id": "cus_1",
            "invoice_id": "in_1",
            "status": "recovered",
            "detail": {},
        }

        def email(i: int) -> None:
            send_email(
                settings,
                to=f"c{i}@example.com",
                subject="Payment failed",
                text=body,
                idempotency_key=f"bench:{i}",
                unsubscribe_url="https://billops.example.com/unsubscribe/x",
            )

        def sms(i: int) -> None:
            send_sms(settings, to="+14155550100", body="Payment failed", idempotency_key=f"bench:{i}")

        def webhook(i: int) -> None:
            deliver_webhook(hook, event_type="recovery.finished", msg_id=f"msg_{i}", data=data, timeout=5)

        timed("send_email_local_smtp", args.n, email)
        timed("send_sms_local_http", args.n, sms)
        timed("deliver_webhook_signed_local_http", args.n, webhook)

    from billops.governance import guardrails
    from billops.governance.rollout import Subject
    from billops.store.db import Database
    from billops.store.models import Delivery

    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    db = Database(url)
    db.migrate()
    now = datetime.now(UTC)
    rng = random.Random(7)
    with db.session() as s:
        s.add_all(
            Delivery(
                key=f"bench:{i}",
                workflow_id=f"wf{i}",
                step="1:send_sms",
                channel=rng.choice(["email", "sms"]),
                platform="stripe",
                customer_id=f"cus_{rng.randrange(5000)}",
                status="sent",
                attempts=1,
                detail={},
                created_at=now - timedelta(minutes=rng.randrange(30 * 24 * 60)),
            )
            for i in range(args.rows)
        )
    policy = load_policy()

    def one(i: int) -> None:
        sub = Subject(
            workflow="recovery",
            platform="stripe",
            customer_id=f"cus_{i % 5000}",
            currency="usd",
            amount_minor=5000,
            timezone="America/New_York",
        )
        with db.session() as s:
            guardrails.check_action(
                s,
                policy,
                wf=f"new{i}",
                step="2:send_sms",
                action={"type": "send_sms"},
                sub=sub,
                human_approved=False,
                now=now,
            )

    timed("contact_guardrails_sms", args.n, one, rows=args.rows, database=db.safe_url.split(":")[0])


if __name__ == "__main__":
    main()
