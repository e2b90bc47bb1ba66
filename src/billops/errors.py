"""The BillOps error family: every error carries a message for humans and an HTTP status."""

from __future__ import annotations


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
