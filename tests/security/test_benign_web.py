"""Legitimate fetches still work under the SSRF guard, against a local aiohttp server.

The server runs on 127.0.0.1 and the policy sets ``allow_loopback=True``; names other than
the literal address go through an injected resolver, so no test asks real DNS.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from aiohttp import web

from aillm_lab.errors import SafetyViolation
from aillm_lab.runtime import LoopRunner
from aillm_lab.tools.netguard import (
    FetchError,
    check_address,
    check_url,
    parse_host,
    resolve_and_check,
)
from aillm_lab.tools.policy import NetworkPolicy
from aillm_lab.tools.web import fetch, fetch_sync, web_tools

ARTICLE = """<!doctype html><html><head><title>Rivers of the World</title>
<script>var tracking = "SCRIPT-MARKER";</script><style>.x{color:red}</style></head><body>
<nav><a href="/">Home</a> <a href="/about">NAV-MARKER about us</a></nav>
<article><h1>Rivers of the World</h1>
<p>The Nile is a major north-flowing river in northeastern Africa and flows into the
Mediterranean Sea. It is among the longest rivers in the world.</p>
<p>The Amazon River in South America is the largest river by discharge volume of water in
the world, and the disputed longest river system.</p></article>
<footer>FOOTER-MARKER copyright</footer></body></html>"""
PLAIN = "line one\n  indented line two\nline three: \u00e9\u00e8\n"
DATA = {"name": "aillm", "values": [1, 2, 3], "nested": {"ok": True}}
RUSSIAN = "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0420\u0435\u043a\u0430"
LOOPBACK = NetworkPolicy(allow_loopback=True, timeout_s=10)


class Site:
    """A small web site on 127.0.0.1, served from its own thread; records (path, Host)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Site:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        @web.middleware
        async def record(request: web.Request, handler: web.Handler) -> web.StreamResponse:
            self.seen.append((request.path, request.host))
            return await handler(request)

        app = web.Application(middlewares=[record])
        for path, handler in _routes().items():
            app.router.add_get(path, handler)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _routes() -> dict[str, web.Handler]:
    async def article(_: web.Request) -> web.StreamResponse:
        return web.Response(text=ARTICLE, content_type="text/html")

    async def plain(_: web.Request) -> web.StreamResponse:
        return web.Response(text=PLAIN, content_type="text/plain")

    async def data(_: web.Request) -> web.StreamResponse:
        return web.json_response(DATA)

    async def big(_: web.Request) -> web.StreamResponse:
        return web.Response(text="abcdefghij" * 50_000, content_type="text/plain")

    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response(text="too late")

    async def cyrillic(_: web.Request) -> web.StreamResponse:
        return web.Response(body=RUSSIAN.encode("cp1251"),
                            headers={"Content-Type": "text/plain; charset=windows-1251"})

    async def meta_charset(_: web.Request) -> web.StreamResponse:
        html = (f'<html><head><meta charset="koi8-r"><title>t</title></head><body><article>'
                f"<p>{RUSSIAN}. {RUSSIAN}. {RUSSIAN}.</p></article></body></html>")
        return web.Response(body=html.encode("koi8-r"), headers={"Content-Type": "text/html"})

    async def image(_: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, content_type="image/png")

    async def untyped(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": ""})  # aiohttp would add one
        await resp.prepare(request)
        await resp.write(b"no content type here, just text")
        return resp

    async def gzipped(_: web.Request) -> web.StreamResponse:
        return web.Response(body=gzip.compress(PLAIN.encode()), headers={
            "Content-Type": "text/plain; charset=utf-8", "Content-Encoding": "gzip"})

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.query.get("to", "/article"))

    async def loop(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop")

    async def server_error(_: web.Request) -> web.StreamResponse:
        raise web.HTTPInternalServerError(text="boom")

    return {"/article": article, "/plain": plain, "/data.json": data, "/big": big,
            "/slow": slow, "/cyrillic": cyrillic, "/meta-charset": meta_charset,
            "/image.png": image, "/untyped": untyped, "/gz": gzipped, "/redirect": redirect,
            "/hop1": redirect, "/loop": loop, "/error": server_error}


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with Site() as s:
        yield s


def test_html_article_becomes_title_and_text_without_nav_or_script(site: Site) -> None:
    page = asyncio.run(fetch(f"{site.base}/article", LOOPBACK))
    assert page.title == "Rivers of the World"
    assert "The Nile is a major north-flowing river" in page.text
    assert "largest river by discharge" in page.text
    for marker in ("SCRIPT-MARKER", "NAV-MARKER", "<p>", "color:red"):
        assert marker not in page.text
    assert page.status == 200 and page.content_type == "text/html"
    assert page.render().startswith("Title: Rivers of the World\nURL: ")


def test_plain_text_passes_through_unchanged(site: Site) -> None:
    page = asyncio.run(fetch(f"{site.base}/plain", LOOPBACK))
    assert page.text == PLAIN and page.title is None


def test_json_passes_through_and_still_parses(site: Site) -> None:
    page = asyncio.run(fetch(f"{site.base}/data.json", LOOPBACK))
    assert page.content_type == "application/json"
    assert json.loads(page.text) == DATA


def test_same_host_redirect_is_followed_and_reported(site: Site) -> None:
    page = asyncio.run(fetch(f"{site.base}/hop1?to=/redirect", LOOPBACK))
    assert page.final_url == f"{site.base}/article"
    assert page.redirects == [f"{site.base}/hop1?to=/redirect", f"{site.base}/redirect"]
    assert f"(redirected from {site.base}/hop1?to=/redirect)" in page.render()
    assert "The Nile" in page.text


def test_redirect_loop_stops_at_max_redirects(site: Site) -> None:
    policy = NetworkPolicy(allow_loopback=True, max_redirects=3, timeout_s=10)
    before = len(site.seen)
    with pytest.raises(FetchError, match="more than 3 times"):
        asyncio.run(fetch(f"{site.base}/loop", policy))
    assert len(site.seen) - before == 4  # the first request and three redirects


def test_size_cap_truncates_and_says_so(site: Site) -> None:
    policy = NetworkPolicy(allow_loopback=True, max_bytes=1000, timeout_s=10)
    page = asyncio.run(fetch(f"{site.base}/big", policy))
    assert page.truncated and page.bytes_read == 1000 and len(page.text) == 1000
    assert "[truncated: the page is larger than 1000 bytes" in page.render()


def test_gzip_body_is_decoded(site: Site) -> None:
    assert asyncio.run(fetch(f"{site.base}/gz", LOOPBACK)).text == PLAIN


def test_slow_endpoint_times_out_with_a_readable_error(site: Site) -> None:
    policy = NetworkPolicy(allow_loopback=True, timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out after 0\.5s") as info:
        asyncio.run(fetch(f"{site.base}/slow", policy))
    assert time.monotonic() - start < 10  # generous: the server would answer after 30 s
    assert "try again later" in str(info.value)


def test_allow_list_admits_the_listed_host(site: Site) -> None:
    policy = NetworkPolicy(allow_loopback=True, allow_hosts=["127.0.0.1"], timeout_s=10)
    assert "The Nile" in asyncio.run(fetch(f"{site.base}/article", policy)).text


def test_allow_listed_name_is_fetched_with_its_host_header_at_the_pinned_address(
        site: Site) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "docs.example.org" else []

    policy = NetworkPolicy(allow_loopback=True, allow_hosts=["example.org"], timeout_s=10)
    page = asyncio.run(fetch(f"http://docs.example.org:{site.port}/plain", policy,
                             resolver=resolver))
    assert page.text == PLAIN
    assert site.seen[-1] == ("/plain", f"docs.example.org:{site.port}")


def test_404_is_a_readable_error(site: Site) -> None:
    with pytest.raises(FetchError, match="HTTP 404") as info:
        asyncio.run(fetch(f"{site.base}/missing", LOOPBACK))
    assert info.value.status == 404 and "check the URL" in str(info.value)


def test_500_is_a_readable_error(site: Site) -> None:
    with pytest.raises(FetchError, match="HTTP 500") as info:
        asyncio.run(fetch(f"{site.base}/error", LOOPBACK))
    assert info.value.status == 500


def test_declared_non_utf8_charset_is_decoded(site: Site) -> None:
    assert asyncio.run(fetch(f"{site.base}/cyrillic", LOOPBACK)).text == RUSSIAN


def test_html_meta_charset_is_used_when_the_header_has_none(site: Site) -> None:
    assert RUSSIAN in asyncio.run(fetch(f"{site.base}/meta-charset", LOOPBACK)).text


def test_binary_content_type_is_refused_readably(site: Site) -> None:
    with pytest.raises(FetchError, match=r"binary content \(image/png\)"):
        asyncio.run(fetch(f"{site.base}/image.png", LOOPBACK))


def test_missing_content_type_is_sniffed_as_text(site: Site) -> None:
    page = asyncio.run(fetch(f"{site.base}/untyped", LOOPBACK))
    assert page.text == "no content type here, just text" and page.content_type == "text/plain"


def test_localhost_name_is_allowed_with_allow_loopback(site: Site) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "localhost" else []

    page = asyncio.run(fetch(f"http://localhost:{site.port}/plain", LOOPBACK,
                             resolver=resolver))
    assert page.text == PLAIN


def test_fetch_url_tool_returns_rendered_text_and_cuts_at_max_chars(site: Site) -> None:
    (tool,) = web_tools(LOOPBACK)
    full = asyncio.run(tool.acall({"url": f"{site.base}/article"}))
    assert full.startswith("Title: Rivers of the World") and "The Nile" in full
    short = asyncio.run(tool.acall({"url": f"{site.base}/big", "max_chars": 100}))
    assert "[truncated: showing 100 of 500000 characters" in short


def test_fetch_sync_runs_on_the_lab_loop(site: Site) -> None:
    runner = LoopRunner(name="test-web-runner")
    try:
        assert fetch_sync(f"{site.base}/plain", LOOPBACK, runner=runner).text == PLAIN
    finally:
        runner.close()


# -- the address checker lets public addresses through (no connection is made) -------------
@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2001:4860:4860::8888",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
])
def test_public_address_is_allowed(address: str) -> None:
    check_address(address, NetworkPolicy())


def test_public_address_passes_even_in_numeric_spellings() -> None:
    for spelling in ("134744072", "0x8080808", "010.010.010.010", "8.526344"):
        assert parse_host(spelling) == ipaddress.IPv4Address("8.8.8.8")
        checked = asyncio.run(check_url(f"https://{spelling}/dns-query", NetworkPolicy()))
        assert str(checked.url) == "https://8.8.8.8/dns-query"


def test_public_ipv6_url_is_allowed_without_dns() -> None:
    checked = asyncio.run(check_url("https://[2606:4700:4700::1111]/", NetworkPolicy()))
    assert checked.addresses == ("2606:4700:4700::1111",) and checked.port == 443


def test_public_name_with_only_public_answers_is_allowed() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "93.184.215.14"]

    addresses = asyncio.run(resolve_and_check("example.com", 443, NetworkPolicy(),
                                              resolver=resolver))
    assert addresses == ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]


def test_loopback_is_refused_by_the_checker_without_allow_loopback() -> None:
    with pytest.raises(SafetyViolation):
        check_address("127.0.0.1", NetworkPolicy())
    check_address("127.0.0.1", NetworkPolicy(allow_loopback=True))
    check_address("::1", NetworkPolicy(allow_loopback=True))


def test_refused_connection_is_a_readable_fetch_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and now is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError, match="could not fetch") as info:
        asyncio.run(fetch(f"http://127.0.0.1:{port}/", LOOPBACK))
    assert "try another source" in str(info.value)


def test_tls_to_a_plain_http_server_fails_readably(site: Site) -> None:
    with pytest.raises(FetchError, match="could not fetch"):
        asyncio.run(fetch(f"https://127.0.0.1:{site.port}/plain", LOOPBACK))
