"""Helpers for the fuzz tests that mutate real payloads: every path into a JSON tree, and one change
at a path (delete the key, or replace the value)."""

from __future__ import annotations

from typing import Any


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path below `value` (dict keys and list indexes), the root itself excluded."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def mutate(payload: Any, path: tuple[Any, ...], op: str, new: Any) -> Any:
    """`payload` with the value at `path` deleted (op "delete", inside a dict) or replaced by `new`
    (changed in place; returned for convenience, and `new` itself for the empty path)."""
    if not path:
        return new
    parent = payload
    for step in path[:-1]:
        parent = parent[step]
    if op == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return payload
