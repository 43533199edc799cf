"""SSRF: every URL here must be refused with SafetyViolation before any connection is made.

A real aiohttp server on 127.0.0.1 counts requests, and the URLs that spell loopback point
at its port, so a guard that let one through would show up as a hit. A spy on aiohttp's
connector proves that nothing else was dialled either, and an injected resolver means no
test ever asks real DNS.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

import aiohttp
import pytest
from aiohttp import web

from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.netguard import FetchError
from aillm_lab.tools.policy import NetworkPolicy
from aillm_lab.tools.web import fetch

FAKE_DNS: dict[str, list[str]] = {
    "evil.example": ["127.0.0.1"],
    "rebind.example": ["93.184.215.14", "127.0.0.1"],  # ANY private answer refuses
    "v6loop.example": ["::1"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "meta.example": ["169.254.169.254"],
    "169.254.169.254.nip.io": ["169.254.169.254"],
    "private.example": ["10.0.0.5"],
    "cgnat.example": ["100.64.1.1"],
    "ula.example": ["fd00::1"],
    "localhost": ["127.0.0.1"],
    "foo.localhost": ["127.0.0.1"],
}


class CountingServer:
    """An aiohttp server on 127.0.0.1 in its own thread that records every request path."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> CountingServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.paths.append(request.path_qs)
            target = request.query.get("to")
            if target:
                raise web.HTTPFound(target.replace("PORT", str(self.port)))
            return web.Response(text="secret internal data")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture(scope="module")
def server() -> Iterator[CountingServer]:
    with CountingServer() as srv:
        yield srv


@pytest.fixture
def dialled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection aiohttp tries to open during the test (it still opens it)."""
    calls: list[str] = []
    original = aiohttp.TCPConnector.connect

    async def spy(self: aiohttp.TCPConnector, req: aiohttp.ClientRequest,
                  *args: object, **kwargs: object) -> object:
        calls.append(str(req.url))
        return await original(self, req, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aiohttp.TCPConnector, "connect", spy)
    return calls


class FakeResolver:
    """Answers from FAKE_DNS (or a given table) and records each question."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = FAKE_DNS if table is None else table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"test resolver: no such host {host!r}")
        return self.table[host]


LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:PORT/", "http://127.0.0.2:PORT/", "http://127.1:PORT/",
    "http://0177.0.0.1:PORT/", "http://0x7f000001:PORT/", "http://2130706433:PORT/",
    "http://0x7f.0.0.1:PORT/", "http://0x7f.1:PORT/", "http://017700000001:PORT/",
    "http://127.0.0.1.:PORT/", "http://0x7F.0x0.0x0.0x1:PORT/", "http://127.000.000.001:PORT/",
    "http://[::1]:PORT/", "http://[0:0:0:0:0:0:0:1]:PORT/", "http://[::ffff:127.0.0.1]:PORT/",
    "http://[::ffff:7f00:1]:PORT/", "http://[0:0:0:0:0:ffff:127.0.0.1]:PORT/",
    "http://[::127.0.0.1]:PORT/", "http://[64:ff9b::127.0.0.1]:PORT/",
    "http://[2002:7f00:1::]:PORT/", "http://localhost:PORT/", "http://localhost.:PORT/",
    "http://LOCALHOST:PORT/", "http://foo.localhost:PORT/",
    "http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3:PORT/",  # circled letters
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:PORT/",  # full-width digits
    "http://0.0.0.0:PORT/", "http://0:PORT/", "http://[::]:PORT/",
    "http://evil.example:PORT/", "http://rebind.example:PORT/", "http://v6loop.example:PORT/",
    "http://mapped.example:PORT/", "HTTP://127.0.0.1:PORT/upper-scheme",
]
METADATA = [
    "http://169.254.169.254/latest/meta-data/", "http://2852039166/", "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/", "http://169.254.43518/", "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/", "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/", "http://100.100.100.200/latest/meta-data/", "http://[fd00:ec2::254]/",
    "http://meta.example/", "http://169.254.169.254.nip.io/", "http://169.254.170.2/v2/creds",
]
PRIVATE = [
    "http://10.0.0.1/", "http://10.255.255.255/", "http://172.16.0.1/", "http://172.31.255.254/",
    "http://192.168.0.1/", "http://192.168.1.1:8080/admin", "http://100.64.0.1/",
    "http://169.254.0.1/", "http://[fe80::1]/", "http://[fe80::1%25eth0]/", "http://[fc00::1]/",
    "http://[fd12:3456::1]/", "http://224.0.0.1/", "http://[ff02::1]/",
    "http://255.255.255.255/", "http://240.0.0.1/", "http://198.18.0.1/", "http://192.0.2.1/",
    "http://[2001:db8::1]/", "http://[64:ff9b::10.0.0.1]/", "http://[2002:a00:1::]/",
    "http://private.example/", "http://cgnat.example/", "http://ula.example/",
    "http://intranet/", "http://printer.local/", "http://db.internal/", "http://nas.lan/",
]
SCHEMES_AND_TRICKS = [
    "file:///etc/passwd", "gopher://127.0.0.1:PORT/_GET%20/", "ftp://example.org/",
    "dict://127.0.0.1:PORT/info", "ldap://127.0.0.1/", "javascript:alert(1)",
    "data:text/html,hi", "//127.0.0.1:PORT/", "http:127.0.0.1", "http:///etc/passwd",
    "http://evil@127.0.0.1:PORT/", "http://user:pass@example.org/",
    "http://127.0.0.1:PORT@evil.example/", "http://example.org@127.0.0.1:PORT/",
    "http://example.org\\@127.0.0.1:PORT/", "http://example.org%2f@127.0.0.1:PORT/",
    "http://:@127.0.0.1:PORT/", "http://256.0.0.1/", "http://1.2.3.4.5/", "http://08.0.0.1/",
    "http://127.0.0.1 :PORT/", "http://127.0.0.1:PORT/\r\nHost: x", "http://exa mple.org/",
    "http://127.0.0.1:0/",
]
ALL = LOOPBACK_SPELLINGS + METADATA + PRIVATE + SCHEMES_AND_TRICKS


def test_the_corpus_has_at_least_sixty_distinct_urls() -> None:
    assert len(set(ALL)) == len(ALL) >= 60


@pytest.mark.parametrize("template", ALL)
def test_ssrf_url_is_refused_without_connecting(template: str, server: CountingServer,
                                                dialled: list[str]) -> None:
    url = template.replace("PORT", str(server.port))
    before = len(server.paths)
    policy = NetworkPolicy(timeout_s=5)
    with pytest.raises(SafetyViolation) as info:
        asyncio.run(fetch(url, policy, resolver=FakeResolver()))
    assert info.value.rule.startswith("network.")
    assert info.value.detail  # says what is allowed instead
    assert dialled == []
    assert len(server.paths) == before


@pytest.mark.parametrize("target", [
    "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://2852039166/",
    "http://167772161/",
    "http://[::ffff:127.0.0.1]:PORT/", "http://metadata.google.internal/",
    "http://private.example/", "file:///etc/passwd", "gopher://127.0.0.1:PORT/",
    "http://evil@127.0.0.1:PORT/",
])
def test_redirect_to_a_refused_target_is_not_followed(target: str, server: CountingServer,
                                                      dialled: list[str]) -> None:
    """Loopback is allowed for the first hop only by address, so each redirect is judged."""
    first = f"http://127.0.0.1:{server.port}/start?to={target}"
    before = len(server.paths)
    with pytest.raises(SafetyViolation):
        asyncio.run(fetch(first, NetworkPolicy(allow_loopback=True, timeout_s=5),
                          resolver=FakeResolver()))
    assert len(server.paths) == before + 1 and server.paths[-1].startswith("/start?to=")
    assert len(dialled) == 1


def test_redirect_to_a_host_off_the_allow_list_is_refused(server: CountingServer) -> None:
    first = f"http://127.0.0.1:{server.port}/start?to=http://localhost:PORT/secret"
    policy = NetworkPolicy(allow_loopback=True, allow_hosts=["127.0.0.1"], timeout_s=5)
    with pytest.raises(SafetyViolation) as info:
        asyncio.run(fetch(first, policy, resolver=FakeResolver()))
    assert info.value.rule == "network.host_not_allowed"
    assert "/secret" not in server.paths


def test_denied_host_is_refused_even_when_public(dialled: list[str]) -> None:
    resolver = FakeResolver({"ads.tracker.example": ["93.184.215.14"]})
    policy = NetworkPolicy(deny_hosts=["tracker.example"])
    with pytest.raises(SafetyViolation) as info:
        asyncio.run(fetch("https://ads.tracker.example/x", policy, resolver=resolver))
    assert info.value.rule == "network.denied_host"
    assert resolver.asked == [] and dialled == []


def test_allow_loopback_does_not_open_private_ranges(dialled: list[str]) -> None:
    policy = NetworkPolicy(allow_loopback=True, timeout_s=5)
    for url in ("http://10.0.0.1/", "http://169.254.169.254/", "http://[fe80::1]/",
                "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://private.example/"):
        with pytest.raises(SafetyViolation):
            asyncio.run(fetch(url, policy, resolver=FakeResolver()))
    assert dialled == []


def test_connection_uses_the_checked_address_not_a_second_dns_answer(
        server: CountingServer) -> None:
    """DNS rebinding: the resolver answers loopback, then a private address; we pin the first."""
    answers = iter([["127.0.0.1"], ["10.0.0.1"], ["10.0.0.1"]])
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return next(answers)

    url = f"http://rebinding.example:{server.port}/pinned"
    page = asyncio.run(fetch(url, NetworkPolicy(allow_loopback=True, timeout_s=5),
                             resolver=rebinding))
    assert page.text == "secret internal data"
    assert asked == ["rebinding.example"]
    assert server.paths[-1] == "/pinned"


def test_unresolvable_name_is_a_fetch_error_not_a_connection(dialled: list[str]) -> None:
    with pytest.raises(FetchError, match="could not resolve"):
        asyncio.run(fetch("http://nowhere.example/", NetworkPolicy(), resolver=FakeResolver()))
    assert dialled == []
