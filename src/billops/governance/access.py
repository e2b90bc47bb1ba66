"""Who may call what. Every /api route depends on `require_role(<least role>)`: a bearer API token
(`Authorization: Bearer bo_<id>_<secret>`) whose user has at least that role. The console uses
signed session cookies instead (web/); the webhook routes use only the platforms' own authentication.

viewer: read everything; operator: also approve, reject and edit approvals;
admin: also the policy, users and tokens, the kill switch and the circuit breaker.

Every /api router uses `ApiRoute`, which runs the token and role check before anything else looks at the
request: a caller without a valid token gets 401 whatever its parameters or body, and one whose role is
too low gets 403. Then come the checks FastAPI does not make (NUL characters in parameters; the body's
size, UTF-8 and JSON strictness), then FastAPI's own validation, then the handler. Each operation's
possible error answers (docs/access.md, "Errors") are added to its OpenAPI entry.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from billops import jsontext
from billops.errors import error_responses
from billops.governance.users import (
    RANK,
    AuthError,
    Principal,
    Role,
    authenticate_token,
    should_touch,
    touch_token,
)
from billops.runtime import get_runtime

BEARER = {"WWW-Authenticate": 'Bearer realm="billops"'}
INVALID = {"WWW-Authenticate": 'Bearer realm="billops", error="invalid_token"'}

DB_INT_MAX = 2_147_483_647  # the largest id an integer column holds on PostgreSQL (and so on both engines)
MAX_BODY_BYTES = 4 * 1_048_576  # an /api request body (after authentication): above the largest valid one
MAX_JSON_DEPTH = 32  # nesting of arrays and objects in an /api request body


def authorize(request: Request, role: Role) -> Principal:
    """The caller's principal, who must hold `role` or a higher one; 401 or 403 otherwise."""
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer ") or not auth[7:].strip():
        raise HTTPException(401, "this route needs an API token: Authorization: Bearer bo_…", BEARER)
    db = get_runtime().db
    with db.reader() as s:
        try:
            principal = authenticate_token(s, auth[7:].strip())
        except AuthError as exc:
            raise HTTPException(401, exc.message, INVALID) from None
    if not principal.can(role):
        raise HTTPException(
            403,
            f"{principal.username} has role {principal.role}; this route needs {role} or higher",
            {"WWW-Authenticate": 'Bearer realm="billops", error="insufficient_scope"'},
        )
    token_id = int(principal.via.split(":")[1])
    if should_touch(token_id):
        with db.session() as s:
            touch_token(s, token_id)
    request.state.principal = principal
    return principal


# Declares the bearer scheme in the OpenAPI (and the docs' "Authorize" button); `authorize` reads the header.
bearer_scheme = HTTPBearer(
    scheme_name="apiToken",
    bearerFormat="bo_<id>_<secret>",
    description="A per-user API token: `Authorization: Bearer bo_<id>_<secret>` (docs/access.md).",
    auto_error=False,
)


def require_role(role: Role) -> Callable[..., Principal]:
    """A FastAPI dependency: the calling principal, who must hold `role` or a higher one. On an
    `ApiRoute` the check has already run before the body was read; this returns its result."""

    def dependency(request: Request, _: Any = Depends(bearer_scheme)) -> Principal:
        principal = getattr(request.state, "principal", None)
        if isinstance(principal, Principal) and principal.can(role):
            return principal
        return authorize(request, role)

    dependency.required_role = role  # type: ignore[attr-defined]  # read by ApiRoute and the role tests
    return dependency


def least_role(dependant: Any) -> Role | None:
    """The highest `require_role(...)` in a dependency tree: the least role that may call the route."""
    found: list[Role] = []
    stack = list(dependant.dependencies)
    while stack:
        dep = stack.pop()
        if (role := getattr(dep.call, "required_role", None)) is not None:
            found.append(role)
        stack.extend(dep.dependencies)
    ranked = sorted(found, key=lambda r: RANK[r])
    return ranked[-1] if ranked else None


def _bad_request(message: str) -> HTTPException:
    return HTTPException(400, message)


async def read_strict_json_body(request: Request) -> None:
    """Read the body (413 past MAX_BODY_BYTES) and refuse one FastAPI would mis-handle or the database
    would choke on: 400 when it is not UTF-8, not strict JSON (NaN, Infinity) or nested deeper than
    MAX_JSON_DEPTH; 422 when a string holds a NUL character or a lone surrogate. The bytes and the parsed
    value stay cached on the request for FastAPI's own validation."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise HTTPException(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    request._body = raw  # Starlette's cache: request.body() and request.json() read it from here
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not raw or not (
        ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))
    ):
        return  # not JSON: FastAPI's validation answers 422
    try:
        value = jsontext.loads(raw, max_depth=MAX_JSON_DEPTH)
    except jsontext.JsonRefused as exc:
        raise _bad_request(f"the request body {exc.reason}") from None
    problems = list(_bad_strings(value))
    if problems:
        raise RequestValidationError(problems)
    request._json = value  # Starlette's cache for request.json()


def _bad_strings(value: Any) -> Iterator[dict[str, Any]]:
    """Each string (key or value) in a parsed body that holds a NUL character or a lone surrogate,
    which neither database stores faithfully, as a validation problem."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ("body",))]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, dict | list):  # depth already bounded by jsontext.loads
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, v in pairs:
                if isinstance(key, str):
                    stack.append((key, loc))  # a key is reported where its object is
                stack.append((v, (*loc, key)))
        elif isinstance(item, str) and (bad := jsontext.bad_char(item)) is not None:
            if bad == "\x00":
                yield _problem("string_nul", loc, "must not contain NUL characters")
            else:
                yield _problem("string_surrogate", loc, "must not contain lone surrogates")


def _problem(kind: str, loc: tuple[str | int, ...], msg: str) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg, "input": None}


def check_parameters(request: Request, query: list[str], path: list[str]) -> None:
    """Refuse NUL characters in the route's declared query and path parameters (422): PostgreSQL
    refuses them inside a statement, SQLite would store them."""
    nul = "must not contain NUL characters"
    problems = [
        _problem("string_nul", ("query", name), nul)
        for name, v in request.query_params.multi_items()
        if name in query and "\x00" in v
    ] + [
        _problem("string_nul", ("path", name), nul)
        for name, v in request.path_params.items()
        if name in path and isinstance(v, str) and "\x00" in v
    ]
    if problems:
        raise RequestValidationError(problems)


class ApiRoute(APIRoute):
    """The route class of the /api routers: authentication first, then the request's text, then
    FastAPI's validation; the possible error answers documented in the OpenAPI."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        role = least_role(self.dependant)
        statuses: list[int] = []
        if role is not None:
            statuses.append(401)
            if RANK[role] > min(RANK.values()):
                statuses.append(403)
        if self.dependant.path_params:
            statuses.append(404)
        if self.body_field is not None:
            statuses += [400, 413, 422]
        elif self.dependant.query_params or self.dependant.path_params:
            statuses.append(422)
        own = kwargs.get("responses") or {}
        responses = {**error_responses(*statuses), **own}
        if responses.keys() != self.responses.keys():  # build again: FastAPI derives the schemas in __init__
            super().__init__(path, endpoint, **{**kwargs, "responses": responses})

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        role = least_role(self.dependant)
        has_body = self.body_field is not None
        query = [p.alias for p in self.dependant.query_params]
        path = [p.alias for p in self.dependant.path_params]

        async def auth_first(request: Request) -> Response:
            if role is not None:
                await run_in_threadpool(authorize, request, role)
            check_parameters(request, query, path)
            if has_body:
                await read_strict_json_body(request)
            return await handler(request)

        return auth_first
