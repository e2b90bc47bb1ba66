"""Versioned Jinja2 template sets. A set is a folder under drafting/templates/ with a manifest.yaml
naming its version; the recorded template version is `<set>@<declared version>+<content digest>`, so an
edited template shows up in the audit log even if someone forgets to bump the declared version."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

from billops.errors import ConfigError

ROOT = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Draft:
    kind: str  # reassuring_email | urgent_email | sms | card_update_email | case_summary
    channel: str  # email | sms | internal
    subject: str | None
    body: str
    template: str  # e.g. recovery-v1/urgent_email
    version: str


@dataclass(frozen=True)
class TemplateSet:
    name: str
    version: str
    channels: dict[str, str]
    env: jinja2.Environment

    def render(self, kind: str, **ctx: Any) -> Draft:
        if kind not in self.channels:
            raise ConfigError(f"template set {self.name}: no template {kind!r}")
        try:
            body = self.env.get_template(f"{kind}.j2").render(**ctx).strip() + "\n"
            subject = None
            if self.channels[kind] == "email":
                subject = self.env.get_template(f"{kind}.subject.j2").render(**ctx).strip()
        except jinja2.TemplateError as exc:
            raise ConfigError(f"template {self.name}/{kind}: {exc}") from exc
        return Draft(
            kind=kind,
            channel=self.channels[kind],
            subject=subject,
            body=body,
            template=f"{self.name}/{kind}",
            version=self.version,
        )


@lru_cache(maxsize=8)
def load_template_set(name: str, root: str | None = None) -> TemplateSet:
    folder = Path(root) if root else ROOT / name
    manifest = folder / "manifest.yaml"
    if not manifest.is_file():
        raise ConfigError(f"template set {name!r}: {manifest} not found")
    raw = yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}
    h = hashlib.sha256()
    for f in sorted(folder.glob("*")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    channels = {str(k): str(v) for k, v in (raw.get("templates") or {}).items()}
    return TemplateSet(
        name=name,
        version=f"{name}@{raw.get('version', '0')}+{h.hexdigest()[:10]}",
        channels=channels,
        env=env,
    )
