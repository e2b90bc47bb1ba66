"""How API token secrets and console passwords are hashed.

- API token secrets are 32 random bytes, so a slow hash buys nothing: they are stored as
  `hmac-sha256:<key id>:<hex>` — HMAC-SHA256 over `<token id>:<secret>` under a key kept OUTSIDE the
  database (settings.token_key, else a random key in <data_dir>/token.key, 0600, made once). A database
  reader cannot test guesses without the key; verifying costs microseconds, the same for an unknown id
  (a dummy digest is compared) as for a real one.
- Tokens stored before migration 0005 hold an argon2 hash (`$argon2…`). They keep working: verified once
  with argon2 (at most one such check at a time per process, so they cannot eat every core), then
  re-stored keyed (`rekeyed_hash`).
- Console passwords use argon2id with t=2, m=19 MiB, p=1 (the OWASP minimum profile, ~30 ms here);
  older hashes are upgraded at the next successful login (`needs_rehash`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from billops.config import Settings
from billops.errors import ConfigError

HMAC_PREFIX = "hmac-sha256"
ARGON2_TIME_COST, ARGON2_MEMORY_KIB, ARGON2_PARALLELISM = 2, 19 * 1024, 1
LEGACY_WAIT_SECONDS = 1.0  # a queued legacy check fails closed after this, so threads are not held

passwords = PasswordHasher(
    time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM
)
_keys: dict[Path, bytes] = {}
_keys_lock = threading.Lock()
_legacy = threading.BoundedSemaphore(1)  # argon2 checks of pre-0005 token hashes, per process


@dataclass(frozen=True)
class TokenKey:
    secret: bytes = b""

    @property
    def kid(self) -> str:
        return hashlib.sha256(b"billops-token-key:" + self.secret).hexdigest()[:8]


def token_key(settings: Settings) -> TokenKey:
    """The token HMAC key: settings.token_key, else <data_dir>/token.key (made once, 0600)."""
    if settings.token_key is not None:
        return TokenKey(settings.token_key.get_secret_value().encode())
    path = (settings.data_dir / "token.key").resolve()
    with _keys_lock:
        if path not in _keys:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    key = path.read_bytes().strip()
                else:
                    key = secrets.token_urlsafe(48).encode()
                    with os.fdopen(fd, "wb") as f:
                        f.write(key)
            except OSError as exc:
                raise ConfigError(
                    f"cannot read or create the API token key {path} ({exc.strerror}): set BILLOPS_TOKEN_KEY "
                    "or make the data directory writable"
                ) from exc
            if len(key) < 32:
                raise ConfigError(
                    f"{path}: the token key is too short; set BILLOPS_TOKEN_KEY or fix the file"
                )
            _keys[path] = key
        return TokenKey(_keys[path])


def _digest(key: TokenKey, token_id: int, secret: str) -> str:
    return hmac.new(key.secret, f"{token_id}:{secret}".encode(), hashlib.sha256).hexdigest()


def keyed_hash(key: TokenKey, token_id: int, secret: str) -> str:
    return f"{HMAC_PREFIX}:{key.kid}:{_digest(key, token_id, secret)}"


def is_legacy(stored: str) -> bool:
    return stored.startswith("$argon2")


def verify_token_secret(stored: str | None, key: TokenKey, token_id: int, secret: str) -> bool:
    """Whether `secret` is the one `stored` was made from. `stored=None` (no such token) does the same
    keyed work against a dummy and fails. A legacy argon2 hash is checked with argon2, one at a time."""
    given = _digest(key, token_id, secret)
    if stored is None or not stored.startswith(HMAC_PREFIX + ":"):
        if stored is not None and is_legacy(stored):
            return _verify_legacy(stored, secret)
        hmac.compare_digest(given, "0" * 64)
        return False
    _prefix, kid, want = [*stored.split(":", 2), "", ""][:3]
    same_key = hmac.compare_digest(kid, key.kid)
    return hmac.compare_digest(given, want) and same_key


def _verify_legacy(stored: str, secret: str) -> bool:
    if not _legacy.acquire(timeout=LEGACY_WAIT_SECONDS):
        return False  # fail closed when a flood of legacy checks is queued
    try:
        return _verify_argon2(stored, secret)
    finally:
        _legacy.release()


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate from a form must not raise


def _verify_argon2(stored: str, secret: str) -> bool:
    try:
        return passwords.verify(stored, _bytes(secret))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# ---------------------------------------------------------------- console passwords


def hash_password(password: str) -> str:
    return passwords.hash(_bytes(password))


@functools.cache
def _dummy_password_hash() -> str:
    """Made at the first login attempt, not at import (a CLI start pays nothing)."""
    return passwords.hash("not-a-real-password-" + secrets.token_hex(8))


def verify_password(stored: str | None, password: str) -> bool:
    """argon2 verification; `stored=None` (unknown user, no console login) spends the same work on a dummy."""
    if stored is None:
        _verify_argon2(_dummy_password_hash(), password)
        return False
    return _verify_argon2(stored, password)


def needs_rehash(stored: str) -> bool:
    try:
        return passwords.check_needs_rehash(stored)
    except InvalidHashError:
        return True
