"""Outbound webhooks over real HTTP to a local receiver that verifies every request with the
standardwebhooks package, the committed JSON schemas, and `billops webhooks …`."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from typer.testing import CliRunner

from billops.actions.cli import webhooks_app
from billops.actions.events import EVENT_MODELS, sample_data, schema_for, write_schemas
from billops.actions.settings import OutboundWebhook
from billops.actions.webhooks import build_request, deliver_webhook, endpoints_for, message_id, new_secret
from billops.errors import DeliveryError, InputError
from support.channels import Reply, ScriptedServer, free_port
from support.loopback import RecordedRequest

from .conftest import make_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhook-events"
SECRET = new_secret()
Start = Callable[[Callable[[RecordedRequest], Reply]], ScriptedServer]


class Receiver:
    """A receiver as its docs tell it to be written: verify, then parse. Keeps what it verified."""

    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.verified: list[dict[str, Any]] = []
        self.rejected: list[str] = []

    def __call__(self, req: RecordedRequest) -> Reply:
        try:
            payload = self.webhook.verify(req.body, req.headers)
        except WebhookVerificationError as exc:
            self.rejected.append(str(exc))
            return 400, "bad signature", "text/plain"
        self.verified.append(payload)
        return 204, "", "text/plain"


def _endpoint(url: str, **kw: Any) -> OutboundWebhook:
    return OutboundWebhook(name="helpdesk", url=url + "/hooks/billops", secret=SecretStr(SECRET), **kw)


def test_delivered_signed_and_verifiable(http_server: Start) -> None:
    receiver = Receiver(SECRET)
    srv = http_server(receiver)
    data = sample_data("recovery.escalated")
    occurred = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    msg_id = message_id("stripe:evt_1", "notify-escalated")
    receipt = deliver_webhook(
        _endpoint(srv.url),
        event_type="recovery.escalated",
        msg_id=msg_id,
        data=data,
        timeout=5,
        occurred_at=occurred,
    )
    [req] = srv.requests
    assert req.path == "/hooks/billops" and req.status == 204
    assert req.header("webhook-id") == msg_id and msg_id.startswith("msg_")
    assert req.header("content-type") == "application/json" and req.header("user-agent") == "billops"
    assert abs(int(req.header("webhook-timestamp") or 0) - datetime.now(UTC).timestamp()) < 60
    assert (req.header("webhook-signature") or "").startswith("v1,")
    assert receiver.verified == [
        {"type": "recovery.escalated", "timestamp": "2025-03-01T12:00:00Z", "data": data}
    ]
    assert receipt.channel == "webhook" and receipt.provider_id == msg_id
    assert receipt.detail == {"status_code": 204, "endpoint": "helpdesk", "event": "recovery.escalated"}


def test_tampered_body_or_wrong_secret_fails_verification(http_server: Start) -> None:
    receiver = Receiver(SECRET)
    srv = http_server(receiver)
    body, headers = build_request(
        _endpoint(srv.url), event_type="message.failed", msg_id="msg_x", data=sample_data("message.failed")
    )
    Webhook(SECRET).verify(body, headers)  # the untouched request verifies
    tampered = body.replace(b'"attempts":1', b'"attempts":9')
    assert tampered != body
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    resp = httpx.post(srv.url + "/hooks/billops", content=tampered, headers=headers)
    assert resp.status_code == 400 and receiver.rejected == ["No matching signature found"]
    assert receiver.verified == []


def test_503_retryable_then_resend_keeps_msg_id_and_body(http_server: Start) -> None:
    receiver = Receiver(SECRET)
    srv = http_server(receiver)
    srv.reply_with((503, "busy", "text/plain"))
    endpoint = _endpoint(srv.url)
    args: dict[str, Any] = {
        "event_type": "recovery.finished",
        "msg_id": message_id("stripe:evt_2", "notify-finished"),
        "data": sample_data("recovery.finished"),
        "timeout": 5,
        "occurred_at": datetime(2025, 3, 2, tzinfo=UTC),
    }
    with pytest.raises(DeliveryError) as err:
        deliver_webhook(endpoint, **args)
    assert err.value.retryable and err.value.code == "http-503" and err.value.channel == "webhook"
    deliver_webhook(endpoint, **args, now=datetime.now(UTC) + timedelta(seconds=2))
    first, second = srv.requests
    assert [first.status, second.status] == [503, 204]
    assert first.header("webhook-id") == second.header("webhook-id") == args["msg_id"]
    assert first.body == second.body  # same event, same envelope: the receiver de-duplicates on the id
    assert first.header("webhook-timestamp") != second.header("webhook-timestamp")  # fresh signature
    assert len(receiver.verified) == 1


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (410, False), (409, False), (408, True),
                                                   (429, True), (500, True), (301, False)])  # fmt: skip
def test_status_mapping(http_server: Start, status: int, retryable: bool) -> None:
    srv = http_server(lambda r: (status, "no", "text/plain"))
    with pytest.raises(DeliveryError) as err:
        deliver_webhook(
            _endpoint(srv.url),
            event_type="message.failed",
            msg_id="msg_1",
            data=sample_data("message.failed"),
            timeout=5,
        )
    assert err.value.retryable is retryable and err.value.code == f"http-{status}"
    assert "/hooks/billops" not in str(err.value)  # endpoints are named, their URLs not printed


def test_timeout_and_refused_are_retryable(http_server: Start) -> None:
    srv = http_server(lambda r: (204, "", "text/plain"))
    srv.delay = 1.0
    data = sample_data("message.failed")
    with pytest.raises(DeliveryError) as err:
        deliver_webhook(_endpoint(srv.url), event_type="message.failed", msg_id="m", data=data, timeout=0.2)
    assert err.value.retryable and err.value.code == "timeout"
    dead = _endpoint(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DeliveryError) as err:
        deliver_webhook(dead, event_type="message.failed", msg_id="m", data=data, timeout=2)
    assert err.value.retryable and err.value.code == "connection"


def test_bad_data_is_refused_before_sending(http_server: Start) -> None:
    srv = http_server(lambda r: (204, "", "text/plain"))
    endpoint = _endpoint(srv.url)
    bad_cases: list[tuple[str, dict[str, Any]]] = [
        ("message.failed", {**sample_data("message.failed"), "attempts": 0}),
        ("message.failed", {**sample_data("message.failed"), "email": "jane@customer.example"}),
        (
            "recovery.escalated",
            {k: v for k, v in sample_data("recovery.escalated").items() if k != "invoice"},
        ),
        ("recovery.finished", sample_data("message.failed")),
        ("invoice.paid", {}),
    ]
    for event_type, data in bad_cases:
        with pytest.raises(InputError):
            deliver_webhook(endpoint, event_type=event_type, msg_id="msg_1", data=data, timeout=5)
    with pytest.raises(InputError):
        deliver_webhook(
            endpoint,
            event_type="message.failed",
            msg_id="msg 1",
            data=sample_data("message.failed"),
            timeout=5,
        )
    assert srv.requests == []


def test_endpoints_for_and_secret(tmp_path: Path) -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert new_secret() != secret
    settings = make_settings(
        tmp_path,
        outbound_webhooks=[
            {
                "name": "crm",
                "url": "https://crm.example/in",
                "secret": secret,
                "events": ["recovery.finished"],
            },
            {"name": "desk", "url": "https://desk.example/in", "secret": secret},
        ],
    )
    assert [e.name for e in endpoints_for(settings, "recovery.finished")] == ["crm", "desk"]
    assert [e.name for e in endpoints_for(settings, "message.failed")] == ["desk"]
    with pytest.raises(InputError):
        endpoints_for(settings, "nope")


def test_committed_schemas_match_models(tmp_path: Path) -> None:
    written = write_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{e}.schema.json" for e in EVENT_MODELS)
    for path in written:
        committed = DOCS / path.name
        assert committed.exists(), f"{committed} missing: run `billops webhooks schemas`"
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `billops webhooks schemas`"
        )
    escalated = schema_for("recovery.escalated")
    assert escalated["properties"]["type"]["const"] == "recovery.escalated"
    assert escalated["required"] == ["type", "timestamp", "data"]
    data_def = escalated["$defs"]["RecoveryEscalated"]
    assert data_def["additionalProperties"] is False
    assert {"invoice", "case_summary", "approval_url"} <= set(data_def["required"])
    # No event schema has a field for personal data: receivers look customers up by id.
    fields: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            fields.update(node.get("properties", {}))
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    collect([schema_for(e) for e in EVENT_MODELS])
    assert {"workflow_id", "customer_id", "amount_minor", "negotiation_points"} <= fields
    assert not {f for f in fields if any(w in f for w in ("email", "phone", "name", "address"))}


def test_cli_secret_schemas_and_test(
    tmp_path: Path, http_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    result = runner.invoke(webhooks_app, ["secret"])
    assert result.exit_code == 0
    OutboundWebhook(
        name="x", url="https://x.example", secret=SecretStr(result.output.strip())
    )  # a valid secret

    result = runner.invoke(webhooks_app, ["schemas", "--out", str(tmp_path / "schemas")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "schemas").iterdir()) == sorted(
        f"{e}.schema.json" for e in EVENT_MODELS
    )

    receiver = Receiver(SECRET)
    srv = http_server(receiver)
    monkeypatch.chdir(tmp_path)
    endpoints = [{"name": "helpdesk", "url": srv.url + "/in", "secret": SECRET}]
    monkeypatch.setenv("BILLOPS_OUTBOUND_WEBHOOKS", json.dumps(endpoints))
    monkeypatch.setenv("BILLOPS_DATA_DIR", str(tmp_path))
    result = runner.invoke(webhooks_app, ["test", "helpdesk", "--event", "message.failed"])
    assert result.exit_code == 0, result.output
    assert "HTTP 204" in result.output
    [payload] = receiver.verified
    assert payload["type"] == "message.failed" and payload["data"] == sample_data("message.failed")

    result = runner.invoke(webhooks_app, ["test", "nobody"])
    assert isinstance(result.exception, InputError) and "helpdesk" in str(result.exception)
