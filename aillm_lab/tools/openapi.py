"""``openapi_tools``: every operation of an OpenAPI 3 document as a ``Tool`` a model can call.

    tools = al.openapi_tools("spec.yaml", base_url="http://127.0.0.1:8000")

Why openapi-pydantic: it validates the whole document against the OpenAPI 3.0 or 3.1 model,
so a malformed spec fails here, once, with the field that is wrong, instead of as a strange
tool later. Local ``$ref``s (``#/components/...``) are inlined first, so each tool's JSON
Schema is self-contained (a cycle is cut with a note); a reference to another file is
refused, since fetching it would step around the network policy.

A tool's arguments are the operation's path, query, header and cookie parameters by name,
plus ``body`` for the request body; ``additionalProperties: false`` makes an unknown argument
a validation error the model reads. A header parameter the client sets itself or that steers
the request (Host, Cookie, Authorization, Content-Length, Proxy-*, ...:
``openapi_http.refused_parameter``) is dropped with a logged warning, never sent. Calls go
through the Web tool's SSRF and host rules (``openapi_http.send``); the base URL is checked
against the allow and deny lists when the tools are made, so a document that points at a
host the policy refuses is refused at once. Auth comes from ``LabSettings.openapi_auth``
(``SecretStr``) and is never an argument, so it never reaches the audit log, the approver or
a trace. All tools have ``risk="network"``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin

from pydantic import SecretStr, ValidationError

from aillm_lab.errors import ConfigError, SafetyViolation
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.netguard import (
    Resolver,
    check_address,
    check_host_lists,
    check_hostname,
    parse_host,
    parse_url,
)
from aillm_lab.tools.openapi_http import (
    Auth,
    BodyKind,
    Operation,
    Param,
    refused_parameter,
    send,
)
from aillm_lab.tools.policy import NetworkPolicy
from aillm_lab.tools.schema_tool import SchemaTool, tool_name

if TYPE_CHECKING:
    from aillm_lab.config import LabSettings
    from aillm_lab.runtime import LoopRunner

log = logging.getLogger(__name__)

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_DROP = frozenset({"example", "examples", "xml", "externalDocs", "discriminator", "nullable"})
_NESTED = ("items", "additionalProperties", "not")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")


class OpenAPISpecError(ConfigError):
    """An OpenAPI document that cannot become tools; ``source`` is the file or URL and
    ``where`` the places in it that are wrong (``paths./items.get.responses``)."""

    def __init__(self, message: str, *, source: str, where: tuple[str, ...] = ()) -> None:
        super().__init__(message, fields=("spec",))
        self.source, self.where = source, where


def openapi_tools(spec: str | Path | dict[str, Any], base_url: str | None = None, *,
                  auth: str | SecretStr | None = None, settings: LabSettings | None = None,
                  lab: Any = None, policy: NetworkPolicy | None = None,
                  include: Iterable[str] | None = None, prefix: str = "",
                  resolver: Resolver | None = None, runner: LoopRunner | None = None
                  ) -> list[Tool]:
    """One ``Tool`` per operation of ``spec`` (a file, an http(s) URL or a parsed dict).

    ``base_url`` overrides the document's first server. ``auth`` names an entry of
    ``settings.openapi_auth`` (or is the secret itself); without it the entry named after
    the API's host (``"api.example.org"`` or ``"127.0.0.1:8000"``) is used, if any.
    ``include`` keeps only those operations (by tool name); ``prefix`` goes before every
    name. ``settings`` (or ``lab``'s) give the network policy and the secrets; a URL spec is
    fetched through that policy on the runner loop.
    """
    settings = _settings(settings, lab)
    policy = policy or settings.safety.network
    source = str(spec)
    spec_url = source if isinstance(spec, str) and _is_url(source) else None
    if spec_url is not None:
        from aillm_lab.runtime import get_runner

        run = runner or getattr(lab, "runner", None) or get_runner()
        raw = run.run(_fetch_document(spec_url, policy, resolver))
    else:
        raw = _read_document(spec)
    return build_tools(raw, source=source, base_url=base_url, spec_url=spec_url,
                       auth=_secret(settings, auth), policy=policy, include=include,
                       prefix=prefix, resolver=resolver, settings=settings)


async def aopenapi_tools(spec: str | Path | dict[str, Any], base_url: str | None = None, *,
                         auth: str | SecretStr | None = None,
                         settings: LabSettings | None = None, lab: Any = None,
                         policy: NetworkPolicy | None = None,
                         include: Iterable[str] | None = None, prefix: str = "",
                         resolver: Resolver | None = None) -> list[Tool]:
    """``openapi_tools`` for async code: a URL spec is fetched on the calling loop."""
    settings = _settings(settings, lab)
    policy = policy or settings.safety.network
    source = str(spec)
    spec_url = source if isinstance(spec, str) and _is_url(source) else None
    raw = (await _fetch_document(spec_url, policy, resolver) if spec_url is not None
           else _read_document(spec))
    return build_tools(raw, source=source, base_url=base_url, spec_url=spec_url,
                       auth=_secret(settings, auth), policy=policy, include=include,
                       prefix=prefix, resolver=resolver, settings=settings)


def build_tools(raw: Any, *, source: str, base_url: str | None = None,
                spec_url: str | None = None, auth: SecretStr | str | None = None,
                policy: NetworkPolicy | None = None, include: Iterable[str] | None = None,
                prefix: str = "", resolver: Resolver | None = None,
                settings: LabSettings | None = None) -> list[Tool]:
    """The tools of an already loaded document (``auth`` as resolved by the caller)."""
    policy = policy or NetworkPolicy()
    doc = parse_document(raw, source)
    base = _base_url(doc, base_url, spec_url, source)
    check_base_url(base, policy)
    secret = auth if isinstance(auth, SecretStr) or auth is None else SecretStr(auth)
    if secret is None and settings is not None:
        secret = _host_secret(settings, base)
    tools: list[Tool] = []
    for path, item in (doc.paths or {}).items():
        for method in METHODS:
            op = getattr(item, method, None)
            if op is not None:
                tools.append(_operation_tool(doc, path, method, item, op, base, secret,
                                             policy, prefix, resolver, source))
    names = [t.name for t in tools]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise OpenAPISpecError(f"{source}: operations {twice} get the same tool name; give "
                               f"them distinct operationIds", source=source)
    if include is not None:
        wanted = set(include)
        if unknown := sorted(wanted - set(names)):
            raise ConfigError(f"include= names {unknown}, which {source} does not have; its "
                              f"operations are: {', '.join(names)}", fields=("include",))
        tools = [t for t in tools if t.name in wanted]
    return tools


def parse_document(raw: Any, source: str) -> Any:
    """The validated ``openapi_pydantic`` model of ``raw``, its local ``$ref``s inlined."""
    import openapi_pydantic

    if not isinstance(raw, dict):
        raise OpenAPISpecError(f"{source} is not an OpenAPI document: it holds a "
                               f"{type(raw).__name__}, not a mapping with 'openapi', 'info' "
                               f"and 'paths'", source=source)
    version = raw.get("openapi")
    if not (isinstance(version, str) and version.startswith("3.")):
        hint = (" (a Swagger 2.0 document: convert it to OpenAPI 3 first, e.g. with "
                "swagger2openapi)" if "swagger" in raw else "")
        raise OpenAPISpecError(f"{source}: field 'openapi' is {version!r}; only OpenAPI "
                               f"3.0 and 3.1 documents are read{hint}", source=source,
                               where=("openapi",))
    inlined = {**raw, "paths": _inline(raw.get("paths") or {}, raw, source, ())}
    try:
        return openapi_pydantic.parse_obj(inlined)
    except ValidationError as exc:
        problems = _problems(exc)
        shown = "; ".join(f"{where}: {msg}" for where, msg in problems[:8])
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise OpenAPISpecError(f"{source} is not a valid OpenAPI {version} document: "
                               f"{shown}{more}. Fix those fields and load it again",
                               source=source, where=tuple(w for w, _ in problems)) from None


def check_base_url(url: str, policy: NetworkPolicy) -> None:
    """Refuse now what every call would refuse: scheme, host lists, private literals."""
    parsed = parse_url(url)
    host = (parsed.raw_host or "").lower()
    ip = parse_host(host)
    try:
        if ip is not None:
            check_address(ip, policy, host=host)
            check_host_lists(str(ip), policy)
        else:
            check_hostname(host, policy)
            check_host_lists(host, policy)
    except SafetyViolation as exc:
        if (ip is not None and ip.is_loopback) or host == "localhost":
            raise SafetyViolation(exc.rule, f"{exc.detail}; for an API on this machine set "
                                  "safety.network.allow_loopback = true (and allow_hosts to "
                                  "it)") from None
        raise


# -- loading -----------------------------------------------------------------------------
def _read_document(spec: str | Path | dict[str, Any]) -> Any:
    if isinstance(spec, dict):
        return spec
    path = Path(spec).expanduser()
    if not path.is_file():
        raise OpenAPISpecError(f"spec {str(spec)!r}: no such file; give a path to an OpenAPI "
                               f"YAML or JSON file, or an http(s) URL", source=str(spec))
    return _loads(path.read_text(encoding="utf-8"), str(spec))


async def _fetch_document(url: str, policy: NetworkPolicy, resolver: Resolver | None) -> Any:
    from aillm_lab.tools.web import fetch

    page = await fetch(url, policy, resolver=resolver)
    if page.truncated:
        raise OpenAPISpecError(f"{url} is larger than NetworkPolicy.max_bytes "
                               f"({policy.max_bytes}); raise it or download the document",
                               source=url)
    return _loads(page.text, url)


def _loads(text: str, source: str) -> Any:
    import yaml

    try:
        return json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise OpenAPISpecError(f"{source} is neither valid JSON nor YAML{where}: "
                               f"{getattr(exc, 'problem', None) or exc}", source=source) from None


def _inline(node: Any, doc: dict[str, Any], source: str, stack: tuple[str, ...]) -> Any:
    """``node`` with every local ``$ref`` replaced by its target; a cycle becomes a note."""
    if isinstance(node, list):
        return [_inline(v, doc, source, stack) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return {k: _inline(v, doc, source, stack) for k, v in node.items()}
    if not ref.startswith("#/"):
        raise OpenAPISpecError(f"{source}: $ref {ref!r} points outside the document; only "
                               f"local references ('#/components/...') are read: bundle the "
                               f"document into one file first", source=source, where=(ref,))
    if ref in stack:
        return {"description": f"(recursive: {ref.rsplit('/', 1)[-1]}, not expanded again)"}
    target: Any = doc
    for part in ref[2:].split("/"):
        key = unquote(part).replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or key not in target:
            raise OpenAPISpecError(f"{source}: $ref {ref!r} points at nothing (no {key!r}); "
                                   f"fix the reference or add the component", source=source,
                                   where=(ref,))
        target = target[key]
    resolved = _inline(target, doc, source, (*stack, ref))
    siblings = {k: _inline(v, doc, source, stack) for k, v in node.items() if k != "$ref"}
    return {**resolved, **siblings} if siblings and isinstance(resolved, dict) else resolved


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Each error's place in the document and message, without pydantic's union branch tags
    (``3.0.3``, ``Reference``) that are not part of the document."""
    seen: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0].startswith("3."):
            loc = loc[1:]
        loc = [p for p in loc if not (p[:1].isupper() and p.isidentifier())]
        if err["type"] in {"missing", "extra_forbidden"} or loc:
            seen.setdefault(".".join(loc) or "(document)", err["msg"])
    return list(seen.items())


# -- one operation -------------------------------------------------------------------------
def _operation_tool(doc: Any, path: str, method: str, item: Any, op: Any, base: str,
                    secret: SecretStr | None, policy: NetworkPolicy, prefix: str,
                    resolver: Resolver | None, source: str) -> Tool:
    auth = _auth(doc, op, secret)
    merged: dict[tuple[str, str], Any] = {}
    for param in [*(item.parameters or []), *(op.parameters or [])]:
        merged[(param.name, param.param_in.value)] = param  # the operation's one wins
    properties: dict[str, Any] = {}
    required: list[str] = []
    routes: list[Param] = []
    for (name, where), param in merged.items():
        if auth is not None and where == "header" and name.lower() == auth.name.lower():
            continue  # the auth header comes from settings, never from the model
        if why := refused_parameter(name, where):
            log.warning("OpenAPI %r: %s %s: %s parameter dropped from the tool: %s",
                        doc.info.title, method.upper(), path, where, why)
            continue
        arg = name if _plain(name) and name not in properties and name != "body" else \
            tool_name(f"{where}_{name}")
        schema = _param_schema(param)
        if param.description:
            schema["description"] = param.description
        properties[arg] = schema
        if param.required or where == "path":
            required.append(arg)
        routes.append(Param(arg, name, where))
    body, content_type = _body(op, properties, required)
    name = tool_name(op.operationId or f"{method}_{path}", prefix)
    parameters = {"type": "object", "properties": properties, "required": required,
                  "additionalProperties": False}
    text = "\n".join(t for t in (op.summary, op.description) if t)
    description = f"{text[:1000]}\n({method.upper()} {path})".strip()
    operation = Operation(method=method.upper(), base_url=base, path=path,
                          params=tuple(routes), body=body, content_type=content_type,
                          auth=auth)

    async def run(arguments: dict[str, Any]) -> str:
        return await send(operation, arguments, policy, resolver=resolver)

    try:
        return SchemaTool(run, name=name, description=description, parameters=parameters,
                          risk=RiskLevel.NETWORK)
    except Exception as exc:
        raise OpenAPISpecError(f"{source}: {method.upper()} {path}: {exc}", source=source,
                               where=(f"paths.{path}.{method}",)) from None


def _param_schema(param: Any) -> dict[str, Any]:
    if param.param_schema is not None:
        return json_schema(param.param_schema)
    for media in (param.content or {}).values():
        if media.media_type_schema is not None:
            return json_schema(media.media_type_schema)
    return {"type": "string"}


def _body(op: Any, properties: dict[str, Any], required: list[str]
          ) -> tuple[BodyKind | None, str | None]:
    body = op.requestBody
    if body is None or not body.content:
        return None, None
    kinds: list[tuple[BodyKind, str]] = []
    for mime in body.content:
        base = mime.split(";")[0].strip().lower()
        if base == "application/json" or base.endswith("+json") or base == "*/*":
            kinds.append(("json", mime))
        elif base == "application/x-www-form-urlencoded":
            kinds.append(("form", mime))
        elif base.startswith("text/"):
            kinds.append(("text", mime))
    if not kinds:
        return None, None  # multipart, binary: not something a model can send as JSON
    order = {"json": 0, "form": 1, "text": 2}
    kind, mime = min(kinds, key=lambda k: order[k[0]])
    media = body.content[mime]
    schema = (json_schema(media.media_type_schema) if media.media_type_schema is not None
              else {"type": "object"} if kind != "text" else {"type": "string"})
    if body.description:
        schema["description"] = body.description
    properties["body"] = schema
    if body.required:
        required.append("body")
    return kind, (None if mime == "*/*" else mime)


def json_schema(schema: Any) -> dict[str, Any]:
    """An OpenAPI schema object as plain JSON Schema (3.0's ``nullable`` and boolean
    ``exclusiveMinimum`` rewritten, documentation-only keys dropped)."""
    data = schema if isinstance(schema, dict) else schema.model_dump(
        by_alias=True, exclude_none=True, mode="json")
    return _clean(data)


def _clean(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if k not in _DROP}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool):  # 3.0: a flag on minimum/maximum
            flag = out.pop(bound)
            if flag and limit in out:
                out[bound] = out.pop(limit)
    if node.get("nullable") is True and "type" in out:
        kinds = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*kinds, "null"] if "null" not in kinds else kinds
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _clean(v) if isinstance(v, dict) else v
                             for k, v in out["properties"].items()}
    for key in _NESTED:
        if isinstance(out.get(key), dict):
            out[key] = _clean(out[key])
    for key in _LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_clean(v) if isinstance(v, dict) else v for v in out[key]]
    return out


# -- base URL and auth -----------------------------------------------------------------------
def _base_url(doc: Any, base_url: str | None, spec_url: str | None, source: str) -> str:
    if base_url:
        return base_url
    servers = doc.servers or []
    url = servers[0].url if servers else "/"
    for key, var in ((servers[0].variables or {}).items() if servers else ()):
        url = url.replace("{" + key + "}", var.default)
    if _is_url(url):
        return url
    if spec_url is not None:
        return urljoin(spec_url, url)
    raise OpenAPISpecError(f"{source}: its server URL {url!r} is relative and the document "
                           f"is a local file; pass base_url='http(s)://host[:port]' to say "
                           f"where the API is", source=source, where=("servers",))


def _auth(doc: Any, op: Any, secret: SecretStr | None) -> Auth | None:
    """Where the API wants the secret, from its security schemes; bearer by default."""
    if secret is None:
        return None
    needs = op.security if op.security is not None else doc.security
    if needs is not None and len(needs) == 0:
        return None  # the operation says it needs no auth: send nothing
    schemes = (doc.components.securitySchemes or {}) if doc.components else {}
    names = [n for requirement in (needs or []) for n in requirement] or list(schemes)
    for name in names:
        scheme = schemes.get(name)
        if scheme is None:
            continue
        kind = scheme.type.lower()
        if kind == "apikey" and scheme.name and scheme.security_scheme_in in {
                "header", "query", "cookie"}:
            return Auth(secret, where=scheme.security_scheme_in, name=scheme.name)
        if kind == "http" and (scheme.scheme or "").lower() == "basic":
            return Auth(secret, where="basic")
        if kind in {"http", "oauth2", "openidconnect"}:
            return Auth(secret, where="bearer")
    return Auth(secret, where="bearer")


def _settings(settings: LabSettings | None, lab: Any) -> LabSettings:
    if settings is not None:
        return settings
    if lab is not None:
        return lab.settings
    from aillm_lab.config import LabSettings

    return LabSettings.load()


def _secret(settings: LabSettings, auth: str | SecretStr | None) -> SecretStr | None:
    if auth is None or isinstance(auth, SecretStr):
        return auth
    if auth not in settings.openapi_auth:
        known = ", ".join(sorted(settings.openapi_auth)) or "none"
        raise ConfigError(f"auth={auth!r} is not an entry of LabSettings.openapi_auth (set "
                          f"it with AILLM_OPENAPI_AUTH='{{\"{auth}\": \"...\"}}' or in the "
                          f"TOML file); entries: {known}", fields=("openapi_auth",))
    return settings.openapi_auth[auth]


def _host_secret(settings: LabSettings, base: str) -> SecretStr | None:
    from yarl import URL

    url = URL(base)
    host = (url.host or "").lower()
    for key in (f"{host}:{url.port}" if url.explicit_port else None, host):
        if key and key in settings.openapi_auth:
            return settings.openapi_auth[key]
    return None


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _plain(name: str) -> bool:
    return tool_name(name) == name


__all__ = ["OpenAPISpecError", "aopenapi_tools", "build_tools", "check_base_url",
           "json_schema", "openapi_tools", "parse_document"]
