"""Click-redirect targets: only to allowed hosts or signed links, never an open redirect."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_TARGET_LENGTH = 2048
CLICK_ID_PARAMETER = "adp_click_id"


class RedirectRefused(ValueError):
    """The target may not be redirected to; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RedirectPolicy:
    """Hosts a click may redirect to: exact names, or `*.example.com` for any subdomain.

    A link signed with `secret` (HMAC-SHA256 of the target, hex, in `sig`) may go anywhere
    http(s), so campaigns can point at hosts nobody listed in advance.
    """

    hosts: frozenset[str] = frozenset()
    secret: bytes | None = None

    def check(self, target: str, signature: str | None = None) -> str:
        """The target if it may be redirected to, else RedirectRefused."""
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
        if signature is not None and self.secret is not None:
            if hmac.compare_digest(signature, sign(self.secret, target)):
                return target
            raise RedirectRefused("the link's signature does not match its target")
        if not self.allows(host):
            raise RedirectRefused(
                f"host {host!r} is not on the redirect allow-list (ADPULSE_REDIRECT_HOSTS)"
            )
        return target

    def allows(self, host: str) -> bool:
        if host in self.hosts:
            return True
        parts = host.split(".")
        return any("*." + ".".join(parts[i:]) in self.hosts for i in range(1, len(parts) - 1))


def sign(secret: bytes, target: str) -> str:
    return hmac.new(secret, target.encode(), hashlib.sha256).hexdigest()


def with_click_id(target: str, click_id: str) -> str:
    """`target` with the click id appended to its query, fragment kept in place."""
    base, hash_mark, fragment = target.partition("#")
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}{CLICK_ID_PARAMETER}={click_id}{hash_mark}{fragment}"
