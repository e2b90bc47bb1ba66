"""The policy file's `drafting` section: which backend writes each workflow's texts, which model,
and the daily token budget (docs/drafting.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LlmChoice(_Strict):
    provider: Literal["openai", "anthropic", "openai-compatible"] = "openai"
    model: str = Field(default="gpt-4o-mini", min_length=1, description="The provider's model name.")
    temperature: float = Field(default=0.2, ge=0, le=2)
    max_output_tokens: int = Field(default=600, ge=50, le=8000)
    timeout_seconds: float = Field(default=30, gt=0, le=300)


class DraftingPolicy(_Strict):
    backend: dict[Literal["recovery"], Literal["templates", "llm"]] = Field(
        default_factory=lambda: {"recovery": "templates"},  # type: ignore[arg-type]
        description="Per workflow: deterministic templates (default, offline) or an LLM.",
    )
    llm: LlmChoice = LlmChoice()
    prompts: str = Field(default="recovery-v1", description="Prompt set under drafting/prompts/.")
    daily_token_budget: int = Field(
        default=200_000, ge=0, description="Input + output tokens per UTC day; then templates (recorded)."
    )

    @field_validator("prompts")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"{v!r} is not a prompt set name")
        return v

    def backend_for(self, workflow: Literal["recovery"]) -> Literal["templates", "llm"]:
        return self.backend.get(workflow, "templates")
