"""SSRF guard for the Web tool: which URLs, host names and IP addresses it may reach.

Three layers, each of which refuses on its own:

1. ``check_url`` parses with ``yarl`` (the parser aiohttp itself uses, so the URL we check
   is byte for byte the URL that is fetched), then refuses other schemes, userinfo, odd
   host characters, local-only names (``localhost``, ``*.internal``, single labels) and
   the allow/deny lists.
2. Numeric hosts are read the way libc's ``inet_aton`` reads them (``2130706433``,
   ``0x7f.1``, ``0177.0.0.1``, ``127.1``), so no spelling of an address slips past.
3. ``resolve_and_check`` resolves the name and refuses if ANY address is not a public
   unicast address, looking inside IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6.

The caller connects only to the addresses returned here (``PinnedResolver``), so a DNS
answer that changes between check and connect (rebinding) is never used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aillm_lab.errors import AillmError, SafetyViolation
from aillm_lab.tools.policy import NetworkPolicy

if TYPE_CHECKING:
    from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``async (host, port) -> ["93.184.215.14", ...]``; inject one in tests so no real DNS runs."""

SCHEMES = frozenset({"http", "https"})
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata",
                            "instance-data", "instance-data.ec2.internal"})
LOCAL_SUFFIXES = ("localhost", "local", "internal", "localdomain", "home.arpa", "lan",
                  "intranet", "corp")
METADATA_IPS = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254",
    "192.0.0.192"))

_V4, _V6 = ipaddress.IPv4Network, ipaddress.IPv6Network
_BLOCKED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified/'this network'"),
    (_V4("10.0.0.0/8"), "private (RFC 1918)"),
    (_V4("100.64.0.0/10"), "shared carrier-grade NAT (RFC 6598)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private (RFC 1918)"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "private (RFC 1918)"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved/broadcast"),
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64"),
    (_V6("100::/64"), "discard-only"),
    (_V6("2001::/32"), "Teredo tunnel"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("fc00::/7"), "unique local (private)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local (deprecated)"),
    (_V6("ff00::/8"), "multicast"),
)
_NAT64 = _V6("64:ff9b::/96")
_COMPAT = _V6("::/96")
_HOST_RE = re.compile(r"^(?=.{1,253}\.?$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)"
                      r"(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class FetchError(AillmError, RuntimeError):
    """A fetch failed for a non-safety reason (DNS, HTTP status, timeout, content type).

    The message is written for the model: what failed and what to try instead.
    """

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url, self.status = url, status


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed every check, and the addresses the connection must use."""

    url: URL
    host: str
    port: int
    addresses: tuple[str, ...] = field(default=())


async def check_url(url: str | URL, policy: NetworkPolicy, *,
                    resolver: Resolver | None = None) -> CheckedURL:
    """Parse, check and resolve ``url``; ``SafetyViolation`` names the rule it broke."""
    parsed = parse_url(url)
    host = _key(parsed.raw_host or "")
    ip = parse_host(host)
    if ip is not None:
        check_address(ip, policy, host=host)
        canonical = str(ip)
        check_host_lists(canonical, policy)
        if canonical != host:  # aiohttp refuses legacy numeric forms: send the checked one
            parsed = parsed.with_host(canonical)
        return CheckedURL(parsed, canonical, _port(parsed), (canonical,))
    check_hostname(host, policy)
    check_host_lists(host, policy)
    port = _port(parsed)
    addresses = await resolve_and_check(host, port, policy, resolver=resolver)
    return CheckedURL(parsed, host, port, tuple(addresses))


def parse_url(url: str | URL) -> URL:
    """The ``yarl.URL`` aiohttp would request, or ``SafetyViolation`` for a tricky one."""
    from yarl import URL

    raw = str(url)
    if any(ord(c) < 33 or c == "\x7f" for c in raw.strip()) or "\\" in raw:
        raise SafetyViolation("network.bad_url", f"{raw[:200]!r} contains whitespace, "
                              "control characters or backslashes; send a plain http(s) URL")
    try:
        parsed = URL(raw.strip())
    except (ValueError, UnicodeError) as exc:
        raise SafetyViolation("network.bad_url", f"{raw[:200]!r} is not a valid URL "
                              f"({exc}); send an absolute http(s) URL") from None
    if parsed.scheme not in SCHEMES:
        raise SafetyViolation("network.scheme", f"scheme {parsed.scheme or '(none)'!r} is not "
                              "allowed; only http:// and https:// URLs can be fetched")
    if not parsed.is_absolute() or not parsed.raw_host:
        raise SafetyViolation("network.bad_url", f"{raw[:200]!r} has no host; send an "
                              "absolute URL such as https://example.org/page")
    if parsed.raw_user is not None or parsed.raw_password is not None or "@" in (
            parsed.raw_authority or ""):
        raise SafetyViolation("network.userinfo", "URLs with a user name or password "
                              "('user@host') are refused; send the URL without the part "
                              "before '@'")
    if parsed.explicit_port == 0:
        raise SafetyViolation("network.bad_url", "port 0 is not a real port; omit the port")
    return parsed


def parse_host(host: str) -> IPAddress | None:
    """The IP address a host literal means (every inet_aton spelling), or None for a name.

    Following the WHATWG URL standard, a host whose last label is numeric is an IPv4
    address or an error, never a DNS name, so ``0x7f.1`` cannot be sent to a resolver.
    """
    host = _key(host)
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise SafetyViolation("network.bad_host", f"{host!r} is not a valid IPv6 "
                                  "address; zone ids such as '%eth0' are refused") from None
    labels = host.split(".")
    if not _NUMERIC_LABEL.match(labels[-1]):
        return None
    parts = [_inet_number(label, host) for label in labels]
    if len(parts) > 4 or any(p > 255 for p in parts[:-1]) or \
            parts[-1] >= 256 ** (5 - len(parts)):
        raise SafetyViolation("network.bad_host", f"{host!r} looks like an IPv4 address but "
                              "is out of range; send a dotted address like 93.184.215.14")
    value = parts[-1]
    for i, part in enumerate(parts[:-1]):
        value += part << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def check_address(ip: IPAddress | str, policy: NetworkPolicy, *,
                  host: str | None = None) -> None:
    """Refuse any address that is not public unicast (loopback only if the policy says so)."""
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    shown = f"{host} -> {ip}" if host and host != str(ip) else str(ip)
    if ip in METADATA_IPS:
        raise _private(shown, "a cloud metadata endpoint")
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            raise _private(shown, "a scoped (zone id) IPv6 address")
        embedded = _embedded_v4(ip)
        if embedded is not None:  # judge the IPv4 it reaches; loopback never allowed here
            check_address(embedded, policy.model_copy(update={"allow_loopback": False}),
                          host=shown)
            return
    if ip.is_loopback and policy.allow_loopback:
        return
    for net, label in _BLOCKED:
        if ip.version == net.version and ip in net:
            raise _private(shown, label)
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        raise _private(shown, "not a public unicast address")


async def resolve_and_check(host: str, port: int, policy: NetworkPolicy, *,
                            resolver: Resolver | None = None) -> list[str]:
    """Resolve ``host`` and return its addresses if ALL of them are public; else refuse."""
    ip = parse_host(host)
    if ip is not None:
        check_address(ip, policy)
        return [str(ip)]
    check_hostname(host, policy)
    try:
        answers = list(await (resolver or system_resolver)(_key(host), port))
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"could not resolve {host!r} ({exc}); check the spelling of the "
                         "host name", url=host) from None
    if not answers:
        raise FetchError(f"{host!r} has no addresses; check the host name", url=host)
    checked: list[str] = []
    for answer in answers:
        addr = ipaddress.ip_address(answer)
        check_address(addr, policy, host=host)
        if str(addr) not in checked:
            checked.append(str(addr))
    return checked


def check_hostname(host: str, policy: NetworkPolicy) -> None:
    """Refuse names that only mean something inside a private network."""
    name = _key(host)
    if not _HOST_RE.match(name):
        raise SafetyViolation("network.bad_host", f"{host!r} is not a valid host name; "
                              "send a public DNS name like example.org")
    if name in METADATA_HOSTS:
        raise SafetyViolation("network.metadata_host", f"{host!r} is a cloud metadata "
                              "service; it can never be fetched")
    loopback_name = name == "localhost" or name.endswith(".localhost")
    if loopback_name and policy.allow_loopback:
        return
    if "." not in name or any(name == s or name.endswith("." + s) for s in LOCAL_SUFFIXES):
        raise SafetyViolation("network.private_name", f"{host!r} is a local or single-label "
                              "name that resolves inside a private network; only public "
                              "hosts (like example.org) can be fetched")


def check_host_lists(host: str, policy: NetworkPolicy) -> None:
    """Apply ``deny_hosts`` then ``allow_hosts`` (each entry matches itself and subdomains)."""
    name = _key(host)
    if any(_matches(name, entry) for entry in policy.deny_hosts):
        raise SafetyViolation("network.denied_host", f"{host!r} is on the deny list "
                              "(NetworkPolicy.deny_hosts); use another source")
    if policy.allow_hosts and not any(_matches(name, e) for e in policy.allow_hosts):
        allowed = ", ".join(policy.allow_hosts[:20])
        raise SafetyViolation("network.host_not_allowed", f"{host!r} is not on the allow "
                              f"list; allowed hosts (and their subdomains): {allowed}")


async def system_resolver(host: str, port: int) -> list[str]:
    """The OS resolver on the running loop (getaddrinfo runs in the loop's executor)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def pinned_resolver(pins: dict[str, tuple[str, ...]]) -> Any:
    """An aiohttp resolver that answers only with addresses already checked for a host.

    aiohttp asks its resolver at connect time; answering from ``pins`` (filled by
    ``check_url`` on each hop) means the socket goes to a checked address even if DNS now
    says otherwise. An unknown host fails closed. IP literals never reach a resolver:
    aiohttp connects to them directly, and ``check_url`` has checked them.
    """
    from aiohttp.abc import AbstractResolver

    class PinnedResolver(AbstractResolver):
        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_UNSPEC) -> list[Any]:
            addresses = pins.get(_key(host))
            if not addresses:
                raise OSError(f"{host!r} was not checked by the SSRF guard; refusing to "
                              "connect")
            answers = [{"hostname": host, "host": a, "port": port, "proto": 0,
                        "flags": socket.AI_NUMERICHOST,
                        "family": socket.AF_INET6 if ":" in a else socket.AF_INET}
                       for a in addresses]
            if family in (socket.AF_INET, socket.AF_INET6):
                answers = [a for a in answers if a["family"] == family]
            return answers

        async def close(self) -> None:
            return None

    return PinnedResolver()


# -- helpers --------------------------------------------------------------------------------
def _key(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


def _port(url: URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _inet_number(label: str, host: str) -> int:
    try:
        if label.startswith("0x"):
            return int(label[2:] or "0", 16)
        if len(label) > 1 and label.startswith("0"):
            return int(label, 8)
        return int(label, 10)
    except ValueError:
        raise SafetyViolation("network.bad_host", f"{host!r} looks like an IPv4 address but "
                              "does not parse; send a dotted address like 93.184.215.14"
                              ) from None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address tunnels to (mapped, compatible, NAT64, 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _matches(host: str, entry: str) -> bool:
    entry = _key(entry)
    return bool(entry) and (host == entry or host.endswith("." + entry))


def _private(shown: str, why: str) -> SafetyViolation:
    return SafetyViolation("network.private_address", f"{shown} is {why}; only public "
                           "internet addresses can be fetched")


__all__ = ["METADATA_HOSTS", "SCHEMES", "CheckedURL", "FetchError", "Resolver",
           "check_address", "check_host_lists", "check_hostname", "check_url", "parse_host",
           "parse_url", "pinned_resolver", "resolve_and_check", "system_resolver"]
