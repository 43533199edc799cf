"""How an OpenAPI operation's call travels: auth from settings, then the Web tool's SSRF rules.

Why not ``web.fetch``: it only GETs and turns pages into readable text; an API call needs
every method, a query, a JSON or form body and the auth header. What it shares with the
Web tool is what keeps the network safe: ``netguard.check_url`` on every request (scheme,
allow/deny lists, private and metadata addresses after DNS) and a ``pinned_resolver``, so
the socket goes to the address that was checked. Redirects are not followed: the model
reads the 3xx and its ``Location`` and may call again, so every hop still passes the check,
and the auth header never travels to a host it was not meant for.

The secret is a ``SecretStr`` until the moment the header (or query) is built. It is never
in the tool's arguments (so never in the audit row or the approver's view), and any echo of
it in the response or in an error is redacted before the model sees it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from pydantic import SecretStr

from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.netguard import FetchError, Resolver, check_url, pinned_resolver
from aillm_lab.tools.policy import NetworkPolicy
from aillm_lab.tools.redact import Redactor

USER_AGENT = "aillm-lab-openapi/0.1"
BodyKind = Literal["json", "form", "text"]

# Headers a document may not hand to the model: OpenAPI says parameters named Accept,
# Content-Type or Authorization SHALL be ignored; the rest the client sets itself (Host,
# Cookie, framing), or they steer where or how the request travels (a model-chosen Host
# reaches another virtual host, X-Forwarded-* and Proxy-* fool proxies, a method override
# turns the documented GET into a DELETE).
RESERVED_HEADERS = frozenset({
    "accept", "accept-encoding", "authorization", "connection", "content-encoding",
    "content-length", "content-type", "cookie", "expect", "forwarded", "host", "keep-alive",
    "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-real-ip",
    "x-http-method", "x-http-method-override", "x-method-override"})
RESERVED_PREFIXES = ("proxy-", "x-forwarded-", "sec-")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 field-name


def refused_parameter(name: str, location: str) -> str | None:
    """Why a header or cookie parameter called ``name`` may not come from the model, or
    None when it may."""
    if location not in ("header", "cookie"):
        return None
    if not _TOKEN.match(name):
        return f"{name!r} is not a valid {location} name"
    low = name.lower()
    if location == "header" and (low in RESERVED_HEADERS or low.startswith(RESERVED_PREFIXES)):
        return (f"{name!r} is a header the HTTP client sets itself or one that steers where "
                f"the request goes; the model may not set it")
    return None


@dataclass(frozen=True)
class Auth:
    """One secret and where the API wants it: ``Authorization`` (bearer or basic), an API
    key header, a query parameter or a cookie. ``repr`` never shows the value."""

    secret: SecretStr
    where: Literal["bearer", "basic", "header", "query", "cookie"] = "bearer"
    name: str = "Authorization"

    def apply(self, headers: dict[str, str], query: list[tuple[str, str]]) -> None:
        value = self.secret.get_secret_value()
        if self.where == "bearer":
            headers["Authorization"] = f"Bearer {value}"
        elif self.where == "basic":
            headers["Authorization"] = "Basic " + base64.b64encode(value.encode()).decode()
        elif self.where == "header":
            headers[self.name] = value
        elif self.where == "query":
            query.append((self.name, value))
        else:
            cookie = headers.get("Cookie")
            headers["Cookie"] = f"{cookie}; {self.name}={value}" if cookie else \
                f"{self.name}={value}"


@dataclass(frozen=True)
class Param:
    """Where one tool argument goes in the request."""

    arg: str
    name: str
    location: Literal["path", "query", "header", "cookie"]


@dataclass(frozen=True)
class Operation:
    """What one tool sends: method, URL template, parameters and body kind."""

    method: str
    base_url: str
    path: str
    params: tuple[Param, ...] = ()
    body: BodyKind | None = None
    content_type: str | None = None
    auth: Auth | None = field(default=None, repr=False)


async def send(op: Operation, arguments: dict[str, Any], policy: NetworkPolicy, *,
               resolver: Resolver | None = None) -> str:
    """Make the call and return ``HTTP <status>`` and the body as text; refused URLs raise
    ``SafetyViolation`` before a socket exists, HTTP errors raise ``FetchError``."""
    import aiohttp

    redactor = Redactor([op.auth.secret.get_secret_value()] if op.auth else [],
                        patterns=False)
    url, headers, query, payload = _request(op, arguments)
    shown = redactor.redact(f"{op.method} {url}")  # the query (where a key may be) left out
    try:
        async with asyncio.timeout(policy.timeout_s):
            checked = await check_url(url, policy, resolver=resolver)
            connector = aiohttp.TCPConnector(
                resolver=pinned_resolver({checked.host: checked.addresses}),
                use_dns_cache=False, force_close=True)
            async with aiohttp.ClientSession(
                    connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                    headers={"User-Agent": USER_AGENT}) as session, session.request(
                    op.method, checked.url, params=query, headers=headers,
                    allow_redirects=False, **payload) as resp:
                body, cut = await _read(resp, policy.max_bytes)
                status, reason = resp.status, resp.reason or ""
                location = resp.headers.get("Location")
    except TimeoutError:
        raise FetchError(f"{shown} timed out after {policy.timeout_s:g}s "
                         "(NetworkPolicy.timeout_s); the API is slow or unreachable",
                         url=shown) from None
    except aiohttp.ClientError as exc:
        raise FetchError(redactor.redact(f"{shown} failed: {type(exc).__name__}: {exc}; "
                                         "check base_url and that the API is up"),
                         url=shown) from None
    text = redactor.redact(body)
    note = f"\n[truncated at {policy.max_bytes} bytes (NetworkPolicy.max_bytes)]" if cut else ""
    if status >= 400:
        raise FetchError(f"HTTP {status} {reason} from {shown}: {text[:2000]}{note}".strip(),
                         url=shown, status=status)
    head = f"HTTP {status} {reason}".strip()
    if location:
        head += f"\nLocation: {redactor.redact(location)} (not followed; call again there "
        head += "if it is the same API)"
    return f"{head}\n{text}{note}".rstrip()


def _request(op: Operation, arguments: dict[str, Any]
             ) -> tuple[str, dict[str, str], list[tuple[str, str]], dict[str, Any]]:
    """URL (path filled in), headers, query pairs and aiohttp body keywords."""
    path = op.path
    headers: dict[str, str] = {}
    query: list[tuple[str, str]] = []
    cookies: list[str] = []
    for param in op.params:
        if param.arg not in arguments or arguments[param.arg] is None:
            continue
        value = arguments[param.arg]
        if param.location == "path":
            if _text(value) in {"", ".", ".."}:  # would turn into another path of the API
                raise SafetyViolation("openapi.path", f"path parameter {param.arg!r} may not "
                                      f"be {_text(value)!r}; give the id or name it stands for")
            path = path.replace("{" + param.name + "}", quote(_text(value), safe=""))
        elif param.location == "query":
            items = value if isinstance(value, list) else [value]
            query += [(param.name, _text(v)) for v in items]
        elif refused_parameter(param.name, param.location):
            continue  # never sent, even if an Operation was built by hand
        elif param.location == "header":
            headers[param.name] = _text(value)
        else:
            cookies.append(f"{param.name}={_cookie_value(_text(value))}")
    if "{" in path:
        raise SafetyViolation("openapi.path", f"path {op.path!r} still has an unfilled "
                              f"parameter after substitution ({path!r}); pass every path "
                              f"parameter")
    if cookies:
        headers["Cookie"] = "; ".join(cookies)
    if op.auth is not None:
        op.auth.apply(headers, query)
    payload: dict[str, Any] = {}
    if op.body is not None and arguments.get("body") is not None:
        body = arguments["body"]
        if op.body == "json":
            payload["data"] = json.dumps(body)
            headers["Content-Type"] = op.content_type or "application/json"
        elif op.body == "form":
            payload["data"] = {k: _text(v) for k, v in body.items()}
        else:
            payload["data"] = _text(body)
            headers["Content-Type"] = op.content_type or "text/plain"
    return op.base_url.rstrip("/") + path, headers, query, payload


def _cookie_value(text: str) -> str:
    """``text`` percent-encoded outside RFC 6265's cookie-octets: a model's ``x; session=y``
    must stay one value, not add a cookie that a server reading the first ``session`` would
    take over the Lab's own (the auth cookie is appended after the parameters)."""
    return quote(text, safe="!#$&'()*+-./:<=>?@[]^_`{|}~")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


async def _read(resp: Any, max_bytes: int) -> tuple[str, bool]:
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(65_536):
        buf += chunk
        if len(buf) > max_bytes:
            return _decode(bytes(buf[:max_bytes]), resp.charset), True
    return _decode(bytes(buf), resp.charset), False


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


__all__ = ["RESERVED_HEADERS", "Auth", "BodyKind", "Operation", "Param", "refused_parameter",
           "send"]
