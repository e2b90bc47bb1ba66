"""Checkpoints: the audit chain's signed head, written outside the database.

A checkpoint is one JSON object: the head's `seq` and `hash`, the time of that record (`record_at`), when
it was taken (`at`), the scheduled time that took it (`scheduled_for`, or null), the audit key id and
`sig` = HMAC-SHA256 under that key of the canonical JSON of the other fields. Because each record's
hash covers every record before it, a checkpoint of (seq, hash) pins the whole log up to seq: a later
`verify --checkpoint` fails if any of it was rewritten, renumbered, cut or wiped.

Stores:
- a file: JSONL, one checkpoint per line, appended (O_APPEND, fsync, an flock around check-and-append);
- `s3://bucket/prefix`: one object per checkpoint, `<prefix><UTC time>-<seq>.json` (keys sort by time),
  on AWS S3 or any S3-compatible store (`BILLOPS_AUDIT_S3_ENDPOINT_URL`); needs `billops[s3]` (boto3),
  credentials from boto3's usual sources (AWS_ACCESS_KEY_ID, …).

A scheduled checkpoint is written at most once per scheduled time, whatever re-runs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session

from billops.errors import BillopsError, ConfigError
from billops.governance import audit
from billops.governance.audit_keys import Keyring
from billops.store.models import AuditHead, AuditRecord

if TYPE_CHECKING:
    from billops.config import Settings

VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    record_at: str | None
    at: str
    scheduled_for: str | None
    key_id: str
    sig: str = ""
    v: int = VERSION

    def body(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("sig")
        return d

    def to_json(self) -> str:
        return json.dumps({**self.body(), "sig": self.sig}, sort_keys=True, separators=(",", ":"))


def _sign(body: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, audit._canonical(body).encode(), hashlib.sha256).hexdigest()


def signed(
    ring: Keyring,
    *,
    seq: int,
    hash: str,
    record_at: str | None,
    at: datetime,
    scheduled_for: datetime | None = None,
) -> Checkpoint:
    cp = Checkpoint(
        seq=seq,
        hash=hash,
        record_at=record_at,
        at=at.astimezone(UTC).isoformat(),
        scheduled_for=scheduled_for.astimezone(UTC).isoformat() if scheduled_for else None,
        key_id=ring.active_id,
    )
    return Checkpoint(**{**cp.body(), "sig": _sign(cp.body(), ring.active_key)})


def parse(text: str, ring: Keyring, where: str) -> tuple[Checkpoint | None, str | None]:
    """One checkpoint from its JSON, signature checked: (checkpoint, None) or (None, problem)."""
    try:
        raw = json.loads(text)
        cp = Checkpoint(
            seq=int(raw["seq"]),
            hash=str(raw["hash"]),
            record_at=raw.get("record_at"),
            at=str(raw["at"]),
            scheduled_for=raw.get("scheduled_for"),
            key_id=str(raw["key_id"]),
            sig=str(raw["sig"]),
            v=int(raw.get("v", VERSION)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"{where}: not a checkpoint ({exc.__class__.__name__}: {exc})"
    key = ring.get(cp.key_id)
    if key is None:
        return None, (
            f"{where}: signed with audit key {cp.key_id!r}, which is not among this process's keys "
            f"({ring.source}): cannot check it"
        )
    if not hmac.compare_digest(_sign(cp.body(), key), cp.sig):
        return None, f"{where}: its signature does not match (forged or altered checkpoint)"
    return cp, None


# ---------------------------------------------------------------- stores


class Store(Protocol):
    where: str

    def append(self, cp: Checkpoint) -> bool:
        """Write `cp`; False when a checkpoint for the same scheduled time is already there."""
        ...

    def read(self, last: int | None = None) -> Iterator[tuple[str, str]]:
        """(where, JSON text) of every checkpoint (or of the newest `last`), oldest first."""
        ...


class FileStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def append(self, cp: Checkpoint) -> bool:
        with self._locked() as fd:
            if cp.scheduled_for is not None:
                for _where, text in self.read():
                    with contextlib.suppress(ValueError, AttributeError):
                        if json.loads(text).get("scheduled_for") == cp.scheduled_for:
                            return False
            os.write(fd, (cp.to_json() + "\n").encode())
            os.fsync(fd)
        return True

    def read(self, last: int | None = None) -> Iterator[tuple[str, str]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as fh:
            lines = [(f"{self.path}:{n}", line) for n, line in enumerate(fh, 1) if line.strip()]
        yield from lines[-last:] if last else lines


def _stamp(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


class S3Store:
    def __init__(self, url: str, settings: Settings | None) -> None:
        try:
            import boto3
        except ImportError as exc:
            raise ConfigError("s3:// checkpoints need boto3: pip install 'billops[s3]'") from exc
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(f"{url}: an s3:// URL needs a bucket (s3://bucket/prefix)")
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/" if prefix else ""
        self.where = url
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.audit_s3_endpoint_url if settings else None,
            region_name=settings.audit_s3_region if settings else None,
        )

    def _key(self, cp: Checkpoint) -> str:
        if cp.scheduled_for is not None:  # one object per scheduled time: a re-run finds it
            return f"{self.prefix}{_stamp(cp.scheduled_for)}-scheduled.json"
        return f"{self.prefix}{_stamp(cp.at)}-{cp.seq}.json"

    def append(self, cp: Checkpoint) -> bool:
        from botocore.exceptions import ClientError

        key = self._key(cp)
        if cp.scheduled_for is not None:
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
                return False
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=cp.to_json().encode(), ContentType="application/json"
        )
        return True

    def read(self, last: int | None = None) -> Iterator[tuple[str, str]]:
        """Lists the prefix (keys sort by time) and fetches every object, or only the newest `last`."""
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        ):
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json")]
        keys.sort()
        for key in keys[-last:] if last else keys:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            yield f"s3://{self.bucket}/{key}", body.decode("utf-8", "replace")


def open_store(target: str | Path, settings: Settings | None = None) -> Store:
    t = str(target)
    if t.startswith("s3://"):
        return S3Store(t, settings)
    if "://" in t:
        raise ConfigError(f"{t}: a checkpoint store is a file path or an s3://bucket/prefix URL")
    return FileStore(Path(t))


# ---------------------------------------------------------------- load, take


def load(store: Store, ring: Keyring, *, last: int | None = None) -> tuple[list[Checkpoint], list[str]]:
    """Every checkpoint in the store (or the newest `last`) with a good signature, and a problem for
    each bad one and for a checkpoint whose seq goes back (the store or the database rolled back)."""
    parsed: list[tuple[datetime, str, Checkpoint]] = []
    problems: list[str] = []
    for where, text in store.read(last):
        cp, problem = parse(text, ring, where)
        if problem:
            problems.append(problem)
        elif cp is not None:
            try:
                taken = datetime.fromisoformat(cp.at)
            except ValueError:
                problems.append(f"{where}: its time {cp.at[:40]!r} is not an ISO time")
                continue
            parsed.append((taken if taken.tzinfo else taken.replace(tzinfo=UTC), where, cp))
    # In the order they were taken (a scheduled S3 object is named by its scheduled time, which can be
    # earlier than a checkpoint taken by hand just before the schedule ran).
    parsed.sort(key=lambda item: item[0])
    good: list[Checkpoint] = []
    for _, where, cp in parsed:
        if good and cp.seq < good[-1].seq:
            problems.append(
                f"{where}: checkpoint of {cp.at} is at record {cp.seq}, behind the one before it "
                f"({good[-1].seq}): the checkpoint store or the database was rolled back"
            )
        good.append(cp)
    return good, problems


class CheckpointRefused(BillopsError):
    pass


def take(
    session: Session,
    store: Store,
    ring: Keyring,
    *,
    scheduled_for: datetime | None = None,
    now: datetime | None = None,
    legacy_until: int | None = None,
) -> tuple[Checkpoint, bool]:
    """Sign the chain's head and write it. The records since the newest checkpoint in the store are
    verified first (and that checkpoint against the chain), so a tampered log is never signed.
    Returns (checkpoint, written); written is False when this scheduled time already has one."""
    audit.snapshot(session)  # the head signed is the head of the chain just verified
    previous, problems = load(store, ring, last=3)  # the newest is enough; a few catch a rollback
    after: tuple[int, str] | None = None
    if previous:
        last = previous[-1]
        if last.seq:
            row = session.get(AuditRecord, last.seq)
            if row is None or row.hash != last.hash:
                problems.append(
                    f"record {last.seq} differs from the checkpoint of {last.at} or is gone: "
                    "the log was rewritten, cut or wiped"
                )
            else:
                after = (last.seq, last.hash)
    res = audit.verify(session, keys=ring, after=after, legacy_until=legacy_until)
    problems += res.problems
    if problems:
        raise CheckpointRefused(
            "the audit log does not verify, no checkpoint written: " + "; ".join(problems[:10]), status=409
        )
    head = session.get(AuditHead, 1)
    seq, hash_ = (head.seq, head.hash) if head else (0, audit.GENESIS)
    rec = session.get(AuditRecord, seq) if seq else None
    cp = signed(
        ring,
        seq=seq,
        hash=hash_,
        record_at=rec.at.astimezone(UTC).isoformat() if rec else None,
        at=now or datetime.now(UTC),
        scheduled_for=scheduled_for,
    )
    return cp, store.append(cp)
