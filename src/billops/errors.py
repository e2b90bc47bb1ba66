"""The BillOps error family: every error carries a message for humans and an HTTP status."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field


class BillopsError(Exception):
    """Base error. `status` is the HTTP status an API answers with; the CLI prints `message`."""

    status: int = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class ConfigError(BillopsError):
    """Invalid settings or policy file: start-up stops with this message."""

    status = 500


class InputError(BillopsError):
    """Bad input from a caller (CLI argument, CSV, request body)."""

    status = 400


class WebhookRejected(BillopsError):
    """A webhook request that fails authentication or validation. Nothing is stored."""

    status = 400


class NotFound(BillopsError):
    status = 404


class Conflict(BillopsError):
    status = 409


class DeliveryError(BillopsError):
    """A message or notification could not be delivered. `retryable` errors (timeouts, 5xx, 429,
    SMTP 4xx) are retried by the delivery step with backoff; the others are permanent and recorded."""

    status = 502

    def __init__(self, message: str, *, channel: str, retryable: bool, code: str | None = None) -> None:
        super().__init__(message)
        self.channel = channel
        self.retryable = retryable
        self.code = code


class PlatformError(BillopsError):
    """A billing platform API call failed."""

    status = 502

    def __init__(self, message: str, *, retryable: bool = False, code: str | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


# ---------------------------------------------------------------- the API's error answer (docs/access.md)

# A short machine-readable name for each status an answer can carry.
ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal_error",
    502: "upstream_error",
    503: "unavailable",
}


class Problem(BaseModel):
    """One invalid input of a 422 answer: where it is, what is wrong, and the kind of check that failed."""

    loc: list[str | int] = Field(description='Where: ["query", "currency"], ["body", "edits", "drop", 0], …')
    msg: str = Field(description="What is wrong, for humans.")
    type: str = Field(description="The check that failed, e.g. `missing`, `string_pattern_mismatch`.")


class ErrorBody(BaseModel):
    """Every 4xx (and 5xx) answer of BillOps's HTTP API and webhook routes has this shape."""

    error: str = Field(description="What is wrong, for humans.")
    status: int = Field(description="The HTTP status, repeated.")
    code: str = Field(description="A stable name for the status: " + ", ".join(ERROR_CODES.values()) + ".")
    detail: str = Field(description="The same text as `error` (kept for clients that read `detail`).")
    problems: list[Problem] = Field(
        default_factory=list, description="For `invalid_input` (422): each invalid input; else empty."
    )


def error_body(status: int, message: str, problems: list[Problem] | None = None) -> dict[str, Any]:
    """The JSON of an error answer."""
    code = ERROR_CODES.get(status)
    if code is None:
        try:
            code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            code = "error"
    return ErrorBody(
        error=message, status=status, code=code, detail=message, problems=problems or []
    ).model_dump()


# What each status means on an /api operation (the OpenAPI `responses` of the operations that can give it).
ERROR_MEANINGS: dict[int, str] = {
    400: "The request body is not valid JSON, not UTF-8, nested too deeply, or holds NUL characters "
    "or lone surrogates.",
    401: "No API token, or an invalid or expired one.",
    403: "The token's user has a lower role than this operation needs.",
    404: "What the path names does not exist.",
    409: "The change conflicts with the current state (already done, already exists, last admin).",
    413: "The request body is larger than the API accepts.",
    422: "A parameter or the body is invalid: `problems` says which and why.",
    429: "Too many attempts: wait and try again.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for the given statuses, all answered with `ErrorBody`."""
    return {s: {"model": ErrorBody, "description": ERROR_MEANINGS.get(s, "Error.")} for s in statuses}
