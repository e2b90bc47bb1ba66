"""The real provider wiring over HTTP on 127.0.0.1: an OpenAI-compatible server (what Ollama, vLLM and
llama.cpp expose) answering /v1/chat/completions, and an Anthropic-shaped server answering /v1/messages.
The servers are fakes of the model only; the OpenAI and Anthropic SDKs, pydantic-ai and BillOps's
drafting code run for real, so this checks the base URL, the key, the model name, the typed output
tool, the token accounting and what the request body carries (the allow-listed facts, nothing else)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from billops.config import Settings
from billops.drafting.schema import DraftFacts, DraftLocal
from billops.drafting.service import llm_draft, template_draft, template_output
from billops.runtime import Runtime
from support.channels import Reply, ScriptedServer, json_reply
from support.llm import sample
from support.loopback import RecordedRequest


def _facts_from(text: str) -> DraftFacts:
    return DraftFacts.model_validate(json.loads(text))


def openai_answer(req: RecordedRequest) -> Reply:
    """A chat completion that calls the output tool with the grounded draft for the facts it was sent."""
    body = req.json
    user = next(m for m in body["messages"] if m["role"] == "user")
    content = user["content"] if isinstance(user["content"], str) else user["content"][0]["text"]
    facts = _facts_from(content)
    tool = body["tools"][0]["function"]["name"]
    args = template_output(facts.kind, facts, DraftLocal(), "recovery-v1").model_dump(mode="json")
    return json_reply(
        200,
        {
            "id": "chatcmpl-local-1",
            "object": "chat.completion",
            "created": 1_763_800_000,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "call_1", "type": "function",
                             "function": {"name": tool, "arguments": json.dumps(args)}}
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 412, "completion_tokens": 96, "total_tokens": 508},
        },
    )  # fmt: skip


def anthropic_answer(req: RecordedRequest) -> Reply:
    body = req.json
    user = next(m for m in body["messages"] if m["role"] == "user")
    content = user["content"] if isinstance(user["content"], str) else user["content"][0]["text"]
    facts = _facts_from(content)
    tool = body["tools"][0]["name"]
    args = template_output(facts.kind, facts, DraftLocal(), "recovery-v1").model_dump(mode="json")
    return json_reply(
        200,
        {
            "id": "msg_local_1",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "tool_use", "id": "toolu_1", "name": tool, "input": args}],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 380, "output_tokens": 88},
        },
    )


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[RecordedRequest], Reply]], ScriptedServer]]:
    started: list[ScriptedServer] = []

    def _start(responder: Callable[[RecordedRequest], Reply]) -> ScriptedServer:
        srv = ScriptedServer(responder).start()
        started.append(srv)
        return srv

    yield _start
    for srv in started:
        srv.stop()


def _runtime(
    make_policy: Callable[..., Path],
    settings_factory: Callable[..., Settings],
    runtime_factory: Callable[[Settings], Runtime],
    database_url: str,
    llm: dict[str, Any],
    **settings: Any,
) -> Runtime:
    policy = make_policy(drafting={"backend": {"recovery": "llm"}, "llm": llm})
    return runtime_factory(settings_factory(database_url, policy_file=policy, **settings))


def _draft(rt: Runtime, kind: str = "urgent_email") -> Any:
    facts, local = sample(kind)
    policy = rt.policy()
    fallback = template_draft(kind, facts, local, policy.templates)
    return llm_draft(
        kind, facts, local, policy=policy, settings=rt.settings, workflow_id="wf-http", fallback=fallback
    )


def test_an_openai_compatible_server_at_a_base_url_drafts_for_real(
    database_url: str, server: Any, make_policy: Any, settings_factory: Any, runtime_factory: Any
) -> None:
    srv = server(openai_answer)
    rt = _runtime(
        make_policy, settings_factory, runtime_factory, database_url,
        {"provider": "openai-compatible", "model": "llama3.1"},
        llm_base_url=f"{srv.url}/v1", llm_api_key="local-key",
    )  # fmt: skip
    d = _draft(rt)
    assert d.record.backend == "llm", d.record
    assert d.record.model == "openai-compatible:llama3.1"
    assert (d.record.input_tokens, d.record.output_tokens) == (412, 96)
    assert d.body.startswith("Hi Ada,")
    [req] = srv.requests
    assert req.path == "/v1/chat/completions"
    assert req.header("authorization") == "Bearer local-key"
    body = req.json
    assert body["model"] == "llama3.1" and body["temperature"] == 0.2, {
        k: v for k, v in body.items() if k != "messages"
    }
    assert (body.get("max_completion_tokens") or body.get("max_tokens")) == 600
    sent = json.dumps(body)
    assert "Ada" not in sent, "the first name never reaches the model"
    assert "INV-0042" in sent, "the allow-listed facts do"


def test_an_anthropic_shaped_server_drafts_for_real(
    database_url: str, server: Any, make_policy: Any, settings_factory: Any, runtime_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    srv = server(anthropic_answer)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.url)  # the Anthropic SDK's own override
    rt = _runtime(
        make_policy, settings_factory, runtime_factory, database_url,
        {"provider": "anthropic", "model": "claude-sonnet-4-6"},
        anthropic_api_key="sk-ant-local",
    )  # fmt: skip
    d = _draft(rt, "sms")
    assert d.record.backend == "llm", d.record
    assert d.record.model == "anthropic:claude-sonnet-4-6"
    assert (d.record.input_tokens, d.record.output_tokens) == (380, 88)
    [req] = srv.requests
    assert req.path == "/v1/messages", req.path
    assert "sk-ant-local" in (req.header("x-api-key") or req.header("authorization") or ""), sorted(
        req.headers
    )
    assert req.json["model"] == "claude-sonnet-4-6"


def test_a_server_error_falls_back_to_the_template_and_says_so(
    database_url: str, server: Any, make_policy: Any, settings_factory: Any, runtime_factory: Any
) -> None:
    srv = server(lambda _req: json_reply(500, {"error": {"message": "model not loaded"}}))
    rt = _runtime(
        make_policy, settings_factory, runtime_factory, database_url,
        {"provider": "openai-compatible", "model": "llama3.1"},
        llm_base_url=f"{srv.url}/v1",
    )  # fmt: skip
    d = _draft(rt)
    assert d.record.backend == "templates" and d.record.template == "recovery-v1/urgent_email"
    assert d.record.fallback and d.record.fallback.startswith("llm error:")
    assert srv.requests, "the server was asked"
