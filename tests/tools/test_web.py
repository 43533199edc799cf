"""The Web tool's surface and the SSRF guard's building blocks, without a server.

End-to-end fetches live in tests/security/test_benign_web.py (what works) and
tests/security/test_ssrf.py (what is refused).
"""

from __future__ import annotations

import asyncio
import ipaddress
import pickle
import socket
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aillm_lab.errors import AillmError, SafetyViolation
from aillm_lab.tools.base import RiskLevel, ValidationError
from aillm_lab.tools.netguard import (
    FetchError,
    check_host_lists,
    check_hostname,
    parse_host,
    parse_url,
    pinned_resolver,
    resolve_and_check,
)
from aillm_lab.tools.policy import NetworkPolicy
from aillm_lab.tools.web import WebPage, _decode, _extract, web_tools


def test_web_tools_expose_fetch_url_as_a_network_tool() -> None:
    (tool,) = web_tools(NetworkPolicy())
    assert tool.name == "fetch_url" and tool.risk is RiskLevel.NETWORK
    params = tool.spec.parameters
    assert params["required"] == ["url"]
    assert set(params["properties"]) == {"url", "max_chars"}
    assert "public" in tool.spec.description


@pytest.mark.parametrize("arguments", [{}, {"url": "https://example.org", "extra": 1},
                                       {"url": ["not", "a", "string"]}])
def test_fetch_url_rejects_bad_arguments(arguments: dict[str, object]) -> None:
    (tool,) = web_tools(NetworkPolicy())
    with pytest.raises(ValidationError):
        tool.validate(arguments)


def test_fetch_url_refuses_a_tiny_max_chars_before_fetching() -> None:
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["93.184.215.14"]

    (tool,) = web_tools(NetworkPolicy(), resolver=resolver)
    with pytest.raises(ValueError, match=r"max_chars\n.*greater than or equal to 100"):
        asyncio.run(tool.acall({"url": "https://example.org/", "max_chars": 5}))
    assert asked == []


def test_fetch_url_tool_refuses_a_private_url_before_resolving() -> None:
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["10.0.0.1"]

    (tool,) = web_tools(NetworkPolicy(), resolver=resolver)
    with pytest.raises(SafetyViolation) as info:
        asyncio.run(tool.acall({"url": "http://192.168.0.10/admin"}))
    assert info.value.rule == "network.private_address" and asked == []
    with pytest.raises(SafetyViolation):
        asyncio.run(tool.acall({"url": "http://router.example/"}))
    assert asked == ["router.example"]


def test_render_without_truncation_has_no_truncation_note() -> None:
    page = WebPage(url="https://a.example/", final_url="https://a.example/", status=200,
                   content_type="text/plain", text="hello", bytes_read=5, max_bytes=100)
    assert page.render() == "URL: https://a.example/\n\nhello\n"
    assert "[truncated" not in page.render(max_chars=5)


def test_render_states_both_kinds_of_truncation() -> None:
    page = WebPage(url="u", final_url="u", status=200, content_type="text/plain",
                   text="~" * 300, bytes_read=300, truncated=True, max_bytes=300)
    out = page.render(max_chars=100)
    assert "larger than 300 bytes" in out and "showing 100 of 300 characters" in out
    assert out.count("~") == 100


def _spell(value: int, parts: int, bases: list[int]) -> str:
    octets = list(value.to_bytes(4, "big"))
    numbers = octets[:parts - 1] + [int.from_bytes(bytes(octets[parts - 1:]), "big")]
    out = []
    for number, base in zip(numbers, bases, strict=False):
        out.append({10: str(number), 8: "0" + format(number, "o"),
                    16: "0x" + format(number, "x")}[base])
    return ".".join(out)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4),
       st.lists(st.sampled_from([10, 8, 16]), min_size=4, max_size=4))
def test_parse_host_reads_every_inet_aton_spelling_like_libc(value: int, parts: int,
                                                             bases: list[int]) -> None:
    spelling = _spell(value, parts, bases)
    expected = ipaddress.IPv4Address(value)
    assert socket.inet_aton(spelling) == expected.packed  # libc agrees on the spelling
    assert parse_host(spelling) == expected
    assert parse_host(spelling.upper().replace("0X", "0x") + ".") == expected


@pytest.mark.parametrize("host", ["256.1.1.1", "1.2.3.4.5", "1.16777216", "09", "1.2.3.0400",
                                  "4294967296", "1..1"])
def test_out_of_range_or_malformed_numeric_host_is_refused_like_libc(host: str) -> None:
    with pytest.raises(OSError):
        socket.inet_aton(host)
    with pytest.raises(SafetyViolation) as info:
        parse_host(host)
    assert info.value.rule == "network.bad_host"


@pytest.mark.parametrize("host", ["example.org", "1.2.3.example", "x1", "0x.example"])
def test_names_are_not_mistaken_for_addresses(host: str) -> None:
    assert parse_host(host) is None


def test_invalid_ipv6_literal_is_refused() -> None:
    with pytest.raises(SafetyViolation, match="not a valid IPv6"):
        parse_host("[::gg]")


@pytest.mark.parametrize(("host", "allowed"), [
    ("example.org", True), ("docs.example.org", True), ("DOCS.Example.org.", True),
    ("notexample.org", False), ("example.org.evil.com", False), ("org", False),
])
def test_allow_list_matches_the_host_and_its_subdomains_only(host: str, allowed: bool) -> None:
    policy = NetworkPolicy(allow_hosts=["example.org"])
    if allowed:
        check_host_lists(host, policy)
    else:
        with pytest.raises(SafetyViolation, match="not on the allow list"):
            check_host_lists(host, policy)


def test_deny_list_wins_over_allow_list() -> None:
    policy = NetworkPolicy(allow_hosts=["example.org"], deny_hosts=["private.example.org"])
    check_host_lists("www.example.org", policy)
    with pytest.raises(SafetyViolation, match="deny list"):
        check_host_lists("a.private.example.org", policy)


@pytest.mark.parametrize("host", ["exa%6dple.org", "a..b", "-bad.example", "x" * 64 + ".org"])
def test_malformed_host_names_are_refused(host: str) -> None:
    with pytest.raises(SafetyViolation) as info:
        check_hostname(host, NetworkPolicy())
    assert info.value.rule == "network.bad_host"


def test_idna_names_are_checked_in_their_ascii_form() -> None:
    url = parse_url("https://b\u00fccher.example/")
    assert url.raw_host == "xn--bcher-kva.example"
    check_hostname(url.raw_host, NetworkPolicy())


def test_resolver_failure_and_empty_answers_are_fetch_errors() -> None:
    async def broken(host: str, port: int) -> list[str]:
        raise socket.gaierror("Name or service not known")

    async def empty(host: str, port: int) -> list[str]:
        return []

    for resolver, message in ((broken, "could not resolve"), (empty, "has no addresses")):
        with pytest.raises(FetchError, match=message):
            asyncio.run(resolve_and_check("gone.example", 80, NetworkPolicy(),
                                          resolver=resolver))


def test_pinned_resolver_answers_only_checked_hosts() -> None:
    resolver = pinned_resolver({"a.example": ("93.184.215.14", "2606:2800::1")})
    answers = asyncio.run(resolver.resolve("A.example.", 443))
    assert [(a["host"], a["family"], a["hostname"]) for a in answers] == [
        ("93.184.215.14", socket.AF_INET, "A.example."),
        ("2606:2800::1", socket.AF_INET6, "A.example.")]
    with pytest.raises(OSError, match="not checked"):
        asyncio.run(resolver.resolve("b.example", 443))


def test_decode_falls_back_to_utf8_for_an_unknown_charset() -> None:
    assert _decode("caf\u00e9".encode(), "no-such-charset", "text/plain") == "caf\u00e9"
    assert _decode(b"caf\xe9", "latin-1", "text/plain") == "caf\u00e9"


def test_extract_falls_back_to_baseline_text_for_tiny_pages() -> None:
    title, text = _extract("<html><body><p>Just one short line.</p></body></html>")
    assert "Just one short line." in text and title is None


def test_errors_are_typed_and_picklable() -> None:
    assert issubclass(FetchError, AillmError)
    err = pickle.loads(pickle.dumps(SafetyViolation("network.scheme", "only http")))
    assert (err.rule, err.detail) == ("network.scheme", "only http")


def test_importing_the_web_tool_does_not_load_aiohttp_or_trafilatura() -> None:
    code = ("import sys, aillm_lab.tools.web; "
            "print(sorted(m for m in ('aiohttp', 'trafilatura', 'yarl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_pinned_resolver_honours_a_requested_address_family() -> None:
    resolver = pinned_resolver({"a.example": ("93.184.215.14", "2606:2800::1")})
    v6 = asyncio.run(resolver.resolve("a.example", 443, socket.AF_INET6))
    assert [a["host"] for a in v6] == ["2606:2800::1"]
    both = asyncio.run(resolver.resolve("a.example", 443, socket.AF_UNSPEC))
    assert len(both) == 2
