"""The durable workflows (DBOS). `process_event` runs once per accepted webhook, under the workflow id
`<platform>:<event id>`: it applies the event to the mirror, starts (or joins) a payment recovery on a
failed payment, and tells running recoveries when their invoice settles or the card is updated.

A recovery: claim the invoice (one recovery, and one decision, per invoice episode: a later failure
is recorded on the episode's decision, recovery/episodes.py) → gather context → decide and record →
by mode: shadow (stop), assist (durable wait for a human, with a timeout and a default outcome),
auto (execute; human_review routes still wait for a human). Execution waits for each retry time
with a durable timer that wakes early when the invoice settles elsewhere.

Replay determinism (DESIGN.md, DBOS notes): workflow code makes the same durable calls in the same
order on every replay, whatever the clock or the configuration says. Everything that decides control
flow comes from a recorded step (policy values, who listens for notifications); every wait is one
`DBOS.recv` (recorded as the recv and its deadline) even when its time has already passed, and the
deadline DBOS recorded on the first run is the one a replay waits for.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from dbos import DBOS, SetWorkflowID
from dbos._error import DBOSNonExistentWorkflowError

from billops.governance.schema import MESSAGE_ACTIONS
from billops.platforms.registry import missing_client_reason
from billops.recovery import delivery, drafts, steps
from billops.runtime import get_runtime

APPROVAL_TOPIC = "approval"
INVOICE_TOPIC = "invoice_events"


def followup_id(decision_workflow_id: str) -> str:
    """The workflow that waits (for approval, for retry times) after a decision. It runs outside the
    events queue so that long waits never hold a queue slot."""
    return f"{decision_workflow_id}:followup"


@DBOS.workflow(name="process_event")
def process_event(inbox_id: int) -> dict[str, Any]:
    applied = steps.apply_event(inbox_id)
    event = applied["event"]
    kind, platform = event["kind"], event["platform"]
    invoice = event.get("invoice")
    result: dict[str, Any] = {"kind": kind, "mirror": applied["changed"]}

    if kind == "payment_failed" and invoice and invoice.get("status") == "open":
        result["recovery"] = recover(event, applied["trace_id"])
    elif invoice and invoice.get("status") in steps.SETTLED:
        for wf in steps.find_recoveries_to_notify(platform, invoice["id"], None):
            if wf != DBOS.workflow_id:
                _notify(wf, {"type": "settled", "status": invoice["status"]})
        result["notified"] = "settled"
    elif kind == "payment_method_updated" and not event["event_type"].endswith(".detached"):
        pm = event.get("payment_method") or {}
        for wf in steps.find_recoveries_to_notify(platform, None, pm.get("customer_id")):
            _notify(wf, {"type": "card_updated", "payment_method": pm.get("id")})
        result["notified"] = "card_updated"
    return result


def _notify(recovery_wf: str, message: dict[str, Any]) -> None:
    """Tell a running recovery's waiting workflow about its invoice. A recovery that is still deciding,
    or that never waits (shadow), has no follow-up workflow: nothing is waiting, so nothing to tell
    (a retry never pays a settled invoice anyway: the client checks first)."""
    try:
        DBOS.send(followup_id(recovery_wf), message, topic=INVOICE_TOPIC)
    except DBOSNonExistentWorkflowError:
        DBOS.logger.info(
            "recovery %s has no follow-up workflow: %s not delivered", recovery_wf, message["type"]
        )


def recover(event: dict[str, Any], trace_id: str) -> dict[str, Any]:
    wf = DBOS.workflow_id
    assert wf is not None
    platform, invoice_id = event["platform"], event["invoice"]["id"]
    owner = steps.claim_invoice(platform, invoice_id, wf)
    if owner != wf:  # a running recovery, or a decision whose episode is open: the failure is recorded there
        recorded = steps.record_episode_failure(owner, event, wf)
        return {"status": "joined", "recovery": owner, "attempts": recorded.get("attempts")}

    gathered = steps.gather_context(event, True)
    wait = float(gathered.get("wait_seconds", 0.0))  # recorded with the first read: same on replay
    waited = 0.0
    while not gathered["ready"] and not gathered["settled"] and waited < wait:
        # The charge's decline details often arrive a moment after the invoice event.
        DBOS.sleep(1.0)  # a fixed positive duration: always one recorded sleep
        waited += 1.0
        gathered = steps.gather_context(event, False)
    if gathered["settled"]:
        steps.finish(wf, platform, invoice_id, "settled_before_decision", {})
        return {"status": "settled_before_decision"}

    decision = steps.decide_and_record(wf, event["event_id"], gathered["context"], trace_id)
    status = decision["status"]
    if status == "attached":  # a racing worker opened this episode's decision first: recorded there
        steps.finish(wf, platform, invoice_id, "attached", {})
        return {"status": "joined", "recovery": decision["owner"]}
    if status == "recorded":  # shadow
        if _llm_drafts(decision):  # what the model would have written, recorded beside the decision
            drafts.redraft(wf, decision)
        steps.finish(wf, platform, invoice_id, "recorded", {"mode": "shadow"})
        return {"status": "recorded", "route": decision["route"]}

    with SetWorkflowID(followup_id(wf)):
        DBOS.start_workflow(recovery_followup, {**decision, "event": event})
    return {"status": status, "route": decision["route"], "followup": followup_id(wf)}


@DBOS.workflow(name="recovery_followup")
def recovery_followup(decision: dict[str, Any]) -> dict[str, Any]:
    wf, platform, invoice_id = decision["workflow_id"], decision["platform"], decision["invoice_id"]
    rt = get_runtime()
    if _llm_drafts(decision):
        # Before anyone sees or sends them, here rather than in process_event so that model latency
        # never holds an events-queue slot; the model calls are durable steps of this workflow.
        decision = {**decision, **drafts.redraft(wf, decision)}
    if decision["status"] == "awaiting_approval":
        steps.request_approval(wf)
        if decision["route"] == "human_review":
            notify_team_async(wf, "recovery.escalated")
        # Only the first run's value matters: DBOS records the deadline, a replay waits for that one.
        timeout = rt.policy().approvals.timeout_hours * 3600
        msg = DBOS.recv(APPROVAL_TOPIC, timeout_seconds=timeout)
        verdict = msg if msg is not None else steps.expire_approval(wf)
        if not verdict.get("approved"):
            final = "rejected" if verdict.get("status") != "expired" else "expired"
            return {
                **_done(wf, platform, invoice_id, final, {"by": verdict.get("by")}),
                "route": decision["route"],
            }
    return execute(decision)


def _llm_drafts(decision: dict[str, Any]) -> bool:
    d = decision["plan"].get("drafting") or {}
    return d.get("backend") == "llm" and not d.get("stored")


def execute(decision: dict[str, Any]) -> dict[str, Any]:
    wf = decision["workflow_id"]
    platform, invoice_id = decision["platform"], decision["invoice_id"]
    # The stored plan: after an approval it is the one the human approved, edits included.
    decision = {**decision, **steps.load_decision(wf)}
    plan = steps.plan_of(decision)
    for i, action in enumerate(plan.actions):
        if action.type in ("retry_payment", "human_review"):
            continue
        step = f"{i}:{action.type}"
        payload = action.model_dump(mode="json")
        if action.type in MESSAGE_ACTIONS:
            # A message may have to wait for the customer's quiet hours to end: its own durable
            # workflow waits, so the rest of the plan (the retries) keeps its times.
            with SetWorkflowID(f"{wf}:{step}"):
                DBOS.start_workflow(deliver_message, wf, step, payload)
            continue
        gate = _guarded(wf, step, payload)
        if gate == "settled":
            return _done(wf, platform, invoice_id, "settled_elsewhere", {"during": step})
        if gate != "allow":
            continue
        try:
            steps.platform_action(wf, step, payload)
        except Exception as exc:  # retries exhausted: recorded by DBOS; go on with the rest of the plan
            steps.record_failure(wf, step, action.type, repr(exc))
            DBOS.logger.warning("action %s failed for %s: %s", action.type, wf, exc)

    retries = [a for a in plan.actions if a.type == "retry_payment"]
    if not steps.can_retry(platform):
        why = f"{missing_client_reason(platform)}: no payment can be retried"
        return _done(wf, platform, invoice_id, "not_executed", {"why": why})
    if not retries and plan.retry_blocked and plan.route in ("no_retry", "retry_and_notify"):
        # No blind retry: wait for new card data, then try once with it.
        msg = _wait(plan_window_seconds(decision))
        if msg is None:
            return _done(wf, platform, invoice_id, "exhausted", {"why": "no new card data within the window"})
        if msg["type"] == "settled":
            return _done(wf, platform, invoice_id, "settled_elsewhere", {"status": msg.get("status")})
        retries_to_run: list[tuple[int, datetime | None, str | None]] = [(1, None, msg.get("payment_method"))]
    else:
        retries_to_run = [(int(a.detail["n"]), a.at, a.detail.get("payment_method")) for a in retries]

    queue = list(retries_to_run)
    while queue:
        n, at, pm = queue.pop(0)
        if at is not None:
            msg = _wait_until(at)
            if msg is not None and msg["type"] == "settled":
                return _done(wf, platform, invoice_id, "settled_elsewhere", {"status": msg.get("status")})
        gate = _guarded(wf, f"pay:{n}", {"type": "retry_payment", "detail": {"n": n}})
        if gate == "settled":
            return _done(wf, platform, invoice_id, "settled_elsewhere", {"retry": n})
        if gate != "allow":
            return _done(wf, platform, invoice_id, "stopped", {"why": f"guardrail stopped retry {n}"})
        try:
            res = steps.retry_payment(wf, n, pm)
        except Exception as exc:
            res = {"status": "failed", "error": str(exc), "never_retry": False}
            steps.record_failure(wf, f"pay:{n}", "retry_payment", str(exc))
        if res["status"] in ("succeeded", "already_settled"):
            return _done(
                wf,
                platform,
                invoice_id,
                "recovered" if res["status"] == "succeeded" else "settled_elsewhere",
                {"retry": n},
            )
        if res["status"] == "skipped":
            return _done(wf, platform, invoice_id, "not_executed", {"why": res.get("why")})
        if res.get("never_retry"):
            return _done(wf, platform, invoice_id, "stopped", {"why": f"hard decline on retry {n}"})
        if decision.get("mode") == "auto" and decision.get("event"):
            # Re-plan the remaining retries with what this failure taught (new decline, one more attempt).
            gathered = steps.gather_context(decision["event"], False)
            if gathered["settled"]:
                return _done(wf, platform, invoice_id, "settled_elsewhere", {"retry": n})
            new = steps.replan(wf, n, gathered["context"])
            if new.get("retries") is not None:
                times = [datetime.fromisoformat(t) for t in new["retries"]]
                queue = [(n + 1 + i, t, None) for i, t in enumerate(times)]
                if not queue:
                    return _done(wf, platform, invoice_id, "exhausted", {"retries": n, "why": new.get("why")})
    return _done(wf, platform, invoice_id, "exhausted", {"retries": len(retries_to_run)})


MAX_DEFERRALS = 20


@DBOS.workflow(name="deliver_message")
def deliver_message(wf: str, step: str, action: dict[str, Any]) -> dict[str, Any]:
    """One drafted message of a recovery: guardrails first (opt-out, frequency cap, quiet hours, SMS
    night, rate limits, kill switch), then a fresh card-update link from the platform when the text has
    one, then the send (a durable step retried with backoff; recorded once per step)."""
    gate = _guarded(wf, step, action)
    if gate != "allow":
        return {"status": gate}
    try:
        link = delivery.message_link(wf, step, action)
    except Exception as exc:  # the platform kept failing: the text points at the billing page instead
        DBOS.logger.warning("no card-update link for %s %s: %s", wf, step, exc)
        link = {"url": None, "why": str(exc)}
    try:
        result = delivery.send_message(wf, step, action, link.get("url"))
    except Exception as exc:  # retries exhausted
        result = delivery.message_gave_up(wf, step, action, repr(exc))
    if result["status"] == "failed" and not result.get("replayed"):
        notify_team_async(wf, "message.failed", step, {**result, "attempts": result.get("attempts", 1)})
    return result


@DBOS.workflow(name="notify_team")
def notify_team(wf: str, event: str, step: str | None, detail: dict[str, Any]) -> dict[str, Any]:
    """Tell the team's systems: outbound webhooks (Standard Webhooks) and Slack, each a durable step
    retried with backoff and recorded once (`deliveries`, audit `notification.*`)."""
    plan = delivery.notification_plan(wf, event, step, detail)
    out: dict[str, Any] = {}
    for name in plan["endpoints"]:
        try:
            out[name] = delivery.send_webhook(wf, event, step, name, plan["data"], plan["occurred_at"])
        except Exception as exc:
            out[name] = delivery.notification_gave_up(wf, event, step, f"webhook:{name}", repr(exc))
    if plan["slack"]:
        try:
            out["slack"] = delivery.send_slack(wf, event, step, plan["slack"])
        except Exception as exc:
            out["slack"] = delivery.notification_gave_up(wf, event, step, "slack", repr(exc))
    return out


SLACK_EVENTS = steps.SLACK_EVENTS


def notify_team_async(
    wf: str, event: str, step: str | None = None, detail: dict[str, Any] | None = None
) -> None:
    """Start `notify_team` in its own workflow (a slow receiver never holds up the recovery), only when
    someone listens: an outbound webhook subscribed to the event, or Slack for escalations/failures
    (decided by a recorded step, so a replay starts the same workflows)."""
    if not steps.team_listens(event):
        return
    with SetWorkflowID(f"{wf}:notify:{event}:{step or '-'}"):
        DBOS.start_workflow(notify_team, wf, event, step, detail or {})


def _guarded(wf: str, step: str, action: dict[str, Any]) -> str:
    """Ask the guardrails before an action: 'allow', 'block', or 'settled' (the invoice settled while a
    deferral waited). A deferral (rate limit, quiet hours) waits durably until its time, then asks again."""
    for attempt in range(MAX_DEFERRALS):
        verdict = steps.guard(wf, step, action, attempt)
        if verdict["effect"] == "allow":
            return "allow"
        if verdict["effect"] != "defer":
            return "block"
        msg = _wait_until(datetime.fromisoformat(verdict["not_before"]), at_least=1.0)
        if msg is not None and msg["type"] == "settled":
            return "settled"
    return "block"


def _wait_until(at: datetime, *, at_least: float = 0.0) -> dict[str, Any] | None:
    """Wait until `at` (aware UTC). The clock is read only to size the first run's timer: DBOS records
    the deadline before it waits, and a replay (after a crash, before or after `at`) returns the
    recorded message or waits out the recorded deadline, never this value."""
    return _wait(max(at_least, at.timestamp() - time.time()))


def _wait(seconds: float) -> dict[str, Any] | None:
    """A durable timer that returns early with a message about the invoice (settled, card updated).
    Always exactly one `DBOS.recv`, a zero timeout included, so the recorded sequence never depends on
    whether the time had passed when the workflow (re)ran."""
    return DBOS.recv(INVOICE_TOPIC, timeout_seconds=max(0.0, seconds))


def plan_window_seconds(decision: dict[str, Any]) -> float:
    return float(get_runtime().policy().recovery.window_days * 86400)


def _done(wf: str, platform: str, invoice_id: str, status: str, detail: dict[str, Any]) -> dict[str, Any]:
    steps.finish(wf, platform, invoice_id, status, detail)
    notify_team_async(wf, "recovery.finished", None, {"status": status, **detail})
    return {"status": status, **detail}
