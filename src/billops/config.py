"""Typed settings (environment, `BILLOPS_` prefix): secrets, addresses, limits, pools.

Settings hold secrets and addresses; the policy file (`billops.policy`) holds behaviour (modes,
thresholds, retry schedules, approvals, templates). Both are validated at start-up and an invalid value
stops the process with a message that names the field.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from billops.actions.settings import OutboundWebhook
from billops.errors import ConfigError

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_POLICY_FILE = DATA_DIR / "policy.yaml"


class ZuoraHmac(BaseModel):
    """How a Zuora callout template signs its requests. Zuora lets the tenant choose all of it: the hash
    (`hmacAlgorithm`), the output format (`hmacOutputFormat` HEX/BASE64), the signed data (`hmacData`, with
    `{{Request.Body}}` or merge fields), the header name (`hmacKey`) and its value around
    `{{Request.HMAC.Signed}}` (`hmacValue`). See docs/platforms/zuora.md."""

    model_config = ConfigDict(extra="forbid")

    secrets: list[SecretStr] = Field(min_length=1, description="Accepted keys (several during a rotation).")
    header: str = Field(
        default="X-BillOps-Signature", min_length=1, description="Header carrying the signature (hmacKey)."
    )
    # Zuora also offers MD5, which is refused here on purpose.
    algorithm: Literal["sha1", "sha224", "sha256", "sha384", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field(
        default="", description="Text before {{Request.HMAC.Signed}} in the header value (hmacValue), if any."
    )
    data_template: str = Field(
        default="{body}",
        description="The signed data (hmacData) rebuilt from the request: `{body}` is the raw request body "
        "(Zuora: {{Request.Body}}), `{field}` / `{object.field}` a string field of the JSON body (the same "
        "merge field Zuora put there); `{{` and `}}` are literal braces.",
    )
    timestamp_field: str | None = Field(
        default="timestamp",
        description="Body field (dotted path) holding the event time, checked against the tolerance; "
        "null turns the freshness check off.",
    )

    @model_validator(mode="after")
    def _signed_data_makes_sense(self) -> ZuoraHmac:
        import re

        if any(len(s.get_secret_value()) < 16 for s in self.secrets):
            raise ValueError("HMAC secrets must be at least 16 characters")
        fields = re.findall(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_.]*)\}(?!\})", self.data_template)
        if not fields:
            raise ValueError("data_template signs nothing of the request: use {body} or {field} placeholders")
        if self.timestamp_field and "body" not in fields and self.timestamp_field not in fields:
            raise ValueError(
                f"data_template must sign the timestamp: include {{body}} or {{{self.timestamp_field}}}"
            )
        return self


class ZuoraEndpoint(BaseModel):
    """One Zuora callout endpoint: HTTP Basic credentials, HMAC, or both (both must then pass)."""

    model_config = ConfigDict(extra="forbid")

    basic: list[SecretStr] = Field(
        default_factory=list, description='"user:password" (several in a rotation).'
    )
    hmac: ZuoraHmac | None = None

    @model_validator(mode="after")
    def _some_auth(self) -> ZuoraEndpoint:
        if not self.basic and self.hmac is None:
            raise ValueError("a Zuora endpoint needs `basic` credentials, `hmac`, or both")
        for c in self.basic:
            user, sep, password = c.get_secret_value().partition(":")
            if not sep or not user or len(password) < 12:
                raise ValueError(
                    "basic credentials must be 'user:password' with a password of 12+ characters"
                )
        return self


def format_validation_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return f"{source}: invalid " + "; ".join(parts)


class Settings(BaseSettings):
    """Process settings. Every field can be set as `BILLOPS_<FIELD>` in the environment or a `.env` file."""

    model_config = SettingsConfigDict(env_prefix="BILLOPS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path(".billops"), description="Where the embedded SQLite database lives.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL. Default: sqlite:///<data_dir>/billops.db"
    )
    policy_file: Path | None = Field(default=None, description="YAML policy file. Default: the packaged one.")

    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=1, le=65535)

    # Access (docs/access.md): users, API tokens and console sessions live in the database.
    session_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs console session cookies. Default: a random key kept in "
        "<data_dir>/console.key (give every worker the same key when several serve the console).",
    )
    session_hours: float = Field(default=12, gt=0, le=24 * 30, description="Console session lifetime.")
    # Login throttling and token keys (docs/access.md, "Login throttling"; governance/login_throttle.py):
    # exponential back-off per (account, client), per client and per account instead of a hard lock.
    login_max_failures: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Failed logins of one account from one client before that pair backs off (1 s, 2 s, …).",
    )
    login_lockout_minutes: float = Field(
        default=15, gt=0, le=24 * 60, description="Longest back-off of an (account, client) pair or a client."
    )
    login_client_max_failures: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="Failed logins from one client, over all accounts, before it backs off.",
    )
    login_account_max_failures: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Failed logins of one account from every client before new clients are slowed.",
    )
    login_account_max_delay_seconds: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="Longest slow-down of the per-account ceiling (it never locks).",
    )
    login_failure_window_minutes: float = Field(
        default=60,
        gt=0,
        le=7 * 24 * 60,
        description="Failures are forgotten after this long without one; at most one audit record per "
        "(account, client) per window.",
    )
    token_key: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC-SHA256 that API token secrets are stored under (32+ characters). "
        "Default: a random key kept in <data_dir>/token.key (give every worker the same key).",
    )
    token_max_days: int = Field(default=365, ge=1, le=3650, description="Longest lifetime of an API token.")
    secure_cookies: bool = Field(
        default=False, description="Mark console cookies Secure (set when the console is served over HTTPS)."
    )

    # Stripe
    stripe_api_key: SecretStr | None = Field(default=None, description="Restricted key rk_… (or sk_…).")
    stripe_api_base: str | None = Field(
        default=None, description="Override the API address (tests: localstripe)."
    )
    stripe_webhook_secrets: dict[str, list[SecretStr]] = Field(
        default_factory=dict,
        description='Per endpoint, the accepted signing secrets: {"default": ["whsec_new", "whsec_old"]}.',
    )
    chargebee_webhook_credentials: dict[str, list[SecretStr]] = Field(
        default_factory=dict,
        description='Per Chargebee webhook endpoint, the accepted HTTP Basic credentials "user:password" '
        '(several during a rotation): {"default": ["billops:s3cret-new", "billops:s3cret-old"]}.',
    )
    chargebee_site: str | None = Field(default=None, description="The site name: <site>.chargebee.com.")
    chargebee_api_key: SecretStr | None = Field(default=None, description="A Chargebee API key (see docs).")
    chargebee_api_url: str | None = Field(
        default=None, description="Override the API address, e.g. http://127.0.0.1:8080 (tests)."
    )
    chargebee_refetch_events: bool = Field(
        default=False,
        description="Re-fetch every webhook event by id through the API and trust only the API's copy.",
    )

    # Recurly
    recurly_api_key: SecretStr | None = Field(default=None, description="A Recurly private API key.")
    recurly_region: Literal["us", "eu"] = "us"
    recurly_api_url: str | None = Field(
        default=None, description="Override the API address, e.g. http://127.0.0.1:8080 (tests)."
    )
    recurly_webhook_keys: dict[str, list[SecretStr]] = Field(
        default_factory=dict,
        description="Per Recurly webhook endpoint, the signature keys (several during a rotation): "
        '{"default": ["key-new", "key-old"]}.',
    )

    # Zuora
    zuora_api_url: str | None = Field(
        default=None,
        description="The tenant's REST endpoint, e.g. https://rest.zuora.com or https://rest.eu.zuora.com.",
    )
    zuora_client_id: str | None = Field(default=None, description="OAuth client id (client credentials).")
    zuora_client_secret: SecretStr | None = Field(default=None, description="OAuth client secret.")
    zuora_cpr_url: str | None = Field(
        default=None,
        description="Configurable Payment Retry API address, when it differs from BILLOPS_ZUORA_API_URL.",
    )
    zuora_cpr_username: str | None = Field(default=None, description="Configurable Payment Retry API user.")
    zuora_cpr_api_token: SecretStr | None = Field(
        default=None,
        description="Configurable Payment Retry API token (with the user: removes an invoice "
        "from Zuora's own retry cycle).",
    )
    zuora_credit_charge_id: str | None = Field(
        default=None, description="Product rate plan charge used for credit memos (turns on `credit`)."
    )
    zuora_webhook_endpoints: dict[str, ZuoraEndpoint] = Field(
        default_factory=dict,
        description="Per Zuora callout endpoint, how it authenticates: "
        '{"default": {"basic": ["user:password"]}} (see docs/platforms/zuora.md).',
    )

    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    webhook_max_bytes: int = Field(default=512 * 1024, ge=1024)
    # Hostile webhook input (billops/ingest/body.py, docs/operations.md "Hostile input"): how deeply a
    # webhook body may nest arrays and objects (checked before parsing, without recursion).
    webhook_max_depth: int = Field(
        default=64,
        ge=8,
        le=256,
        description="Deepest nesting of arrays and objects in a webhook body (8–256); deeper is a 400.",
    )

    # Channels (docs/channels.md). A channel without settings is off: its messages are recorded as
    # skipped with the reason, never lost silently.
    public_url: str | None = Field(
        default=None,
        description="Where customers reach this BillOps (https://billops.example.com): one-click "
        "unsubscribe links point here. Without it, emails carry only the mailto unsubscribe, if any.",
    )
    smtp_host: str | None = Field(default=None, description="SMTP server; email is off without it.")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="starttls (port 587), tls (implicit TLS, port 465), none (local relay).",
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = Field(
        default=None, description='The From header: "Billing <billing@example.com>".'
    )
    smtp_reply_to: str | None = None
    smtp_ca_file: Path | None = Field(
        default=None, description="CA bundle to trust for the SMTP server's certificate (a private relay)."
    )
    smtp_timeout_seconds: float = Field(default=20, gt=0, le=300)
    twilio_account_sid: str | None = Field(default=None, description="AC…; SMS is off without it.")
    twilio_auth_token: SecretStr | None = None
    twilio_messaging_service_sid: str | None = Field(default=None, description="MG… (preferred over From).")
    twilio_from: str | None = Field(default=None, description="E.164 sender when no messaging service.")
    twilio_api_url: str = Field(default="https://api.twilio.com", description="Override for tests.")
    slack_webhook_url: SecretStr | None = Field(
        default=None, description="Slack incoming webhook for internal alerts (escalations, failures)."
    )
    outbound_webhooks: list[OutboundWebhook] = Field(
        default_factory=list,
        description='JSON list: [{"name": "helpdesk", "url": "https://…", "secret": "whsec_…", '
        '"events": […]}].',
    )
    http_timeout_seconds: float = Field(default=15, gt=0, le=120, description="SMS, Slack and webhook calls.")

    # LLM drafting (docs/drafting.md); which backend is used is the policy's `drafting` section.
    openai_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible server (Ollama http://127.0.0.1:11434/v1, vLLM, llama.cpp).",
    )
    llm_api_key: SecretStr | None = Field(default=None, description="Key for llm_base_url, if it needs one.")

    # Durable workflows
    executor_id: str = Field(
        default_factory=lambda: f"billops-{socket.gethostname()}",
        description="Stable per worker process: after a crash, the process restarted with the same id "
        "resumes that process's workflows. Give each worker on one host its own id.",
    )
    workflow_version: str = Field(
        # wf-2: messages delivered, drafts redrafted, the team notified; wf-3: every wait is one
        # recorded recv whatever the clock says, listeners decided in a step (replay-deterministic)
        default="billops-wf-3",
        description="DBOS application_version. Bump only when workflow code changes incompatibly.",
    )
    worker_concurrency: int = Field(default=8, ge=1, le=256)
    # Database pool (durability; docs/operations.md "Database connections"): ONE pool per process,
    # shared by the app and DBOS on PostgreSQL; a worker holds at most size + overflow + 1 connections.
    db_pool_size: int = Field(default=10, ge=1, le=500, description="Connections kept open per process.")
    db_max_overflow: int = Field(
        default=10, ge=0, le=500, description="Extra connections a busy process may open beyond db_pool_size."
    )

    # Workflow operations: `billops workflows …`, the console's Workflows page, the alert (billops/ops/)
    workflow_stuck_seconds: int = Field(
        default=900,
        ge=1,
        le=7 * 86400,
        description="A pending/enqueued workflow with no step and no timer due for this long is 'stuck'.",
    )
    workflow_watch_seconds: int = Field(
        default=60,
        description="How often the watcher looks for newly failed workflows to alert on (0: never). "
        "A divisor of 60 (seconds) or a multiple of 60 that divides 3600 (minutes).",
    )
    workflow_alert_lookback_hours: float = Field(
        default=168, gt=0, le=24 * 90, description="Only workflows that failed this recently are alerted."
    )

    @field_validator("workflow_watch_seconds")
    @classmethod
    def _watch_cron(cls, v: int) -> int:
        if v == 0 or (1 <= v <= 60 and 60 % v == 0) or (v % 60 == 0 and v <= 3600 and 60 % (v // 60) == 0):
            return v
        raise ValueError(
            "must be 0 (off), a divisor of 60 (1, 2, 5, 10, 15, 30, 60 seconds) or a multiple of 60 "
            "dividing an hour (120, 300, 600, 900, 1800, 3600)"
        )

    # Audit chain keys and checkpoints (docs/audit.md; governance/audit_keys.py, audit_checkpoint.py)
    audit_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='HMAC keys of the audit chain by key id: {"k2027": "<32+ characters>", "k2026": "…"}. '
        "Default: a random key kept in <data_dir>/audit.keys (0600; `billops audit rotate-key`).",
    )
    audit_key_id: str | None = Field(
        default=None, description="The key id new audit records are signed with (needed with several keys)."
    )
    audit_checkpoint_to: str | None = Field(
        default=None,
        description="Where `billops audit checkpoint` and the schedule write: a JSONL file path or "
        "s3://bucket/prefix (pip install 'billops[s3]').",
    )
    audit_checkpoint_minutes: int = Field(
        default=0,
        description="Write a checkpoint every N minutes (a DBOS schedule; 0: off). A divisor of 60 or a "
        "multiple of 60 that divides 1440.",
    )
    audit_s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, Ceph, …); default: AWS."
    )
    audit_s3_region: str | None = Field(default=None, description="S3 region, if the store needs one.")
    audit_legacy_until: int | None = Field(
        default=None,
        ge=0,
        description="Only audit records up to this seq may be unkeyed (from before keying); 0 for an "
        "install that never had any. Default: any unkeyed prefix is accepted (and reported).",
    )

    @model_validator(mode="after")
    def _audit_settings(self) -> Settings:  # audit chain keys and checkpoints
        for kid, secret in self.audit_keys.items():
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", kid):
                raise ValueError(f"audit_keys: key id {kid!r} must be 1-40 of A-Z a-z 0-9 . _ -")
            if len(secret.get_secret_value()) < 32:
                raise ValueError(f"audit_keys: the key {kid!r} needs at least 32 characters")
        if self.audit_key_id is not None and self.audit_key_id not in self.audit_keys:
            raise ValueError(f"audit_key_id {self.audit_key_id!r} is not a key id in audit_keys")
        if len(self.audit_keys) > 1 and self.audit_key_id is None:
            raise ValueError("audit_key_id must name the key that signs new records (audit_keys has several)")
        m = self.audit_checkpoint_minutes
        if not (m == 0 or (1 <= m <= 60 and 60 % m == 0) or (m % 60 == 0 and 1440 % m == 0)):
            raise ValueError(
                "audit_checkpoint_minutes must be 0 (off), a divisor of 60 (1, 2, 5, 10, 15, 30, 60) or a "
                "multiple of 60 dividing a day (120, 180, 240, 360, 480, 720, 1440)"
            )
        if m and not self.audit_checkpoint_to:
            raise ValueError("audit_checkpoint_minutes needs audit_checkpoint_to (a file or s3:// URL)")
        if self.audit_checkpoint_to and "://" in self.audit_checkpoint_to[:12] and not (
            self.audit_checkpoint_to.startswith("s3://")
        ):
            raise ValueError("audit_checkpoint_to must be a file path or an s3://bucket/prefix URL")
        if self.audit_checkpoint_to and self.audit_checkpoint_to.startswith("s3://"):
            bucket = self.audit_checkpoint_to[5:].split("/", 1)[0]
            if not bucket:
                raise ValueError("audit_checkpoint_to: an s3:// URL needs a bucket (s3://bucket/prefix)")
        return self

    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("stripe_webhook_secrets")
    @classmethod
    def _secrets_look_right(cls, v: dict[str, list[SecretStr]]) -> dict[str, list[SecretStr]]:
        for endpoint, secrets in v.items():
            if not secrets:
                raise ValueError(f"endpoint {endpoint!r} has no secret")
            for s in secrets:
                if not s.get_secret_value().startswith("whsec_"):
                    raise ValueError(f"endpoint {endpoint!r}: a secret does not start with 'whsec_'")
        return v

    @field_validator("chargebee_webhook_credentials")
    @classmethod
    def _credentials_look_right(cls, v: dict[str, list[SecretStr]]) -> dict[str, list[SecretStr]]:
        for endpoint, creds in v.items():
            if not creds:
                raise ValueError(f"Chargebee endpoint {endpoint!r} has no credentials")
            for c in creds:
                user, sep, password = c.get_secret_value().partition(":")
                if not sep or not user or len(password) < 12:
                    raise ValueError(
                        f"Chargebee endpoint {endpoint!r}: credentials must be 'user:password' with a "
                        "password of at least 12 characters"
                    )
        return v

    @field_validator("token_key")
    @classmethod
    def _token_key_long_enough(cls, v: SecretStr | None) -> SecretStr | None:  # login throttling / token keys
        if v is not None and len(v.get_secret_value()) < 32:
            raise ValueError("the token key needs at least 32 characters (e.g. `openssl rand -base64 48`)")
        return v

    @field_validator("recurly_webhook_keys")
    @classmethod
    def _recurly_keys(cls, v: dict[str, list[SecretStr]]) -> dict[str, list[SecretStr]]:
        for endpoint, keys in v.items():
            if not keys or any(len(k.get_secret_value()) < 16 for k in keys):
                raise ValueError(f"Recurly endpoint {endpoint!r} needs keys of at least 16 characters")
        return v

    @field_validator(
        "chargebee_api_url",
        "recurly_api_url",
        "zuora_api_url",
        "zuora_cpr_url",
        "twilio_api_url",
        "public_url",
        "llm_base_url",
    )
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None:
            v = v.rstrip("/")
            if not (v.startswith("https://") or v.startswith("http://")) or v.endswith("://"):
                raise ValueError("must be an http(s):// URL")
        return v

    @field_validator("database_url")
    @classmethod
    def _url_supported(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("sqlite") or v.startswith("postgresql")):
            raise ValueError("only sqlite:/// and postgresql:// URLs are supported")
        return v

    @property
    def db_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{(self.data_dir / 'billops.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error("settings (BILLOPS_* environment)", exc)) from exc
