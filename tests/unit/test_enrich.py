import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.enrich import client_ip, is_bot, parse_trusted_proxies, truncate_ip


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        (" 10.1.2.3 ", "10.1.2.0"),
        ("0.0.0.0", "0.0.0.0"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
        ("2001:DB8::1", "2001:db8::"),
        ("fe80::1%eth0", "fe80::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("::1", "::"),
        ("", None),
        ("not an ip", None),
        ("256.1.1.1", None),
        ("1.2.3", None),
        ("1.2.3.4:80", None),
        ("2001:db8::/48", None),
    ],
)
def test_truncate_ip(ip: str, expected: str | None) -> None:
    assert truncate_ip(ip) == expected


@settings(max_examples=200)
@given(st.ip_addresses())
def test_truncate_ip_keeps_only_the_network(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    truncated = truncate_ip(str(address))
    assert truncated is not None
    assert ipaddress.ip_address(truncated) == network.network_address


TRUSTED = parse_trusted_proxies("10.0.0.0/8, 2001:db8:ffff::/48, 192.0.2.1")


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        (None, None, None),
        ("garbage", None, None),
        ("198.51.100.7", None, "198.51.100.7"),
        # An untrusted peer's X-Forwarded-For is ignored: the client wrote it.
        ("198.51.100.7", "203.0.113.1", "198.51.100.7"),
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", "203.0.113.1", "203.0.113.1"),
        ("10.0.0.5:4321", "203.0.113.1", "203.0.113.1"),
        # Right-most untrusted: a forged left part does not win.
        ("10.0.0.5", "1.1.1.1, 203.0.113.1, 10.0.0.9", "203.0.113.1"),
        ("10.0.0.5", "203.0.113.1:5555,10.0.0.9", "203.0.113.1"),
        ("10.0.0.5", "[2001:db8::7]:443", "2001:db8::7"),
        ("192.0.2.1", "10.0.0.2, 10.0.0.3", "10.0.0.2"),
        ("::ffff:10.0.0.5", "203.0.113.1", "203.0.113.1"),
        ("2001:db8:ffff::1", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.5", "203.0.113.1, nonsense", None),
        ("10.0.0.5", " , ", "10.0.0.5"),
    ],
)
def test_client_ip(peer: str | None, forwarded_for: str | None, expected: str | None) -> None:
    assert client_ip(peer, forwarded_for, TRUSTED) == expected


def test_client_ip_without_trusted_proxies_is_the_peer() -> None:
    assert client_ip("10.0.0.5", "203.0.113.1", ()) == "10.0.0.5"


def test_parse_trusted_proxies_rejects_garbage() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.300"):
        parse_trusted_proxies("10.0.0.0/8, 10.0.0.300")


@pytest.mark.parametrize(
    "user_agent",
    [
        None,
        "",
        "   ",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
        "Baiduspider+(+http://www.baidu.com/search/spider.htm)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0.0.0",
        "curl/8.4.0",
        "Wget/1.21.4",
        "python-requests/2.31.0",
        "Python/3.11 aiohttp/3.9.1",
        "Go-http-client/1.1",
        "okhttp/4.12.0",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0)",
        "x" * 600 + " Googlebot",
    ],
)
def test_is_bot(user_agent: str | None) -> None:
    assert is_bot(user_agent)


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:120.0) Gecko/20100101 Firefox/120.0",
        "Mozilla/5.0 (Linux; Android 10; CUBOT_X20_PRO) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/119.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        "x" * 600,
    ],
)
def test_is_not_bot(user_agent: str) -> None:
    assert not is_bot(user_agent)
