"""Versioned prompt sets, the LLM twin of `templates.py`.

A set is a folder under drafting/prompts/ with a manifest.yaml (declared version, one file per kind,
a shared rules file). The recorded prompt version is `<set>@<declared version>+<content digest>`, so an
edited prompt shows up in the audit log even if nobody bumps the declared version."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from billops.errors import ConfigError

ROOT = Path(__file__).resolve().parent / "prompts"


@dataclass(frozen=True)
class PromptSet:
    name: str
    version: str
    instructions: dict[str, str]  # kind -> full instructions (the kind's file + the shared rules)

    def for_kind(self, kind: str) -> str:
        if kind not in self.instructions:
            raise ConfigError(f"prompt set {self.name}: no prompt for {kind!r}")
        return self.instructions[kind]


@lru_cache(maxsize=8)
def load_prompt_set(name: str, root: str | None = None) -> PromptSet:
    folder = Path(root) if root else ROOT / name
    manifest = folder / "manifest.yaml"
    if not manifest.is_file():
        raise ConfigError(f"prompt set {name!r}: {manifest} not found")
    try:
        raw = yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"prompt set {name!r}: {manifest} is not valid YAML ({exc})") from exc
    h = hashlib.sha256()
    for f in sorted(folder.glob("*")):
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    rules = ""
    if raw.get("rules"):
        rules = _read(folder, str(raw["rules"]), name)
    prompts = raw.get("prompts") or {}
    if not isinstance(prompts, dict) or not prompts:
        raise ConfigError(f"prompt set {name!r}: {manifest} lists no prompts")
    instructions = {}
    for kind, file in prompts.items():
        text = _read(folder, str(file), name)
        instructions[str(kind)] = f"{text.strip()}\n\n{rules.strip()}\n" if rules else text
    return PromptSet(
        name=name, version=f"{name}@{raw.get('version', '0')}+{h.hexdigest()[:10]}", instructions=instructions
    )


def _read(folder: Path, file: str, name: str) -> str:
    path = folder / file
    if not path.is_file():
        raise ConfigError(f"prompt set {name!r}: {path} not found")
    return path.read_text(encoding="utf-8")
