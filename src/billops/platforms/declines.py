"""Platform failure codes -> canonical decline codes, read from versioned data
(`data/platform_declines.yaml`, one section per platform: `default` and `error_codes`).

Keys are matched case-insensitively after turning every run of non-alphanumeric characters into
"_", so an error text "Insufficient funds." matches `insufficient_funds`. A mapped code is then
classified by the decline taxonomy (`data/declines.yaml`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from billops.errors import ConfigError

PLATFORM_DECLINES = Path(__file__).resolve().parents[1] / "data" / "platform_declines.yaml"


def decline_key(value: str) -> str:
    """``"Insufficient funds."`` -> ``insufficient_funds``: the form the YAML keys are matched in."""
    return re.sub(r"[^a-z0-9]+", "_", value.strip().lower()).strip("_")


@dataclass(frozen=True)
class PlatformDeclines:
    version: str
    default: str
    codes: dict[str, str]

    def lookup(self, value: str | None) -> str | None:
        if value is None:
            return None
        key = decline_key(value)
        return self.codes.get(key) if key else None


def parse_platform_declines(raw: Any, source: str, platform: str) -> PlatformDeclines:
    if not isinstance(raw, dict):
        raise ConfigError(f"platform declines {source}: expected a mapping at the top level")
    version = raw.get("version")
    if not isinstance(version, str) or not version.strip():
        raise ConfigError(f"platform declines {source}: `version` must be a non-empty string")
    section = raw.get(platform)
    if not isinstance(section, dict):
        raise ConfigError(f"platform declines {source}: `{platform}` must be a mapping")
    default = section.get("default", "generic_decline")
    if not isinstance(default, str) or not default.strip():
        raise ConfigError(f"platform declines {source}: `{platform}.default` must be a non-empty string")
    codes_raw = section.get("error_codes")
    if not isinstance(codes_raw, dict):
        raise ConfigError(f"platform declines {source}: `{platform}.error_codes` must be a mapping")
    codes: dict[str, str] = {}
    for name, code in codes_raw.items():
        if not isinstance(name, str | int) or isinstance(name, bool) or not decline_key(str(name)):
            raise ConfigError(f"platform declines {source}: `{platform}.error_codes` key {name!r} is invalid")
        if not isinstance(code, str) or not code.strip():
            raise ConfigError(
                f"platform declines {source}: `{platform}.error_codes.{name}` must be a decline code"
            )
        key = decline_key(str(name))
        if key in codes:
            raise ConfigError(f"platform declines {source}: `{platform}.error_codes` lists {key} twice")
        codes[key] = code.strip().lower()
    return PlatformDeclines(version=version, default=default.strip().lower(), codes=codes)


@lru_cache(maxsize=8)
def load_platform_declines(path: str, platform: str) -> PlatformDeclines:
    """`path` is "builtin" (the packaged file) or a YAML file; `platform` names its section."""
    p = PLATFORM_DECLINES if path == "builtin" else Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"platform declines {p}: not found") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"platform declines {p}: cannot be read: {exc}") from exc
    return parse_platform_declines(raw, str(p), platform)


def choose_code(
    mapping: PlatformDeclines,
    known: Collection[str],
    *,
    decline_code: str | None,
    values: Sequence[str | None],
    fallback: str | None = None,
) -> str:
    """The canonical decline code for a platform's failure fields, most specific first: a `decline_code`
    the taxonomy knows (`known`); else the first of `values` the mapping turns into something more
    specific than its default; else the unknown `decline_code` itself (the taxonomy then says it is
    unknown); else `fallback`; else the first mapped value, or the mapping's default."""
    if decline_code and decline_key(decline_code) in known:
        return decline_key(decline_code)
    mapped = [mapping.lookup(v) for v in values]
    specific = next((m for m in mapped if m and m != mapping.default), None)
    if specific is not None:
        return specific
    if decline_code and decline_key(decline_code):
        return decline_key(decline_code)
    if fallback is not None:
        return fallback
    return next((m for m in mapped if m), None) or mapping.default
