"""Click-redirect targets: only to allowed hosts or signed links, never an open redirect."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

MAX_TARGET_LENGTH = 2048
CLICK_ID_PARAMETER = "adp_click_id"
SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
# What a Location keeps as it is besides letters, digits and "_.-~": URI delimiters (RFC 3986)
# and "%" of escapes already made. Anything else, non-ASCII text above all, is percent-encoded.
URI_CHARACTERS = "!#$%&'()*+,/:;=?@[]"


class RedirectRefused(ValueError):
    """The target may not be redirected to; `reason` says why, `field` which parameter is at
    fault (`to`, or `sig` for the signature)."""

    def __init__(self, reason: str, field: str = "to") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class RedirectPolicy:
    """Hosts a click may redirect to: exact names, or `*.example.com` for any subdomain.

    A link signed with `secret` (HMAC-SHA256 of the target, hex, in `sig`) may go anywhere
    http(s), so campaigns can point at hosts nobody listed in advance.
    """

    hosts: frozenset[str] = frozenset()
    secret: bytes | None = field(default=None, repr=False)

    def check(self, target: str, signature: str | None = None) -> str:
        """The target as a Location (percent-encoded, host in IDNA) if it may be redirected
        to, else RedirectRefused."""
        if len(target) > MAX_TARGET_LENGTH:
            raise RedirectRefused(f"the target is longer than {MAX_TARGET_LENGTH} characters")
        if any(ord(char) < 0x21 or char == "\\" for char in target):
            raise RedirectRefused("the target contains spaces, control characters or backslashes")
        try:
            parts = urlsplit(target)
        except ValueError as error:
            raise RedirectRefused(f"the target is not a valid URL: {error}") from None
        if parts.scheme not in ("http", "https"):
            raise RedirectRefused("the target must be an absolute http or https URL")
        if "@" in parts.netloc:
            raise RedirectRefused("the target must not contain user information")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise RedirectRefused("the target has no host")
        location = _location(target, parts.netloc)
        if signature is not None and self.secret is not None:
            if SIGNATURE.fullmatch(signature) is None:
                raise RedirectRefused(
                    "the signature must be 64 hexadecimal digits, hex(HMAC-SHA256(secret, to))",
                    field="sig",
                )
            if hmac.compare_digest(signature.lower(), sign(self.secret, target)):
                return location
            raise RedirectRefused("the link's signature does not match its target", field="sig")
        if not self.allows(host) and not self.allows(urlsplit(location).hostname or ""):
            raise RedirectRefused(
                f"host {host!r} is not on the redirect allow-list (ADPULSE_REDIRECT_HOSTS)"
            )
        return location

    def allows(self, host: str) -> bool:
        if host in self.hosts:
            return True
        parts = host.split(".")
        return any("*." + ".".join(parts[i:]) in self.hosts for i in range(1, len(parts) - 1))


def _location(target: str, netloc: str) -> str:
    """`target` as a Location header carries it: ASCII only, so nothing is lost on the way."""
    if target.isascii():
        return quote(target, safe=URI_CHARACTERS)
    if not netloc.isascii():
        # No user information and not an IPv6 literal (both refused or ASCII): host[:port].
        host, colon, port = netloc.partition(":")
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise RedirectRefused(
                f"the target's host {host!r} is not a valid internationalised domain name"
            ) from None
        start = target.index(netloc)
        target = target[:start] + ascii_host + colon + port + target[start + len(netloc) :]
    return quote(target, safe=URI_CHARACTERS)


def sign(secret: bytes, target: str) -> str:
    return hmac.new(secret, target.encode(), hashlib.sha256).hexdigest()


def with_click_id(target: str, click_id: str) -> str:
    """`target` with the click id appended to its query, fragment kept in place."""
    base, hash_mark, fragment = target.partition("#")
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}{CLICK_ID_PARAMETER}={click_id}{hash_mark}{fragment}"
