"""pydantic-ai agents that draft, one per kind, durable inside DBOS workflows.

Each agent declares its typed output (`schema.KINDS`) and carries `DBOSDurability()`: inside a
`@DBOS.workflow` every model request is a DBOS step, so a workflow replayed after a crash gets the
recorded response instead of calling the model again. The agents are built at import time so that DBOS
knows their step functions before launch (runtime._launch_dbos imports billops.drafting.service).

A `Model` instance cannot cross a DBOS step boundary, so a run passes the model as a string
("openai:gpt-4o-mini") and the `ResolveModelId` capability builds the instance on both sides of the
boundary from the policy's `drafting.llm` choice and the settings' keys carried in `deps`. Tests call
`use_model(FunctionModel(...))`, which makes the resolver return that instance for every draft in this
process; no test reaches a real model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.capabilities import ResolveModelId
from pydantic_ai.durable_exec.dbos import DBOSDurability
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model, ModelResolutionContext
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import UsageLimits

from billops.config import Settings
from billops.drafting.policy import LlmChoice
from billops.drafting.schema import KINDS
from billops.errors import ConfigError

_override: Model | None = None


@dataclass(frozen=True)
class LlmDeps:
    """What the model resolver needs inside a model-request step (passed in-process, never stored)."""

    choice: LlmChoice
    settings: Settings


def model_id(choice: LlmChoice) -> str:
    """The model string that crosses the step boundary and is recorded with the draft."""
    if _override is not None:
        return f"{_override.system}:{_override.model_name}"
    return f"{choice.provider}:{choice.model}"


def build_model(choice: LlmChoice, settings: Settings) -> Model:
    """The configured model. A missing key or base URL is a ConfigError naming the variable to set."""
    if choice.provider == "openai":
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        if settings.openai_api_key is None:
            raise ConfigError("drafting.llm.provider is openai but BILLOPS_OPENAI_API_KEY is not set")
        key = settings.openai_api_key.get_secret_value()
        return OpenAIChatModel(choice.model, provider=OpenAIProvider(api_key=key))
    if choice.provider == "anthropic":
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        if settings.anthropic_api_key is None:
            raise ConfigError("drafting.llm.provider is anthropic but BILLOPS_ANTHROPIC_API_KEY is not set")
        key = settings.anthropic_api_key.get_secret_value()
        return AnthropicModel(choice.model, provider=AnthropicProvider(api_key=key))
    if choice.provider == "openai-compatible":
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        if not settings.llm_base_url:
            raise ConfigError(
                "drafting.llm.provider is openai-compatible but BILLOPS_LLM_BASE_URL is not set "
                "(e.g. http://127.0.0.1:11434/v1 for Ollama)"
            )
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "none"
        return OpenAIChatModel(
            choice.model, provider=OpenAIProvider(base_url=settings.llm_base_url, api_key=key)
        )
    raise ConfigError(f"drafting.llm.provider {choice.provider!r} is not supported")


def _resolve(ctx: ModelResolutionContext[LlmDeps], _model_id: str) -> Model:
    if _override is not None:
        return _override
    deps = ctx.deps
    if not isinstance(deps, LlmDeps):
        raise ConfigError("a drafting agent ran without its LlmDeps (model choice and settings)")
    return build_model(deps.choice, deps.settings)


@contextlib.contextmanager
def use_model(model: Model | None) -> Iterator[None]:
    """Draft with `model` (a FunctionModel/TestModel in tests) instead of the configured provider."""
    global _override
    previous, _override = _override, model
    try:
        yield
    finally:
        _override = previous


def set_model(model: Model | None) -> None:
    """The non-context-manager form of `use_model` (None restores the configured provider)."""
    global _override
    _override = model


def _build(kind: str) -> Agent[LlmDeps, Any]:
    return Agent(
        # Never resolved by name: every run passes `model=model_id(choice)`, built by `_resolve`.
        "billops:configured",
        output_type=KINDS[kind][1],
        deps_type=LlmDeps,
        name=f"billops-draft-{kind}",
        defer_model_check=True,
        retries=1,
        capabilities=[ResolveModelId(_resolve), DBOSDurability()],
    )


AGENTS: dict[str, Agent[LlmDeps, Any]] = {kind: _build(kind) for kind in KINDS}


def run_agent(
    kind: str,
    user_prompt: str,
    *,
    instructions: str,
    deps: LlmDeps,
    message_history: Sequence[ModelMessage] | None = None,
    token_allowance: int | None = None,
) -> Any:
    """One agent run (synchronous: BillOps workflows are sync DBOS workflows). Returns the run result."""
    choice = deps.choice
    settings: ModelSettings = {
        "temperature": choice.temperature,
        "max_tokens": choice.max_output_tokens,
        "timeout": choice.timeout_seconds,
    }
    return AGENTS[kind].run_sync(
        user_prompt,
        model=model_id(choice),
        deps=deps,
        instructions=instructions,
        model_settings=settings,
        message_history=message_history,
        usage_limits=UsageLimits(request_limit=3, total_tokens_limit=token_allowance),
    )
