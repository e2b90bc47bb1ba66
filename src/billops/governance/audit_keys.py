"""The audit chain's HMAC keys: kept outside the database, one active key id, older ids kept for verifying.

Where the keys come from, in this order:

1. settings: `BILLOPS_AUDIT_KEYS` = `{"<key id>": "<secret, 32+ characters>", …}` and `BILLOPS_AUDIT_KEY_ID`
   (the id new records are signed with; optional when there is one key). Give every worker the same
   value; rotate by adding an id, pointing `BILLOPS_AUDIT_KEY_ID` at it and keeping the old ones.
2. otherwise the key file `<data_dir>/audit.keys` (JSON `{"active": id, "keys": {id: secret}}`), created
   with mode 0600 on first use; `billops audit rotate-key` adds a key to it and makes it active.

A process reads the key file again when it changes (one `stat` per append), so a rotation made by the CLI
is picked up by running workers without a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from billops.errors import ConfigError

if TYPE_CHECKING:
    from billops.config import Settings

KEY_FILE = "audit.keys"
KEY_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,40}$")
MIN_SECRET_CHARS = 32


@dataclass(frozen=True)
class Keyring:
    """The keys by id and the id new records are signed with. `source` says where they came from."""

    active_id: str
    keys: dict[str, bytes] = field(repr=False)
    source: str

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active_id]

    def get(self, key_id: str) -> bytes | None:
        return self.keys.get(key_id)


def new_key_id() -> str:
    """A fresh id: unique across hosts, so two key files made apart never share an id."""
    return f"k{secrets.token_hex(4)}"


def new_secret() -> str:
    return secrets.token_urlsafe(48)


def _check(keys: dict[str, str], active: str | None, source: str) -> Keyring:
    if not keys:
        raise ConfigError(f"{source}: no audit keys")
    for kid, secret in keys.items():
        if not KEY_ID_RE.match(kid):
            raise ConfigError(f"{source}: audit key id {kid!r} must be 1-40 of A-Z a-z 0-9 . _ -")
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(f"{source}: audit key {kid!r} is shorter than {MIN_SECRET_CHARS} characters")
    if active is None:
        if len(keys) > 1:
            raise ConfigError(f"{source}: several audit keys; say which one signs new records (key id)")
        active = next(iter(keys))
    if active not in keys:
        raise ConfigError(f"{source}: the active audit key id {active!r} is not among the keys")
    return Keyring(active_id=active, keys={k: v.encode() for k, v in keys.items()}, source=source)


# ---------------------------------------------------------------- the key file


def key_file(settings: Settings) -> Path:
    return (settings.data_dir / KEY_FILE).resolve()


def _read_file(path: Path) -> Keyring:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        keys, active = raw["keys"], raw["active"]
        if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
            raise TypeError("keys must map ids to strings")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a valid audit key file ({exc})") from exc
    return _check(keys, active, str(path))


def _write_file(path: Path, active: str, keys: dict[str, str], *, exclusive: bool) -> None:
    """Write the key file with mode 0600, whole or not at all: a temp file, then a hard link (a new
    file: fails with FileExistsError if another process made one first) or a rename (a rotation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"active": active, "keys": keys}, indent=2).encode()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _file_keyring(path: Path) -> Keyring:
    if not path.exists():
        try:
            kid = new_key_id()
            _write_file(path, kid, {kid: new_secret()}, exclusive=True)
        except FileExistsError:  # another process made it first: use theirs
            pass
    return _read_file(path)


def rotate_file_key(settings: Settings) -> tuple[str, str]:
    """Add a new key to the key file and make it active. Returns (old id, new id)."""
    if settings.audit_keys:
        raise ConfigError(
            "the audit keys come from BILLOPS_AUDIT_KEYS: add a new id with a new secret (32+ characters) "
            "to it, keep the old ids, set BILLOPS_AUDIT_KEY_ID to the new id and restart every worker"
        )
    path = key_file(settings)
    current = _file_keyring(path)
    kid = new_key_id()
    keys = {k: v.decode() for k, v in current.keys.items()}
    keys[kid] = new_secret()
    _write_file(path, kid, keys, exclusive=False)
    forget()
    return current.active_id, kid


# ---------------------------------------------------------------- which settings, cached


_lock = threading.Lock()
_configured: Settings | None = None
_env_settings: Settings | None = None
# id(settings) -> (settings, keyring, key file or None, (mtime_ns, size, inode) of the file when read)
_by_settings: dict[int, tuple[Any, Keyring, Path | None, tuple[int, int, int] | None]] = {}


def configure(settings: Settings | None) -> None:
    """Use these settings' keys in this process when no runtime is started (the CLI calls this)."""
    global _configured
    _configured = settings


def forget() -> None:
    """Drop the cached keys (after a rotation; tests)."""
    with _lock:
        _by_settings.clear()


def _settings() -> Settings:
    global _env_settings
    from billops import runtime

    if runtime._runtime is not None:
        return runtime._runtime.settings
    if _configured is not None:
        return _configured
    if _env_settings is None:
        from billops.config import load_settings

        _env_settings = load_settings()
    return _env_settings


def keyring(settings: Settings | None = None) -> Keyring:
    """The keys of `settings` (default: the started runtime's, else the configured, else the
    environment's). Cached per settings object; the key file is re-read when it changes (one stat)."""
    s = settings or _settings()
    hit = _by_settings.get(id(s))
    if hit is not None and hit[0] is s:
        _s, ring, path, sig = hit
        if path is None:
            return ring
        try:
            st = os.stat(path)
            if (st.st_mtime_ns, st.st_size, st.st_ino) == sig:
                return ring
        except FileNotFoundError:
            pass
    with _lock:
        if len(_by_settings) > 64:
            _by_settings.clear()
        if s.audit_keys:
            ring = _check(
                {k: v.get_secret_value() for k, v in s.audit_keys.items()},
                s.audit_key_id,
                "settings BILLOPS_AUDIT_KEYS",
            )
            _by_settings[id(s)] = (s, ring, None, None)
            return ring
        path = key_file(s)
        ring = _file_keyring(path)
        st = path.stat()
        _by_settings[id(s)] = (s, ring, path, (st.st_mtime_ns, st.st_size, st.st_ino))
        return ring
