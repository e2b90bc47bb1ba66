"""A local fake of the two Twilio Messages API calls BillOps makes, on 127.0.0.1: create a message
(`POST /2010-04-01/Accounts/{sid}/Messages.json`, form `To`, `Body`, `MessagingServiceSid` | `From`,
HTTP Basic with the account SID and auth token; 201 with the Message resource) and list messages
(`GET` on the same path, filters `To`, `From`, `PageSize`; newest first, `{"messages": [...]}`).

Like Twilio, it keeps no idempotency keys: every accepted POST is one more text message, whatever
headers it carries. `lose_answer_next()` accepts the next message and closes the connection without
answering (a worker killed, or a timeout, after Twilio took it).

    with FakeTwilioAPI() as twilio:
        settings = Settings(twilio_api_url=twilio.url, twilio_account_sid=twilio.account_sid, ...)
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from support.loopback import LoopbackServer, RecordedRequest, read_request

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "twilio-test-token"
_PATH = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/Messages\.json$")


class FakeTwilioAPI(LoopbackServer):
    thread_name = "fake-twilio"

    def __init__(
        self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN, host: str = "127.0.0.1"
    ) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.messages: list[dict[str, Any]] = []  # oldest first
        self._lose = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._listen(host)

    def lose_answer_next(self) -> None:
        with self._lock:
            self._lose += 1

    def _answer(self, rec: RecordedRequest) -> tuple[int, dict[str, Any], bool]:
        """(status, body, drop the connection instead of answering)."""
        m = _PATH.match(rec.path)
        if m is None:
            return 404, {"code": 20404, "message": "The requested resource was not found"}, False
        if rec.basic_credentials != (self.account_sid, self.auth_token) or m.group(1) != self.account_sid:
            return 401, {"code": 20003, "message": "Authenticate"}, False
        if rec.method == "GET":
            q = rec.params
            size = max(1, min(int(q.get("PageSize") or 50), 1000))
            found = [
                msg
                for msg in reversed(self.messages)
                if ("To" not in q or msg["to"] == q["To"]) and ("From" not in q or msg["from"] == q["From"])
            ]
            return 200, {"messages": found[:size], "page_size": size}, False
        form = rec.form
        if not form.get("To") or not form.get("Body"):
            return 400, {"code": 21602, "message": "Message body is required."}, False
        msg = {
            "sid": f"SM{next(self._ids):032x}",
            "account_sid": self.account_sid,
            "to": form["To"],
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form["Body"],
            "status": "accepted" if form.get("MessagingServiceSid") else "queued",
            "date_created": format_datetime(datetime.now(UTC)),
            "date_sent": None,
        }
        self.messages.append(msg)
        lose = self._lose > 0
        if lose:
            self._lose -= 1
        return 201, dict(msg), lose

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _serve(self) -> None:
                rec = read_request(self)
                with api._lock:
                    api.requests.append(rec)
                    status, body, lose = api._answer(rec)
                if lose:
                    self.close_connection = True
                    return
                data = json.dumps(body).encode()
                rec.status = status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

        return Handler
