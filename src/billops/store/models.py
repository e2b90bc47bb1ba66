"""All BillOps tables. Billing objects are keyed by (platform, id) and carry the canonical JSON,
plus the columns queries need. `source_updated_at` is the platform time of the newest event applied,
so an out-of-order older event never overwrites newer state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


def _now() -> datetime:
    return datetime.now(UTC)


class InboxEvent(Base):
    """Every accepted webhook, stored raw exactly once per (platform, event_id)."""

    __tablename__ = "inbox_events"
    __table_args__ = (sa.UniqueConstraint("platform", "event_id", name="uq_inbox_platform_event"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(sa.String(20))
    event_id: Mapped[str] = mapped_column(sa.String(255))
    event_type: Mapped[str] = mapped_column(sa.String(120), index=True)
    endpoint: Mapped[str] = mapped_column(sa.String(100))
    kind: Mapped[str] = mapped_column(sa.String(40), index=True)
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=_now, index=True)
    livemode: Mapped[bool] = mapped_column(default=False)
    payload: Mapped[str] = mapped_column(sa.Text, doc="The raw body, exactly as received.")
    canonical: Mapped[dict[str, Any]] = mapped_column(doc="The normalized CanonicalEvent.")
    workflow_id: Mapped[str] = mapped_column(sa.String(300), unique=True)
    trace_id: Mapped[str] = mapped_column(sa.String(64))
    deliveries: Mapped[int] = mapped_column(default=1)
    last_delivery_at: Mapped[datetime] = mapped_column(default=_now)


class MirrorMixin:
    platform: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(doc="The canonical object as JSON.")
    source_updated_at: Mapped[datetime] = mapped_column(doc="Platform time of the newest applied change.")
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)
    source: Mapped[str] = mapped_column(sa.String(20), default="webhook", doc="webhook | sync | billops")


class CustomerRow(MirrorMixin, Base):
    __tablename__ = "customers"
    email: Mapped[str | None] = mapped_column(sa.String(320))
    created_at: Mapped[datetime | None]


class SubscriptionRow(MirrorMixin, Base):
    __tablename__ = "subscriptions"
    customer_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    status: Mapped[str] = mapped_column(sa.String(40))


class InvoiceRow(MirrorMixin, Base):
    __tablename__ = "invoices"
    customer_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    subscription_id: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[str] = mapped_column(sa.String(20), index=True)
    amount_due: Mapped[int] = mapped_column(sa.BigInteger)
    amount_remaining: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    created_at: Mapped[datetime | None]
    payment_intent_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)


class PaymentAttemptRow(MirrorMixin, Base):
    __tablename__ = "payment_attempts"
    __table_args__ = (sa.Index("ix_attempts_customer_time", "platform", "customer_id", "attempted_at"),)
    invoice_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    customer_id: Mapped[str | None] = mapped_column(sa.String(255))
    attempted_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(sa.String(20))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    decline_code: Mapped[str | None] = mapped_column(sa.String(80))
    decline_category: Mapped[str | None] = mapped_column(sa.String(20))
    card_fingerprint: Mapped[str | None] = mapped_column(sa.String(120), index=True)
    payment_intent_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)


class PaymentMethodRow(MirrorMixin, Base):
    __tablename__ = "payment_methods"
    customer_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    detached: Mapped[bool] = mapped_column(default=False)


class Decision(Base):
    """One decision per recovery workflow: the route, the score, the plan, the drafts, its state."""

    __tablename__ = "decisions"
    # One decision per invoice episode (migration 0008): `<platform>:<invoice id>:<episode number>`,
    # unique, so two workers racing on two failures of one invoice cannot open two decisions. NULL only
    # on rows from before 0008 that were a later duplicate of their invoice's first decision.
    __table_args__ = (sa.Index("uq_decisions_episode", "episode_key", unique=True),)

    workflow_id: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    episode_key: Mapped[str | None] = mapped_column(sa.String(320), default=None)
    workflow: Mapped[str] = mapped_column(sa.String(40), default="recovery")
    platform: Mapped[str] = mapped_column(sa.String(20))
    invoice_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    customer_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    event_id: Mapped[str] = mapped_column(sa.String(255))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    route: Mapped[str] = mapped_column(sa.String(30), index=True)
    score: Mapped[int]
    decline_code: Mapped[str | None] = mapped_column(sa.String(80))
    decline_category: Mapped[str | None] = mapped_column(sa.String(20))
    mode: Mapped[str] = mapped_column(sa.String(10), index=True)
    status: Mapped[str] = mapped_column(sa.String(30), index=True)
    plan: Mapped[dict[str, Any]] = mapped_column(doc="retries, actions, messages, reasons, context notes")
    versions: Mapped[dict[str, Any]]
    trace_id: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=_now, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)
    outcome: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ActiveRecovery(Base):
    """At most one recovery runs per invoice; a second failure event joins the running one."""

    __tablename__ = "active_recoveries"
    platform: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(sa.String(300))
    started_at: Mapped[datetime] = mapped_column(default=_now)


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    workflow_id: Mapped[str] = mapped_column(sa.String(300), unique=True)
    status: Mapped[str] = mapped_column(sa.String(20), index=True, doc="pending|approved|rejected|expired")
    reason_for_review: Mapped[str] = mapped_column(sa.Text)
    requested_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(sa.String(200))
    decided_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(sa.Text)
    guardrails: Mapped[list[Any]] = mapped_column(
        default=list, doc="The guardrails that sent this decision to a human: [{rule, reason}]"
    )
    edits: Mapped[dict[str, Any]] = mapped_column(default=dict, doc="What the approver changed")


class AuditRecord(Base):
    """Append-only, hash-chained. `hash` = HMAC-SHA256 under the key `key_id` (kept outside the database)
    of prev_hash + canonical JSON of the record; records from before 0006 have no key_id and a plain
    sha256 (governance/audit.py)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor_type: Mapped[str] = mapped_column(sa.String(10), doc="system|model|human")
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(80), index=True)
    workflow_id: Mapped[str | None] = mapped_column(sa.String(300), index=True)
    trace_id: Mapped[str | None] = mapped_column(sa.String(64))
    subject: Mapped[str | None] = mapped_column(sa.String(300))
    versions: Mapped[dict[str, Any]]
    input_digest: Mapped[str | None] = mapped_column(sa.String(64))
    outcome: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    key_id: Mapped[str | None] = mapped_column(sa.String(40), default=None, doc="None: legacy sha256")


class AuditHead(Base):
    """The chain's newest (seq, hash): deleting records at the end is detected against it."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int]
    hash: Mapped[str] = mapped_column(sa.String(64))


class SyncCursor(Base):
    """Backfill progress per (platform, resource), so `billops sync` resumes where it stopped."""

    __tablename__ = "sync_cursors"
    platform: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    resource: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(sa.String(255))
    done: Mapped[bool] = mapped_column(default=False)
    count: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class PlatformWrite(Base):
    """The at-most-once ledger for platform writes where the platform keeps no idempotency keys
    (Recurly): a row is committed as `pending` before the request goes out and marked `done` with
    the result after it; a replay of the same key finds it (see platforms/ledger.py)."""

    __tablename__ = "platform_writes"

    key: Mapped[str] = mapped_column(sa.String(400), primary_key=True)
    operation: Mapped[str] = mapped_column(sa.String(120))
    status: Mapped[str] = mapped_column(sa.String(20), doc="pending | done")
    started_at: Mapped[datetime] = mapped_column(default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(default=1, doc="How many times the request was sent.")
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)


# ---------------------------------------------------------------- governance: people and access


class User(Base):
    """A person or service that uses the console or the API. Passwords only as argon2 hashes."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(sa.String(100), unique=True)
    role: Mapped[str] = mapped_column(sa.String(10), doc="viewer | operator | admin")
    password_hash: Mapped[str | None] = mapped_column(sa.String(200), doc="None: API tokens only")
    created_at: Mapped[datetime] = mapped_column(default=_now)
    created_by: Mapped[str] = mapped_column(sa.String(200))
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # Unused since 0005 (login back-off lives in login_throttles); kept for older readers, always 0/None.
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)


class ApiToken(Base):
    """A bearer token `bo_<id>_<secret>`: only a hash of the secret is kept, `hmac-sha256:<key id>:<hex>`
    keyed outside the database (governance/token_secrets.py), or `$argon2id$…` from before 0005."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    token_hash: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class ConsoleSession(Base):
    """A console login. The cookie carries a signed random id; only its sha256 is stored here."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(default=_now)


class LoginThrottle(Base):
    """Failed console logins per scope (governance/login_throttle.py): `pair` = (account, client),
    `client` = one client over every account, `account` = one account over every client. The account
    is the username as typed (known or not), so the rows never tell whether a user exists."""

    __tablename__ = "login_throttles"

    scope: Mapped[str] = mapped_column(sa.String(10), primary_key=True, doc="pair | client | account")
    account: Mapped[str] = mapped_column(sa.String(100), primary_key=True, doc="'' for scope client")
    client: Mapped[str] = mapped_column(sa.String(64), primary_key=True, doc="'' for scope account")
    failures: Mapped[int] = mapped_column(default=0, doc="failures since the window began")
    first_failure_at: Mapped[datetime]
    last_failure_at: Mapped[datetime] = mapped_column(index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(default=None)
    unaudited: Mapped[int] = mapped_column(default=0, doc="failures not yet in an audit record")
    audited_at: Mapped[datetime | None] = mapped_column(default=None)


# ---------------------------------------------------------------- governance: controls and counters


class GovernanceState(Base):
    """Process-wide switches shared by every worker: the kill switch and the circuit breaker."""

    __tablename__ = "governance_state"

    key: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    value: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class GovernedAction(Base):
    """Every action the guardrails let through or stopped, with its amount: caps, rate limits and
    the circuit breaker count from here."""

    __tablename__ = "governed_actions"
    __table_args__ = (
        sa.Index("ix_governed_customer_time", "platform", "customer_id", "at"),
        sa.Index("ix_governed_time", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=_now)
    workflow_id: Mapped[str] = mapped_column(sa.String(300), index=True)
    step: Mapped[str] = mapped_column(sa.String(80))
    platform: Mapped[str] = mapped_column(sa.String(20))
    customer_id: Mapped[str | None] = mapped_column(sa.String(255))
    action: Mapped[str] = mapped_column(sa.String(40))
    amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(20), doc="allowed | blocked | done | failed")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class StepEffect(Base):
    """Reliability (migration 0007): the result of a step's database effects, written in the same
    transaction as those effects. A step re-run after a crash between its commit and DBOS recording
    its output finds its row and returns the stored result instead of counting or auditing again."""

    __tablename__ = "step_effects"

    workflow_id: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(200), primary_key=True, doc="e.g. guard:pay:1:0")
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=_now)


class FeedbackLabel(Base):
    """A human's verdict on a decision (approved, rejected, edited, expired): a training label."""

    __tablename__ = "feedback_labels"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    workflow_id: Mapped[str] = mapped_column(sa.String(300), index=True)
    label: Mapped[str] = mapped_column(sa.String(20))
    by: Mapped[str] = mapped_column(sa.String(200))
    at: Mapped[datetime] = mapped_column(default=_now)
    why: Mapped[str | None] = mapped_column(sa.Text)
    edits: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ContactOptOut(Base):
    """A customer who asked not to be contacted on a channel ('all' covers every channel). Every
    customer-facing message checks here first; unsubscribe links, the API and the CLI write here."""

    __tablename__ = "contact_optouts"
    __table_args__ = (sa.UniqueConstraint("platform", "customer_id", "channel", name="uq_optout"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(sa.String(20))
    customer_id: Mapped[str] = mapped_column(sa.String(255))
    channel: Mapped[str] = mapped_column(sa.String(10), doc="all | email | sms")
    source: Mapped[str] = mapped_column(sa.String(40), doc="unsubscribe_link | api | cli | provider")
    by: Mapped[str] = mapped_column(sa.String(200))
    why: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[datetime] = mapped_column(default=_now)


class Delivery(Base):
    """One outgoing message or notification, keyed `<workflow id>:<step>`: a resend of the same step
    finds its row and never sends twice. No message text or address here (the decision holds the
    draft); `recipient_digest` lets support match a complaint without storing the address."""

    __tablename__ = "deliveries"
    __table_args__ = (
        sa.Index("ix_deliveries_customer_time", "platform", "customer_id", "channel", "created_at"),
        sa.Index("ix_deliveries_time", "created_at"),
    )

    key: Mapped[str] = mapped_column(sa.String(400), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(sa.String(300), index=True)
    step: Mapped[str] = mapped_column(sa.String(80))
    channel: Mapped[str] = mapped_column(sa.String(20), doc="email | sms | slack | webhook")
    platform: Mapped[str | None] = mapped_column(sa.String(20))
    customer_id: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[str] = mapped_column(sa.String(20), doc="sending | sent | failed | skipped")
    provider_id: Mapped[str | None] = mapped_column(sa.String(300))
    recipient_digest: Mapped[str | None] = mapped_column(sa.String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class LlmUsage(Base):
    """Tokens spent per LLM draft: the daily budget sums `input_tokens + output_tokens` per UTC day."""

    __tablename__ = "llm_usage"
    __table_args__ = (sa.Index("ix_llm_usage_day", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    day: Mapped[str] = mapped_column(sa.String(10), doc="UTC date YYYY-MM-DD")
    at: Mapped[datetime] = mapped_column(default=_now)
    workflow_id: Mapped[str | None] = mapped_column(sa.String(300))
    kind: Mapped[str] = mapped_column(sa.String(40))
    model: Mapped[str] = mapped_column(sa.String(200))
    prompt_version: Mapped[str] = mapped_column(sa.String(200))
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    requests: Mapped[int] = mapped_column(default=0)
