"""`billops drafting versions` and `preview`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billops.drafting.cli import drafting_app
from support.llm import sample


def test_versions_and_template_preview(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLOPS_DATA_DIR", str(tmp_path))
    r = CliRunner().invoke(drafting_app, ["versions"])
    assert r.exit_code == 0, r.output
    assert "templates: recovery-v1@2+" in r.output and "prompts:   recovery-v1@1+" in r.output
    facts, local = sample()
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({"facts": facts.model_dump(mode="json"), "local": local.model_dump()}))
    r = CliRunner().invoke(drafting_app, ["preview", "urgent_email", "--facts", str(path)])
    assert r.exit_code == 0, r.output
    assert "Subject: Action needed: your Pro payment of 49.00 USD failed" in r.output
    assert "Hi Ada," in r.output and '"backend": "templates"' in r.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"facts": {**facts.model_dump(mode="json"), "email": "a@b.example"}}))
    r = CliRunner().invoke(drafting_app, ["preview", "sms", "--facts", str(bad)])
    assert r.exit_code == 2 and "email" in r.output
