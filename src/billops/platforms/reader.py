"""Typed, path-aware reads of untrusted webhook JSON, shared by every platform's normalizer.

A wrong JSON type anywhere raises `WebhookRejected(status=422)` naming the dotted path of the field
(``data.object.amount_due: expected an integer, got string``); nothing else escapes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from billops.errors import WebhookRejected

# Unix seconds for 1970-01-01 .. 9999-12-31: anything outside is not a platform timestamp.
_MAX_TS = 253_402_300_799
# Platform integers (amounts, counts) fit in a signed 64-bit column; larger values are not real.
_MAX_INT = 2**63 - 1

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


_JSON_TYPES = ((type(None), "null"), (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"))  # fmt: skip


def json_type(value: Any) -> str:
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__)


def reject(path: str, problem: str) -> WebhookRejected:
    return WebhookRejected(f"{path}: {problem}", status=422)


def build(model: type[M], path: str, **fields: Any) -> M:
    """Construct a domain model; a constraint it refuses becomes a 422 naming the path."""
    try:
        return model(**fields)
    except ValidationError as exc:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
        loc = ".".join(str(p) for p in err.get("loc", ()))
        where = f"{path} ({model.__name__}.{loc})" if loc else path
        raise reject(where, str(err.get("msg", "invalid value"))) from None


def timestamp(value: Any, path: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise reject(path, f"expected a Unix timestamp (integer), got {json_type(value)}")
    if not 0 <= value <= _MAX_TS:
        raise reject(path, f"timestamp {value} is out of range")
    return datetime.fromtimestamp(value, UTC)


class Reader:
    """A JSON object plus the dotted path it was found at."""

    __slots__ = ("d", "path")

    def __init__(self, d: dict[str, Any], path: str) -> None:
        self.d = d
        self.path = path

    @classmethod
    def of(cls, value: Any, path: str) -> Reader:
        if not isinstance(value, dict):
            raise reject(path, f"expected an object, got {json_type(value)}")
        return cls(value, path)

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.d.get(key) is not None

    def need(self, key: str, value: T | None) -> T:
        """`value` (read from `key`), or a 422 saying that the field is missing or null."""
        if value is None:
            problem = "required field is missing" if key not in self.d else "must not be null"
            raise reject(self.at(key), problem)
        return value

    # strings
    def opt_str(self, key: str) -> str | None:
        v = self.d.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            raise reject(self.at(key), f"expected a string, got {json_type(v)}")
        return v

    def req_str(self, key: str) -> str:
        v = self.need(key, self.opt_str(key))
        if not v:
            raise reject(self.at(key), "must not be empty")
        return v

    def lower_str(self, key: str) -> str | None:
        v = self.opt_str(key)
        return v.strip().lower() or None if v is not None else None

    # numbers and booleans
    def opt_int(self, key: str) -> int | None:
        v = self.d.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise reject(self.at(key), f"expected an integer, got {json_type(v)}")
        if not -_MAX_INT <= v <= _MAX_INT:
            raise reject(self.at(key), "integer is out of range")
        return v

    def req_int(self, key: str) -> int:
        return self.need(key, self.opt_int(key))

    def opt_bool(self, key: str) -> bool | None:
        v = self.d.get(key)
        if v is None:
            return None
        if not isinstance(v, bool):
            raise reject(self.at(key), f"expected a boolean, got {json_type(v)}")
        return v

    # time
    def opt_ts(self, key: str) -> datetime | None:
        return timestamp(self.d.get(key), self.at(key))

    def req_ts(self, key: str) -> datetime:
        return self.need(key, self.opt_ts(key))

    # money
    def currency(self, key: str = "currency", *, required: bool = True) -> str | None:
        v = self.req_str(key) if required else self.opt_str(key)
        if v is None:
            return None
        if len(v) != 3 or not v.isascii() or not v.isalpha():
            raise reject(self.at(key), f"expected a 3-letter ISO 4217 currency code, got {v!r}")
        return v.lower()

    # nested objects and lists
    def obj(self, key: str) -> Reader | None:
        v = self.d.get(key)
        if v is None:
            return None
        return Reader.of(v, self.at(key))

    def objs(self, key: str) -> list[Reader]:
        """A JSON array of objects (missing or null: empty)."""
        v = self.d.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise reject(self.at(key), f"expected a list, got {json_type(v)}")
        return [Reader.of(item, f"{self.at(key)}[{i}]") for i, item in enumerate(v)]

    def opt_code(self, key: str) -> str | None:
        """A code platforms send as a string, though some gateways send a number; blank is None."""
        v = self.d.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        s = self.opt_str(key)
        return s.strip() or None if s is not None else None

    def expanded(self, key: str) -> Reader | None:
        """An expandable field: the object when expanded, None when it is only an id (or null)."""
        v = self.d.get(key)
        if v is None or isinstance(v, str):
            return None
        return Reader.of(v, self.at(key))

    def ref(self, key: str) -> str | None:
        """The id of an expandable field: the string itself, or the expanded object's `id`."""
        v = self.d.get(key)
        if v is None:
            return None
        if isinstance(v, str):
            return v or None
        if isinstance(v, dict):
            return Reader(v, self.at(key)).opt_str("id") or None
        raise reject(self.at(key), f"expected an id string or an object, got {json_type(v)}")

    def items(self, key: str) -> list[Reader]:
        """The objects of a list object (`{object: "list", data: [...]}`, Stripe's) or of a bare array."""
        v = self.d.get(key)
        if v is None:
            return []
        path = self.at(key)
        if isinstance(v, dict):
            data = v.get("data")
            path = f"{path}.data"
            if data is None:
                return []
            v = data
        if not isinstance(v, list):
            raise reject(path, f"expected a list, got {json_type(v)}")
        return [Reader.of(item, f"{path}[{i}]") for i, item in enumerate(v)]

    def first(self, key: str) -> Reader | None:
        found = self.items(key)
        return found[0] if found else None

    def metadata(self, key: str = "metadata") -> dict[str, Any]:
        v = self.d.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise reject(self.at(key), f"expected an object, got {json_type(v)}")
        return dict(v)


def envelope(payload: Any, what: str, *, object_type: str | None = None) -> Reader:
    """The top level of a webhook body as a Reader whose paths name fields bare (`id`,
    `content.invoice.total`); `what` names it when it is not an object at all. With `object_type`, an
    `object` field, when present, must have that value."""
    env = Reader(Reader.of(payload, what).d, "")
    if object_type is not None:
        found = env.opt_str("object")
        if found is not None and found != object_type:
            raise reject("object", f"expected {object_type!r}, got {found!r}")
    return env


def envelope_str(env: Reader, key: str) -> str:
    """A required, non-blank string of an event envelope (its id, its type)."""
    value = env.req_str(key)
    if not value.strip():
        raise reject(env.at(key), "must not be blank")
    return value


# Readers of an optional object (None when the parent is missing), shared by the normalizers.


def maybe_str(r: Reader | None, key: str) -> str | None:
    return r.opt_str(key) if r is not None else None


def maybe_obj(r: Reader | None, key: str) -> Reader | None:
    return r.obj(key) if r is not None else None


def maybe_code(r: Reader | None, key: str) -> str | None:
    return r.opt_code(key) if r is not None else None
