"""The Web tool: ``fetch_url`` returns a page's title and readable text, never a private host.

Why aiohttp: it is async-native (so it lives on the runner loop like every other
resource), it is maintained by the aio-libs team, and it takes a custom DNS resolver. That
last point is how we pin: ``netguard.check_url`` resolves and checks a host, and the
session's ``PinnedResolver`` hands aiohttp exactly those addresses at connect time. The URL
keeps its host name, so the ``Host`` header, TLS SNI and certificate check all use the
original name while the socket goes to the checked IP, and DNS rebinding between check
and connect has nothing to change. httpx would need the IP in the URL plus an
``sni_hostname`` extension per request, which is easier to get subtly wrong.

Each fetch opens one short-lived session on the calling loop (the runner loop when the
Toolbox calls it) and closes it before returning: the pins belong to that fetch alone,
and nothing outlives the call that would need closing later.

Redirects are followed by hand (at most ``policy.max_redirects``) and every hop goes
through the full check again. Bodies are streamed and cut at ``policy.max_bytes``;
``policy.timeout_s`` bounds the whole fetch, DNS and redirects included.
"""

from __future__ import annotations

import asyncio
import codecs
import http
import re
from typing import Annotated, Any

from pydantic import BaseModel, Field

from aillm_lab.errors import SafetyViolation
from aillm_lab.runtime import LoopRunner, get_runner
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.netguard import (
    CheckedURL,
    FetchError,
    Resolver,
    check_url,
    pinned_resolver,
)
from aillm_lab.tools.policy import NetworkPolicy

USER_AGENT = "aillm-lab-fetch/0.1 (+https://github.com/aillm-lab)"
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"application/json", "application/xml", "application/javascript",
                        "application/x-ndjson", "application/ld+json", "application/yaml",
                        "application/x-yaml", "application/toml", "application/csv"})
_CHUNK = 65_536
_STATUS_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.I)


class WebPage(BaseModel):
    """What ``fetch`` read: the final URL after redirects, and the readable text."""

    url: str = Field(description="the URL that was asked for")
    final_url: str = Field(description="where the content came from, after redirects")
    status: int
    content_type: str
    title: str | None = None
    text: str
    bytes_read: int
    truncated: bool = Field(default=False, description="the body was cut at max_bytes")
    redirects: list[str] = Field(default_factory=list)
    max_bytes: int

    def render(self, max_chars: int | None = None) -> str:
        """Title, source and text, ending with a plain statement of any truncation."""
        head = [f"Title: {self.title}"] if self.title else []
        head.append(f"URL: {self.final_url}")
        if self.redirects:
            head.append(f"(redirected from {self.url})")
        text, notes = self.text, []
        if self.truncated:
            notes.append(f"[truncated: the page is larger than {self.max_bytes} bytes; only "
                         f"the first {self.bytes_read} bytes were read]")
        if max_chars is not None and len(text) > max_chars:
            notes.append(f"[truncated: showing {max_chars} of {len(text)} characters; ask "
                         "again with a larger max_chars to read more]")
            text = text[:max_chars]
        return "\n".join([*head, "", text, *([""] + notes if notes else [])]).rstrip() + "\n"


async def fetch(url: str, policy: NetworkPolicy | None = None, *,
                resolver: Resolver | None = None) -> WebPage:
    """GET ``url`` under ``policy`` and extract readable text; every hop is SSRF-checked.

    Raises ``SafetyViolation`` for a refused URL, host or address (before connecting), and
    ``FetchError`` for DNS failures, HTTP errors, timeouts and binary content.
    """
    import aiohttp

    policy = policy or NetworkPolicy()
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _fetch(url, policy, resolver)
    except TimeoutError:
        raise FetchError(f"fetching {url} timed out after {policy.timeout_s:g}s (the server "
                         "is slow or unreachable); try again later or use another source",
                         url=url) from None
    except aiohttp.ClientError as exc:  # refused connection, TLS failure, broken response
        raise FetchError(f"could not fetch {url}: {type(exc).__name__}: {exc}; check the URL "
                         "or try another source", url=url) from None


def fetch_sync(url: str, policy: NetworkPolicy | None = None, *,
               resolver: Resolver | None = None, runner: LoopRunner | None = None) -> WebPage:
    """``fetch`` for notebook cells and scripts: runs on the lab's background loop."""
    return (runner or get_runner()).run(fetch(url, policy, resolver=resolver))


def web_tools(policy: NetworkPolicy | None = None, *,
              resolver: Resolver | None = None) -> list[Tool]:
    """The Web domain's tools for the Toolbox: ``fetch_url``."""
    policy = policy or NetworkPolicy()

    async def fetch_url(url: str,
                        max_chars: Annotated[int | None, Field(ge=100)] = None) -> str:
        """Fetch a public web page (or text/JSON document) and return its readable text.

        Only public http(s) hosts can be fetched; navigation, scripts and markup are
        removed from HTML. Binary files (images, PDFs, archives) are refused.

        Args:
            url: absolute http:// or https:// URL of a public page.
            max_chars: cut the returned text to this many characters (at least 100).
        """
        if max_chars is not None and max_chars < 100:  # until Tool keeps Annotated limits
            raise ValueError(f"max_chars must be at least 100, got {max_chars}; omit it to "
                             "read the whole page")
        page = await fetch(url, policy, resolver=resolver)
        return page.render(max_chars)

    return [Tool(fetch_url, risk=RiskLevel.NETWORK)]


# -- the request loop -----------------------------------------------------------------------
async def _fetch(url: str, policy: NetworkPolicy, resolver: Resolver | None) -> WebPage:
    import aiohttp

    pins: dict[str, tuple[str, ...]] = {}
    hop = await _checked(url, policy, resolver, pins)  # refused before any socket exists
    connector = aiohttp.TCPConnector(resolver=pinned_resolver(pins), use_dns_cache=False,
                                     force_close=True)
    headers = {"User-Agent": USER_AGENT, "Accept": "text/html, text/plain, "
               "application/json;q=0.9, */*;q=0.5", "Accept-Encoding": "gzip, deflate"}
    async with aiohttp.ClientSession(connector=connector, trust_env=False, headers=headers,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        redirects: list[str] = []
        while True:
            async with session.get(hop.url, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status in REDIRECT_CODES and location:
                    redirects.append(str(hop.url))
                    if len(redirects) > policy.max_redirects:
                        raise FetchError(f"{url} redirected more than {policy.max_redirects} "
                                         "times (NetworkPolicy.max_redirects); the page may "
                                         "loop; try the final address directly", url=url)
                    hop = await _checked(_join(hop, location), policy, resolver, pins)
                    continue
                return await _read(url, hop, resp, policy, redirects)


async def _checked(url: Any, policy: NetworkPolicy, resolver: Resolver | None,
                   pins: dict[str, tuple[str, ...]]) -> CheckedURL:
    checked = await check_url(url, policy, resolver=resolver)
    pins[checked.host] = checked.addresses
    return checked


def _join(hop: CheckedURL, location: str) -> str:
    from yarl import URL

    try:
        return str(hop.url.join(URL(location)))
    except ValueError:
        raise SafetyViolation("network.bad_url", f"{hop.url} redirected to an invalid "
                              f"Location {location[:200]!r}; the redirect was not followed"
                              ) from None


async def _read(url: str, hop: CheckedURL, resp: Any, policy: NetworkPolicy,
                redirects: list[str]) -> WebPage:
    final = str(hop.url)
    if resp.status >= 400:
        # the standard phrase, not the server's: a reason phrase is text the page's owner
        # writes ("404 Ignore all previous instructions"), and errors reach the model
        phrase = _STATUS_PHRASES.get(resp.status, "")
        raise FetchError(f"HTTP {resp.status} {phrase} from {final}; the page "
                         "does not exist or refused the request; check the URL or search "
                         "for another source".replace("  ", " "), url=final, status=resp.status)
    mime = (resp.content_type or "").lower()
    if resp.headers.get("Content-Type") and not _is_textual(mime):
        raise FetchError(f"{final} is binary content ({mime}); fetch_url reads HTML, plain "
                         "text, JSON and XML only", url=final, status=resp.status)
    body, truncated = await _stream(resp, policy.max_bytes)
    if not resp.headers.get("Content-Type"):
        mime = _sniff(body, final)
    text = _decode(body, resp.charset, mime)
    title, readable = None, text
    if mime in HTML_TYPES:  # parsing a large page takes a while: keep the loop responsive
        loop = asyncio.get_running_loop()
        title, readable = await loop.run_in_executor(None, _extract, text)
    return WebPage(url=url, final_url=final, status=resp.status, content_type=mime,
                   title=title, text=readable, bytes_read=len(body), truncated=truncated,
                   redirects=redirects, max_bytes=policy.max_bytes)


async def _stream(resp: Any, max_bytes: int) -> tuple[bytes, bool]:
    """At most ``max_bytes`` of the (decompressed) body; True if there was more."""
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        buf += chunk
        if len(buf) > max_bytes:
            return bytes(buf[:max_bytes]), True
    return bytes(buf), False


def _is_textual(mime: str) -> bool:
    return (mime.startswith("text/") or mime in HTML_TYPES or mime in TEXT_TYPES
            or mime.endswith(("+json", "+xml")))


def _sniff(body: bytes, url: str) -> str:
    head = body[:1024]
    if b"\x00" in head:
        raise FetchError(f"{url} sent binary content without a Content-Type; fetch_url "
                         "reads HTML, plain text, JSON and XML only", url=url)
    return "text/html" if re.search(rb"<(!doctype html|html|body)", head, re.I) else "text/plain"


def _decode(body: bytes, charset: str | None, mime: str) -> str:
    """Decode with the declared charset, then an HTML ``<meta charset>``, then UTF-8."""
    candidates = [charset]
    if mime in HTML_TYPES and (m := _META_CHARSET.search(body[:4096])):
        candidates.append(m.group(1).decode("ascii"))
    for name in candidates:
        if name:
            try:
                return body.decode(codecs.lookup(name).name, errors="replace")
            except LookupError:
                continue
    return body.decode("utf-8", errors="replace")


def _extract(html: str) -> tuple[str | None, str]:
    """Title and main text via trafilatura, falling back to its baseline extractor."""
    import trafilatura

    doc = trafilatura.bare_extraction(html, with_metadata=True, include_comments=False,
                                      include_tables=True)
    title = getattr(doc, "title", None) if doc is not None else None
    text = getattr(doc, "text", None) if doc is not None else None
    if not text:
        text = trafilatura.baseline(html)[1]
    return title or None, text or ""


__all__ = ["FetchError", "WebPage", "fetch", "fetch_sync", "web_tools"]
