"""Delivering a recovery's messages and the team's notifications: durable steps with retries and
backoff, one `deliveries` row per workflow step so that a replay never resends a recorded message.

- `message_link` asks the platform for a fresh card-update link (Stripe billing portal session,
  Chargebee hosted page, …) just before the message goes, keyed `<wf>:<step>:link`. Links are never
  built by hand; without one the text points at the account's billing page, and says so in the record.
- `send_message` reads the draft from the decision (after an approval: the text the human approved),
  the address from the mirror, and sends through the channel. Retryable errors (timeouts, 5xx, 429,
  SMTP 4xx) raise, so DBOS retries the step with exponential backoff; a permanent error is recorded
  and returned. The result is stored on the decision, in `deliveries` and in the audit log
  (`action.send_email` / `action.send_sms`) in one transaction, and counted by the KPIs.
- `send_webhook` / `send_slack` do the same for outbound webhooks (Standard Webhooks signatures; the
  webhook-id is stable per step, so receivers can dedupe) and Slack alerts.

Delivery is at-least-once. Before each attempt a `sending` row is committed; once the provider accepts,
the row becomes `sent` with the provider's id (in the same transaction as the decision and the audit
record), and a replay that finds it returns it without sending. Neither SMTP nor Twilio's Messages API can
deduplicate a request, so a worker that dies in the instant between the provider's acceptance and that
commit (or a send that times out after the provider took it) makes the replay send the message again.
Such a resend is recorded with `possible_duplicate: true`; an email keeps the Message-ID derived from the
step's key (actions/email.py), so the receiving side can recognise the copy, and an outbound webhook keeps
its webhook-id. An SMS is looked up in Twilio's message log first (`find_sent_sms`): one already there is
recorded as sent, not sent again. The row stays one per step. No message text or address is stored in
`deliveries` (only a digest of the address).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from dbos import DBOS
from sqlalchemy.orm import Session

from billops.domain import Customer, Invoice, Money
from billops.errors import DeliveryError, PlatformError
from billops.governance import audit, contacts
from billops.governance.schema import MESSAGE_ACTIONS
from billops.mirror import Mirror
from billops.recovery.steps import _record_action
from billops.runtime import get_runtime
from billops.store.models import Approval, Decision, Delivery

LINK_SLOT = "{card_update_link}"
NO_LINK = "your account's billing page"
FINAL = ("sent", "failed", "skipped")
# What a final `deliveries` row keeps of a result (no text, no address).
_DETAIL_KEYS = ("why", "code", "kind", "event", "endpoint", "possible_duplicate", "found_in_provider_log")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError | PlatformError) and bool(exc.retryable)


def digest(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()


def message_for(plan: dict[str, Any], action: dict[str, Any]) -> dict[str, Any] | None:
    """The drafted message an action sends (by kind), from the stored plan."""
    kind = (action.get("detail") or {}).get("message")
    return next((m for m in plan.get("messages", []) if m.get("kind") == kind), None)


def _replayed(key: str) -> dict[str, Any] | None:
    with get_runtime().db.reader() as s:
        row = s.get(Delivery, key)
        if row is None or row.status not in FINAL:
            return None
        return {"status": row.status, "provider_id": row.provider_id, "replayed": True, **(row.detail or {})}


def _mark_sending(key: str, *, wf: str, step: str, channel: str, platform: str | None, customer: str | None,
                  recipient: str | None) -> datetime | None:  # fmt: skip
    """The `sending` row, committed before the provider is called (one more attempt each time). When an
    earlier attempt ended without a known outcome (the worker died while sending, or the send timed out),
    the provider may have accepted that one, and this attempt may deliver a second copy: then the time
    the first attempt began, else None."""
    with get_runtime().db.session() as s:
        row = s.get(Delivery, key, with_for_update=True)
        if row is None:
            row = Delivery(
                key=key,
                workflow_id=wf,
                step=step,
                channel=channel,
                platform=platform,
                customer_id=customer,
                status="sending",
                attempts=0,
                recipient_digest=digest(recipient) if recipient else None,
                detail={},
            )
            s.add(row)
        last = dict(row.detail or {})
        uncertain = (
            row.status == "sending"
            and (row.attempts or 0) >= 1
            and (row.error is None or last.get("last_error_code") in ("timeout", "no-answer"))
        )
        row.status = "sending"
        row.attempts = (row.attempts or 0) + 1
        uncertain = uncertain or bool(last.get("uncertain_earlier_attempt"))  # once unknown, it stays so
        row.error = None  # the error, if any, of this attempt (see _note_error)
        row.detail = {"uncertain_earlier_attempt": True} if uncertain else {}
        return row.created_at if uncertain else None


def _note_error(key: str, exc: DeliveryError | PlatformError) -> None:
    """A retryable failure of this attempt (the step retries): its message and code. A timeout leaves the
    outcome unknown (the provider may have taken the message)."""
    with get_runtime().db.session() as s:
        row = s.get(Delivery, key, with_for_update=True)
        if row is not None:
            row.error = exc.message[:1000]
            row.detail = {**(row.detail or {}), "last_error_code": exc.code}


def _settle(key: str, status: str, result: dict[str, Any], *, wf: str, step: str, channel: str,
            platform: str | None, customer: str | None) -> Callable[[Session], None]:  # fmt: skip
    """The delivery row's final state, written in the same transaction as the decision and audit."""

    def write(s: Session) -> None:
        row = s.get(Delivery, key, with_for_update=True)
        if row is None:
            row = Delivery(
                key=key, workflow_id=wf, step=step, channel=channel, platform=platform,
                customer_id=customer, attempts=0, detail={},
            )  # fmt: skip
            s.add(row)
        row.status = status
        row.provider_id = result.get("provider_id")
        row.error = result.get("error")
        row.detail = {k: v for k, v in result.items() if k in _DETAIL_KEYS}

    return write


# ------------------------------------------------------------------ customer messages


@DBOS.step(
    name="message_link",
    retries_allowed=True,
    max_attempts=4,
    interval_seconds=2,
    backoff_rate=2,
    should_retry=_retryable,
)
def message_link(wf: str, step: str, action: dict[str, Any]) -> dict[str, Any]:
    """A fresh card-update link from the platform for this message (links expire: made at send time),
    only when the text has a place for one and the message can actually go out."""
    from billops.actions.base import channel_unavailable

    rt = get_runtime()
    with rt.db.reader() as s:
        dec = s.get(Decision, wf)
        assert dec is not None
        platform, customer = dec.platform, dec.customer_id
        msg = message_for(dec.plan, action)
    if msg is None or LINK_SLOT not in f"{msg.get('subject') or ''} {msg.get('body') or ''}":
        return {"url": None, "why": "the message has no card-update link"}
    if (why := channel_unavailable(rt.settings, MESSAGE_ACTIONS[action["type"]])) is not None:
        return {"url": None, "why": why}
    client = rt.platform_client(platform)
    if client is None or not client.capabilities.card_update_link or not customer:
        return {"url": None, "why": f"{platform} offers no card-update link here"}
    try:
        url = client.card_update_link(customer, return_url=None, idempotency_key=f"{wf}:{step}:link")
    except PlatformError as exc:
        if exc.retryable:
            raise
        return {"url": None, "why": exc.message}
    return {"url": url}


@DBOS.step(
    name="send_message",
    retries_allowed=True,
    max_attempts=6,
    interval_seconds=2,
    backoff_rate=2,
    should_retry=_retryable,
)
def send_message(wf: str, step: str, action: dict[str, Any], link: str | None) -> dict[str, Any]:
    """Send one drafted message to the customer (email or SMS). See the module docstring."""
    from billops.actions.base import channel_unavailable
    from billops.actions.email import send_email
    from billops.actions.sms import find_sent_sms, is_opt_out_code, send_sms

    rt = get_runtime()
    settings, policy = rt.settings, rt.policy()
    key = f"{wf}:{step}"
    channel = MESSAGE_ACTIONS[action["type"]]
    replay = _replayed(key)
    if replay is not None:
        return replay
    with rt.db.reader() as s:
        dec = s.get(Decision, wf)
        assert dec is not None
        msg = message_for(dec.plan, action)
        platform, customer_id = dec.platform, dec.customer_id
        cust = Mirror(s).get(Customer, platform, customer_id) if customer_id else None
    address = (cust.email if channel == "email" else cust.phone) if cust is not None else None
    base = {
        "channel": channel,
        "kind": (action.get("detail") or {}).get("message"),
        "recipient_digest": digest(address) if address else None,
    }
    why = None
    if msg is None:
        why = "no drafted message for this action"
    elif (unavailable := channel_unavailable(settings, channel)) is not None:
        why = unavailable
    elif not address:
        why = f"customer has no {'email address' if channel == 'email' else 'phone number'} on file"
    record: dict[str, Any] = {
        "wf": wf, "step": step, "channel": channel, "platform": platform, "customer": customer_id,
    }  # fmt: skip
    inputs = {"key": key, "action": action}
    if why is not None:
        result = {**base, "status": "skipped", "why": why}
        _record_action(
            wf, step, f"action.{action['type']}", inputs, result, _settle(key, "skipped", result, **record)
        )
        return result
    assert msg is not None and address is not None
    rec = msg.get("record") or {}
    versions = {
        k: v
        for k, v in {
            "template": msg.get("template"),
            "templates": rec.get("template_version"),
            "prompt": rec.get("prompt_version"),
            "model": rec.get("model"),
        }.items()
        if v
    }
    body = str(msg["body"]).replace(LINK_SLOT, link or NO_LINK)
    subject = str(msg.get("subject") or "").replace(LINK_SLOT, link or NO_LINK)
    if channel == "sms" and "STOP" not in body:
        body = body.rstrip() + " Reply STOP to opt out."
    unknown_since = _mark_sending(
        key, wf=wf, step=step, channel=channel, platform=platform, customer=customer_id, recipient=address
    )
    found = None
    if unknown_since is not None and channel == "sms":
        try:  # Twilio takes no idempotency key: read its log before sending again
            found = find_sent_sms(settings, to=address, body=body, since=unknown_since)
        except DeliveryError:
            found = None  # cannot tell: send (at least once)
    try:
        if channel == "email":
            receipt = send_email(
                settings,
                to=address,
                subject=subject,
                text=body,
                idempotency_key=key,
                unsubscribe_url=contacts.unsubscribe_url(settings, platform, str(customer_id), "email"),
                unsubscribe_mailto=policy.contact.unsubscribe_mailto,
            )
        else:
            receipt = found or send_sms(settings, to=address, body=body, idempotency_key=key)
    except DeliveryError as exc:
        if exc.retryable:
            _note_error(key, exc)
            raise
        result = {**base, "status": "failed", "error": exc.message, "code": exc.code}
        opted = channel == "sms" and exc.code is not None and is_opt_out_code(exc.code)
        refusal = exc.message

        def also(s: Session) -> None:
            _settle(key, "failed", result, **record)(s)
            if opted and customer_id:
                contacts.add_optout(
                    s, platform, customer_id, "sms", source="provider", by="twilio",
                    why=f"the SMS provider refused: {refusal}",
                )  # fmt: skip

        _record_action(wf, step, f"action.{action['type']}", inputs, result, also, versions)
        return result
    result = {
        **base,
        "status": "sent",
        "provider_id": receipt.provider_id,
        "link": "platform" if link else "none",
    }
    if found is not None:
        result["found_in_provider_log"] = True  # the earlier attempt was delivered: not sent again
    elif unknown_since is not None:  # an earlier attempt may have been delivered too (same Message-ID)
        result["possible_duplicate"] = True
    sent = _settle(key, "sent", result, **record)
    _record_action(wf, step, f"action.{action['type']}", inputs, result, sent, versions)
    return result


@DBOS.step(name="message_gave_up")
def message_gave_up(wf: str, step: str, action: dict[str, Any], error: str) -> dict[str, Any]:
    """Retries ran out (the provider kept failing): a permanent failure, recorded and surfaced."""
    key = f"{wf}:{step}"
    channel = MESSAGE_ACTIONS.get(action["type"], "email")
    with get_runtime().db.reader() as s:
        dec = s.get(Decision, wf)
        assert dec is not None
        record: dict[str, Any] = {
            "wf": wf,
            "step": step,
            "channel": channel,
            "platform": dec.platform,
            "customer": dec.customer_id,
        }
    result = {
        "channel": channel,
        "status": "failed",
        "error": f"not delivered: {error[:400]}",
        "code": "gave_up",
    }
    _record_action(
        wf, step, f"action.{action['type']}", {"key": key}, result, _settle(key, "failed", result, **record)
    )
    return result


# ------------------------------------------------------------------ the team's channels


@DBOS.step(name="notification_plan")
def notification_plan(wf: str, event: str, step: str | None, detail: dict[str, Any]) -> dict[str, Any]:
    """What to tell the team about `event`: the outbound webhook data (no customer PII) and the Slack
    text, and who subscribes. Computed once (a step), so a replay sends the same content."""
    from billops.actions.webhooks import endpoints_for

    rt = get_runtime()
    settings = rt.settings
    if event == "workflow.failed":  # from billops.ops.watch: about a workflow, not a decision; data = detail
        text = f"Workflow {detail['workflow_id']} ({detail['function']}) failed: {detail['error'][:300]}"
        return {"event": event, "occurred_at": datetime.now(UTC).isoformat(), "data": detail,
                "endpoints": [e.name for e in endpoints_for(settings, event)],
                "slack": f"{text}\nRetry: billops workflows resume {detail['workflow_id']}"
                if settings.slack_webhook_url is not None else None}  # fmt: skip
    with rt.db.reader() as s:
        dec = s.get(Decision, wf)
        assert dec is not None
        inv = Mirror(s).get(Invoice, dec.platform, dec.invoice_id)
        appr = s.scalar(sa.select(Approval).where(Approval.workflow_id == wf))
        money = Money(amount=dec.amount, currency=dec.currency)
        base = {"workflow_id": wf, "platform": dec.platform, "customer_id": dec.customer_id}
        approval_url = (
            f"{settings.public_url.rstrip('/')}/console/approvals/{appr.id}"
            if appr is not None and settings.public_url
            else None
        )
        slack: str | None = None
        if event == "recovery.escalated":
            plan = dec.plan
            summary = next((m for m in plan.get("messages", []) if m.get("kind") == "case_summary"), None)
            note = next((m for m in plan.get("messages", []) if m.get("kind") == "internal_note"), None)
            out = (summary or {}).get("output") or {}
            data: dict[str, Any] = {
                **base,
                "invoice": {
                    "id": dec.invoice_id,
                    "number": inv.number if inv is not None else None,
                    "amount_minor": dec.amount,
                    "currency": dec.currency.lower(),
                    "amount": money.format(),
                },
                "route": dec.route,
                "score": dec.score,
                "reasons": list(plan.get("reasons", []))[:8],
                "case_summary": {
                    "headline": out.get("headline") or (plan.get("reasons") or [""])[0],
                    "risk_factors": list(out.get("risk_factors") or plan.get("reasons", [])[1:6]),
                    "payment_history": out.get("payment_history") or "",
                    "next_steps": list(out.get("next_steps") or []),
                    "negotiation_points": list(out.get("negotiation_points") or []),
                },
                "summary_text": (summary or {}).get("body") or "",
                "approval_url": approval_url,
            }
            text = (note or {}).get("body") or data["case_summary"]["headline"]
            slack = (
                f"Recovery needs a human: {money.format()} ({dec.platform} invoice {dec.invoice_id}). {text}"
            )
            if approval_url:
                slack += f"\nReview: {approval_url}"
        elif event == "recovery.finished":
            data = {**base, "invoice_id": dec.invoice_id, "status": detail.get("status", dec.status),
                    "detail": {k: v for k, v in detail.items() if k != "status"}}  # fmt: skip
        elif event == "message.failed":
            data = {**base, "step": step or "", "channel": detail.get("channel", ""),
                    "error": str(detail.get("error", ""))[:500], "code": detail.get("code"),
                    "attempts": int(detail.get("attempts", 1))}  # fmt: skip
            slack = (
                f"A {data['channel']} message for {dec.platform} invoice {dec.invoice_id} could not be "
                f"delivered: {data['error']}"
            )
        else:
            raise ValueError(f"unknown notification event {event!r}")
    return {
        "event": event,
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": data,
        "endpoints": [e.name for e in endpoints_for(settings, event)],
        "slack": slack if settings.slack_webhook_url is not None else None,
    }


def _notify_key(wf: str, event: str, step: str | None, target: str) -> str:
    return f"{wf}:{event}:{step or '-'}:{target}"


@DBOS.step(
    name="send_webhook",
    retries_allowed=True,
    max_attempts=6,
    interval_seconds=2,
    backoff_rate=2,
    should_retry=_retryable,
)
def send_webhook(
    wf: str, event: str, step: str | None, endpoint_name: str, data: dict[str, Any], occurred_at: str
) -> dict[str, Any]:
    from billops.actions.webhooks import deliver_webhook

    rt = get_runtime()
    key = _notify_key(wf, event, step, f"webhook:{endpoint_name}")
    replay = _replayed(key)
    if replay is not None:
        return replay
    endpoint = next((e for e in rt.settings.outbound_webhooks if e.name == endpoint_name), None)

    def send() -> Any:
        assert endpoint is not None
        return deliver_webhook(
            endpoint,
            event_type=event,
            msg_id="msg_" + hashlib.sha256(key.encode()).hexdigest()[:32],
            data=data,
            timeout=rt.settings.http_timeout_seconds,
            occurred_at=datetime.fromisoformat(occurred_at),
        )

    missing = "endpoint no longer configured" if endpoint is None else None
    return _notify_once(key, wf, event, step, "webhook", endpoint_name, missing, send)


@DBOS.step(
    name="send_slack",
    retries_allowed=True,
    max_attempts=6,
    interval_seconds=2,
    backoff_rate=2,
    should_retry=_retryable,
)
def send_slack(wf: str, event: str, step: str | None, text: str) -> dict[str, Any]:
    from billops.actions.slack import post_slack

    rt = get_runtime()
    key = _notify_key(wf, event, step, "slack")
    replay = _replayed(key)
    if replay is not None:
        return replay
    missing = "no Slack webhook configured" if rt.settings.slack_webhook_url is None else None
    return _notify_once(
        key, wf, event, step, "slack", "slack", missing, lambda: post_slack(rt.settings, text=text)
    )


def _notify_once(key: str, wf: str, event: str, step: str | None, channel: str, endpoint: str,
                 missing: str | None, send: Callable[[], Any]) -> dict[str, Any]:  # fmt: skip
    """One notification attempt: skipped when the receiver is not configured; else `sending`, the call,
    and the final state. A retryable error raises (the step retries with backoff)."""
    base = {"event": event, "endpoint": endpoint}
    if missing is not None:
        return _notified(key, wf, channel, {**base, "status": "skipped", "why": missing})
    unknown_since = _mark_sending(
        key, wf=wf, step=step or event, channel=channel, platform=None, customer=None, recipient=None
    )
    try:
        receipt = send()
    except DeliveryError as exc:
        if exc.retryable:
            _note_error(key, exc)
            raise
        return _notified(
            key, wf, channel, {**base, "status": "failed", "error": exc.message, "code": exc.code}
        )
    sent = {**base, "status": "sent", "provider_id": receipt.provider_id}
    if unknown_since is not None:  # the receiver dedupes on the stable webhook-id
        sent["possible_duplicate"] = True
    return _notified(key, wf, channel, sent)


@DBOS.step(name="notification_gave_up")
def notification_gave_up(wf: str, event: str, step: str | None, target: str, error: str) -> dict[str, Any]:
    key = _notify_key(wf, event, step, target)
    channel = "slack" if target == "slack" else "webhook"
    result = {"event": event, "endpoint": target.split(":", 1)[-1], "status": "failed",
              "error": f"not delivered: {error[:400]}", "code": "gave_up"}  # fmt: skip
    return _notified(key, wf, channel, result)


def _notified(key: str, wf: str, channel: str, result: dict[str, Any]) -> dict[str, Any]:
    """A notification's final state: its delivery row and an audit record, in one transaction."""
    with get_runtime().db.session() as s:
        dec = s.get(Decision, wf)
        _settle(key, result["status"], result, wf=wf, step=result["event"], channel=channel,
                platform=dec.platform if dec else None, customer=None)(s)  # fmt: skip
        audit.record(
            s,
            action=f"notification.{result['status']}",
            workflow_id=wf,
            trace_id=dec.trace_id if dec else None,
            subject=f"{dec.platform}:invoice:{dec.invoice_id}" if dec else None,
            inputs={"key": key, "channel": channel},
            outcome=result,
            at=datetime.now(UTC),
        )
    return result
