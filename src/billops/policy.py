"""The YAML policy file: behaviour (modes, thresholds, retry schedules, approvals, offers, drafting,
contact rules, guardrails), validated with clear errors that name the field, cached by modification time
so an edited file takes effect on the next decision. Settings (secrets, addresses) are `billops.config`.
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from billops.actions.settings import ContactPolicy
from billops.config import DEFAULT_POLICY_FILE, format_validation_error
from billops.drafting.policy import DraftingPolicy
from billops.errors import ConfigError
from billops.governance.schema import Guardrails, Segmentation, WorkflowModes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecoveryThresholds(_Strict):
    auto_retry_above: int = Field(default=85, ge=0, le=100)
    notify_from: int = Field(default=50, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> RecoveryThresholds:
        if self.notify_from > self.auto_retry_above:
            raise ValueError("notify_from must not exceed auto_retry_above")
        return self


class PauseOffer(_Strict):
    routes: list[Literal["auto_retry", "retry_and_notify", "human_review", "no_retry"]] = Field(
        default_factory=list
    )
    resume_after_days: int = Field(default=30, ge=1, le=365)


class CreditOffer(_Strict):
    routes: list[Literal["auto_retry", "retry_and_notify", "human_review", "no_retry"]] = Field(
        default_factory=list
    )
    amount_minor: int = Field(default=0, ge=0)


class CouponOffer(_Strict):
    routes: list[Literal["auto_retry", "retry_and_notify", "human_review", "no_retry"]] = Field(
        default_factory=list
    )
    coupon: str | None = None


class RetentionOffers(_Strict):
    """Retention plays proposed with a recovery. Each ALWAYS waits for a human (guardrail
    `risky_action`), whatever the mode. Off by default (no routes)."""

    pause_subscription: PauseOffer = PauseOffer()
    apply_credit: CreditOffer = CreditOffer()
    apply_coupon: CouponOffer = CouponOffer()

    @model_validator(mode="after")
    def _complete(self) -> RetentionOffers:
        if self.apply_credit.routes and self.apply_credit.amount_minor <= 0:
            raise ValueError("apply_credit needs amount_minor > 0 when it has routes")
        if self.apply_coupon.routes and not self.apply_coupon.coupon:
            raise ValueError("apply_coupon needs a coupon id when it has routes")
        return self


class RecoveryPolicy(_Strict):
    thresholds: RecoveryThresholds = RecoveryThresholds()
    retry_schedule_hours: dict[Literal["auto_retry", "retry_and_notify", "human_review"], list[float]] = (
        Field(
            default_factory=lambda: {  # type: ignore[arg-type]
                "auto_retry": [24, 96, 168],
                "retry_and_notify": [48, 120, 216],
                "human_review": [],
            }
        )
    )
    max_retries: int = Field(default=4, ge=0, le=15)
    window_days: int = Field(default=21, ge=1, le=60)
    high_value_minor: int = Field(
        default=50_000, ge=0, description="Amounts at or above this (minor units) count as high value."
    )
    context_wait_seconds: float = Field(default=10, ge=0, le=600)
    manage_platform_retries: bool = Field(
        default=True,
        description="In auto mode, turn off the platform's own retries for invoices BillOps manages.",
    )
    model: str = Field(
        default="latest",
        description="'latest': the newest registered recovery model decides (rules-v1 when none is "
        "registered); 'rules': always rules-v1; or a model version / directory path.",
    )
    min_retry_probability: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="An optional floor: the learned planner schedules no retry whose own success "
        "probability is below this (0: the attempt cost alone decides).",
    )
    attempt_cost: float = Field(
        default=0.30,
        ge=0,
        le=1000,
        description="What one retry costs, in major units of the invoice currency (processing fee, "
        "customer friction, the card's network budget). The learned planner adds a retry only while "
        "its success probability × the amount due beats this.",
    )
    exploration_share: float = Field(
        default=0.05,
        description="The share of learned plans whose first retry is moved to a random hour the network "
        "rules allow, so the model learns beyond its own choices (propensities are logged for "
        "importance-weighted evaluation; docs/models.md). 0 turns exploration off; at most 0.2.",
    )
    offers: RetentionOffers = RetentionOffers()

    @field_validator("exploration_share")
    @classmethod
    def _bounded_share(cls, v: float) -> float:
        if not 0.0 <= v <= 0.2:
            raise ValueError(
                f"{v!r} is outside 0-0.2: the exploration share is the fraction of learned plans whose "
                "first retry time is drawn at random (0 turns it off; at most 0.2, one plan in five)"
            )
        return v

    @field_validator("retry_schedule_hours")
    @classmethod
    def _positive(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        for route, hours in v.items():
            if any(h <= 0 for h in hours):
                raise ValueError(f"{route}: retry offsets must be positive hours")
            if hours != sorted(hours):
                raise ValueError(f"{route}: retry offsets must be ascending")
        return v


class ApprovalPolicy(_Strict):
    timeout_hours: float = Field(default=48, gt=0)
    timeout_outcome: Literal["reject", "approve"] = Field(
        default="reject",
        description="What happens when nobody decides in time. Default: nothing is executed.",
    )


class Policy(_Strict):
    # Used as a file name (<data_dir>/policy-history/<version>+<digest>.yaml): no "/", "..", spaces.
    version: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Your name for this policy: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit.",
    )
    modes: dict[Literal["recovery"], WorkflowModes] = Field(
        default_factory=lambda: {"recovery": WorkflowModes()}  # type: ignore[arg-type]
    )
    segmentation: Segmentation = Segmentation()
    guardrails: Guardrails = Guardrails()
    recovery: RecoveryPolicy = RecoveryPolicy()
    approvals: ApprovalPolicy = ApprovalPolicy()
    templates: str = Field(default="recovery-v1", description="Template set under drafting/templates/.")
    drafting: DraftingPolicy = DraftingPolicy()
    contact: ContactPolicy = ContactPolicy()
    network_rules: str = Field(
        default="builtin", description="'builtin' or a path to a network rules YAML file."
    )
    declines: str = Field(
        default="builtin", description="'builtin' or a path to a decline taxonomy YAML file."
    )

    # Filled by the loader, not by the file.
    digest: str = ""

    @property
    def full_version(self) -> str:
        return f"{self.version}+{self.digest[:10]}" if self.digest else self.version

    @field_validator("modes", mode="before")
    @classmethod
    def _mode_shorthand(cls, v: Any) -> Any:
        """`recovery: auto` is short for `recovery: {default: auto}`."""
        if isinstance(v, dict):
            return {k: {"default": m} if isinstance(m, str) else m for k, m in v.items()}
        return v

    def workflow_modes(self, workflow: Literal["recovery"]) -> WorkflowModes:
        return self.modes.get(workflow) or WorkflowModes()


POLICY_MAX_DEPTH = 32  # the deepest real policy nests ~6 levels; the YAML composer recurses per level


def _yaml_depth_over(text: str, limit: int) -> bool:
    """Whether `text` nests lists/maps deeper than `limit`, counted on the parser's event stream
    (iterative, unlike the composer, which raises RecursionError on ~1,000 levels)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > limit:
                return True
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return False


def parse_policy(text: str, source: str) -> Policy:
    try:
        if _yaml_depth_over(text, POLICY_MAX_DEPTH):
            raise ConfigError(
                f"policy file {source}: not valid YAML: nested too deeply "
                f"(more than {POLICY_MAX_DEPTH} levels of lists or mappings)"
            )
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {source}: not valid YAML: {exc}") from exc
    except RecursionError:  # belt and braces: the depth check above should already have refused it
        raise ConfigError(f"policy file {source}: not valid YAML: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"policy file {source}: expected a mapping at the top level")
    raw.pop("digest", None)
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(f"policy file {source}", exc)) from exc
    return policy.model_copy(update={"digest": hashlib.sha256(text.encode()).hexdigest()})


_policy_lock = threading.Lock()
_policy_cache: dict[Path, tuple[tuple[int, int], Policy]] = {}


def load_policy(path: Path | None = None) -> Policy:
    """Load the policy file, cached by (modification time, size): an edited file takes effect on the
    next decision, without a restart."""
    path = (path or DEFAULT_POLICY_FILE).resolve()
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ConfigError(f"policy file {path}: not found") from exc
    stamp = (st.st_mtime_ns, st.st_size)
    with _policy_lock:
        hit = _policy_cache.get(path)
        if hit and hit[0] == stamp:
            return hit[1]
        policy = parse_policy(path.read_text(encoding="utf-8"), str(path))
        _policy_cache[path] = (stamp, policy)
        return policy


@lru_cache(maxsize=1)
def default_policy() -> Policy:
    return load_policy(DEFAULT_POLICY_FILE)
