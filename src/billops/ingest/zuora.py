"""Zuora callout authentication, per endpoint (`settings.zuora_webhook_endpoints[endpoint]`).

Zuora signs nothing by default; a callout template can send HTTP Basic credentials and/or an HMAC
header whose every part the tenant chooses (algorithm, signed data, header name, text around the
signature). BillOps checks what the endpoint configures, and both when both are configured:

- HTTP Basic: compared in constant time against every configured "user:password" (several during a
  rotation). Missing or wrong -> 401; the route answers with `CHALLENGE` as `WWW-Authenticate`, which
  is what Zuora's default, non-preemptive Basic auth waits for before it sends the credentials.
- HMAC: the signed data is rebuilt from `data_template` (`{body}` = the raw body, `{field}` /
  `{object.field}` = a field of the JSON body), signed with each configured secret and compared in
  constant time with the configured header (after its `prefix`). Missing or forged -> 401.
  With the default template (`{body}`) the signature is checked over the raw bytes before anything
  is parsed. A template that signs body fields needs the body parsed first: it is parsed with the
  bounded parser (billops.ingest.body), and a body that cannot be parsed, or lacks a signed field,
  cannot be authenticated -> 401.
  The body's timestamp field (Unix seconds, Unix milliseconds or ISO 8601) must be within
  `settings.webhook_tolerance_seconds` of now -> else 401 (stale or from the future).
- An authenticated body that cannot be read (not UTF-8, not JSON, nested too deeply; an unreadable
  timestamp) -> 400; a signature that is not hex/base64 -> 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from billops.config import Settings, ZuoraHmac
from billops.errors import BillopsError, NotFound, WebhookRejected
from billops.ingest.basic_auth import check_basic
from billops.ingest.body import parse_json
from billops.platforms.zuora.normalize import parse_time

CHALLENGE = 'Basic realm="billops-zuora", charset="UTF-8"'

_DIGESTS = {"sha1": hashlib.sha1, "sha224": hashlib.sha224, "sha256": hashlib.sha256,
            "sha384": hashlib.sha384, "sha512": hashlib.sha512}  # fmt: skip


def verify(settings: Settings, endpoint: str, body: bytes, headers: Mapping[str, str]) -> Any:
    """Authenticate one callout request, or raise `NotFound` / `WebhookRejected` saying what is wrong.
    Returns the parsed body when the HMAC check had to parse it (so it is parsed once), else None."""
    config = settings.zuora_webhook_endpoints.get(endpoint)
    if config is None:
        raise NotFound(f"no Zuora callout endpoint {endpoint!r} is configured")
    if config.basic:
        check_basic([c.get_secret_value() for c in config.basic], _header(headers, "authorization"))
    if config.hmac is not None:
        return _check_hmac(
            config.hmac, body, headers, settings.webhook_tolerance_seconds, settings.webhook_max_depth
        )
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


# ------------------------------------------------------------------ HTTP Basic


# ------------------------------------------------------------------ HMAC


def _check_hmac(
    config: ZuoraHmac, body: bytes, headers: Mapping[str, str], tolerance: int, max_depth: int
) -> Any:
    raw = _header(headers, config.header)
    if raw is None or not raw.strip():
        raise WebhookRejected(f"missing {config.header} header (HMAC signature)", status=401)
    value = raw.strip()
    if not value.startswith(config.prefix):
        raise WebhookRejected(
            f"{config.header} does not start with the configured prefix {config.prefix!r}", status=401
        )
    given = _decode_signature(value[len(config.prefix) :].strip(), config)
    payload: Any = None
    if _signs_fields(config):  # the signed data is read from the body: parse it (bounded) first
        try:
            payload = parse_json(body, max_depth=max_depth)
        except WebhookRejected as exc:
            raise WebhookRejected(
                f"cannot check {config.header}: it signs fields of the JSON body, and the {exc.message}",
                status=401,
            ) from None
    signed = render_signed_data(config.data_template, body, payload)
    digest = _DIGESTS[config.algorithm]
    ok = False
    for secret in config.secrets:  # compare with every key (rotation) in constant time
        mac = hmac.new(secret.get_secret_value().encode("utf-8"), signed, digest).digest()
        ok |= hmac.compare_digest(mac, given)
    if not ok:
        raise WebhookRejected(
            f"{config.header} does not match any configured HMAC secret for this endpoint", status=401
        )
    if config.timestamp_field:
        if payload is None:  # authenticated over the raw bytes: now the body may be parsed
            payload = parse_json(body, max_depth=max_depth)
        _check_fresh(payload, config.timestamp_field, tolerance)
    return payload


def _decode_signature(text: str, config: ZuoraHmac) -> bytes:
    try:
        sig = bytes.fromhex(text) if config.encoding == "hex" else base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected(f"{config.header} is not a {config.encoding} signature", status=400) from None
    if len(sig) != _DIGESTS[config.algorithm]().digest_size:
        raise WebhookRejected(
            f"{config.header} has the wrong length for an HMAC-{config.algorithm.upper()} signature",
            status=401,
        )
    return sig


def _signs_fields(config: ZuoraHmac) -> bool:
    return any(name not in ("", "body") for name, _ in _tokens(config.data_template))


def _tokens(template: str) -> list[tuple[str, str]]:
    """The template as (placeholder, "") and ("", literal) parts; `{{` / `}}` are literal braces."""
    out: list[tuple[str, str]] = []
    i, literal = 0, []
    while i < len(template):
        two = template[i : i + 2]
        if two in ("{{", "}}"):
            literal.append(two[0])
            i += 2
            continue
        if template[i] == "{":
            end = template.find("}", i)
            if end > i + 1:
                if literal:
                    out.append(("", "".join(literal)))
                    literal = []
                out.append((template[i + 1 : end], ""))
                i = end + 1
                continue
        literal.append(template[i])
        i += 1
    if literal:
        out.append(("", "".join(literal)))
    return out


def _field(payload: Any, path: str) -> Any:
    value = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def render_signed_data(template: str, body: bytes, payload: Any) -> bytes:
    """The bytes the callout signed: `{body}` is the raw body, `{a.b}` the JSON body's field a.b
    (strings as they are, other JSON values as compact JSON)."""
    parts: list[bytes] = []
    for name, literal in _tokens(template):
        if not name:
            parts.append(literal.encode("utf-8"))
        elif name == "body":
            parts.append(body)
        else:
            value = _field(payload, name)
            if value is None:  # the signature cannot be checked: not authenticated
                raise WebhookRejected(f"the signed field {name!r} is missing from the body", status=401)
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            parts.append(text.encode("utf-8"))
    return b"".join(parts)


def _check_fresh(payload: Any, field: str, tolerance: int) -> None:
    value = _field(payload, field)
    if value is None or value == "":
        raise WebhookRejected(f"the body has no {field!r} field (the signed event time)", status=400)
    try:
        when = parse_time(value, field)
    except BillopsError as exc:
        raise WebhookRejected(f"unreadable event time: {exc.message}", status=400) from exc
    assert when is not None
    age = time.time() - when.timestamp()
    if age > tolerance:
        raise WebhookRejected(
            f"stale callout: {field} {value!r} is {int(age)} s old (tolerance {tolerance} s)", status=401
        )
    if age < -tolerance:
        raise WebhookRejected(
            f"callout {field} {value!r} is in the future (tolerance {tolerance} s)", status=401
        )
