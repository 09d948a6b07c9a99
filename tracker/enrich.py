"""What the edge adds to an event: the client's truncated address and a bot flag. Pure code.

The full client address is never stored: `truncate_ip` keeps the /24 of an IPv4 address and
the /48 of an IPv6 address, enough for coarse geography and abuse analysis.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Collection

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def truncate_ip(ip: str) -> str | None:
    """The address with the host part zeroed (IPv4 /24, IPv6 /48), or None if it is not one.

    An IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) is treated as the IPv4 address.

    >>> truncate_ip("203.0.113.77"), truncate_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348")
    ('203.0.113.0', '2001:db8:85a3::')
    """
    ip = ip.strip()
    try:
        packed = socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        pass
    else:
        return f"{packed[0]}.{packed[1]}.{packed[2]}.0"
    address, _, _zone = ip.partition("%")
    try:
        packed = socket.inet_pton(socket.AF_INET6, address)
    except OSError:
        return None
    if packed.startswith(_V4_MAPPED_PREFIX):
        return f"{packed[12]}.{packed[13]}.{packed[14]}.0"
    return socket.inet_ntop(socket.AF_INET6, packed[:6] + bytes(10))


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Collection[IPNetwork]
) -> str | None:
    """The client's address, not yet truncated; None when it cannot be told.

    X-Forwarded-For is believed only when the connection comes from a trusted proxy, and then
    only up to the right-most address that is not itself a trusted proxy: everything to the
    left of that was written by the client and may be forged. Several X-Forwarded-For headers
    are joined with "," by the caller, in order.
    """
    if peer is None:
        return None
    peer_address = _address(peer)
    if peer_address is None:
        return None
    if not forwarded_for or not _is_trusted(peer_address, trusted_proxies):
        return str(peer_address)
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    chosen = peer_address
    for hop in reversed(hops):
        if not hop:
            continue
        address = _address(hop)
        if address is None:
            # A malformed hop means the chain cannot be trusted past this point.
            return None
        chosen = address
        if not _is_trusted(address, trusted_proxies):
            break
    return str(chosen)


def parse_trusted_proxies(text: str) -> tuple[IPNetwork, ...]:
    """Parse ADPULSE_TRUSTED_PROXIES-style text: addresses or networks separated by ","."""
    networks: list[IPNetwork] = []
    for item in text.split(","):
        item = item.strip()
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as error:
                raise ValueError(f"{item!r}: {error}") from None
    return tuple(networks)


_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> _IPAddress | None:
    """An address from a peer or X-Forwarded-For entry, with any port or brackets removed."""
    text = text.strip()
    if text.startswith("["):  # "[2001:db8::1]:443"
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # "203.0.113.7:51234"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: _IPAddress, trusted_proxies: Collection[IPNetwork]) -> bool:
    return any(
        address.version == network.version and address in network for network in trusted_proxies
    )


_BOT = re.compile(
    r"bot|crawl|spider|slurp|scrap|archiver|headless|phantomjs|selenium|webdriver"
    r"|puppeteer|playwright|lighthouse|pagespeed|gtmetrix|pingdom|uptime|statuscake|site24x7"
    r"|monitor|nagios|zabbix|check_http|datadog|newrelic|prometheus"
    r"|curl|wget|httpie|python|aiohttp|httpx|go-http-client|java/|okhttp|apache-httpclient"
    r"|libwww|lwp-|perl|ruby|php|guzzle|node-fetch|axios|undici|postman|insomnia|dart:io"
    r"|facebookexternalhit|facebookcatalog|whatsapp|embedly|preview|mediapartners"
    r"|feedfetcher|chatgpt|claude|anthropic|perplexity|bytespider|scrapy"
)
_MAX_USER_AGENT = 1024
_MAX_CACHED_USER_AGENT = 512


def is_bot(user_agent: str | None) -> bool:
    """True for crawlers, monitors, headless browsers, HTTP libraries, and a missing agent.

    >>> is_bot("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
    True
    """
    if not user_agent or user_agent.isspace():
        return True
    if len(user_agent) > _MAX_CACHED_USER_AGENT:
        return _search_bot(user_agent[:_MAX_USER_AGENT])
    return _is_bot_cached(user_agent)


# The same few hundred user agents make up nearly all traffic; long ones are not cached so
# that the cache stays small whatever clients send.
@functools.lru_cache(maxsize=4096)
def _is_bot_cached(user_agent: str) -> bool:
    return _search_bot(user_agent)


def _search_bot(user_agent: str) -> bool:
    # Lower-cased first, as re.IGNORECASE is much slower. "Cubot" is a phone brand.
    return _BOT.search(user_agent.lower().replace("cubot", "")) is not None
