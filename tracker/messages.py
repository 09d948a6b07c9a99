"""HTTP messages as the tracker's handlers see them: `Request`, `Response`, `HttpError` for a
request refused before a handler, and `render`, a response's bytes on the wire."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final

# Every standard status's reason phrase, looked up once here rather than per response.
REASONS: Final = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: bytes
    # Lower-cased names to raw values; decoded only when a handler asks for one.
    headers: dict[bytes, bytes]
    body: bytes
    peer: str | None

    def header(self, name: str) -> str | None:
        """The header `name` (lower case), repeated ones joined with ", "."""
        value = self.headers.get(name.encode("latin-1"))
        return None if value is None else value.decode("latin-1")


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A response that never changes (the pixel's GIF): rendered once a second, not per request.
    # Only for module-level constants, since the cache is keyed by the object's identity.
    constant: bool = False
    # What to answer instead if the turn's records cannot be written to the log; a response
    # with one is sent only after the turn's commit.
    refusal: Response | None = None
    # The answer is not known yet (it waits for Redis): once this future is done, its result
    # is called, in the turn that sends the response it returns (so the events it submits are
    # in that turn's commit). The connection reads no further request until it is sent, so
    # answers stay in order.
    later: asyncio.Future[Callable[[], Response]] | None = None


Handler = Callable[[Request], Response]


class HttpError(Exception):
    """A request the parser refused before a handler saw it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def render(response: Response, date: bytes, keep_alive: bool) -> bytes:
    # A status outside the standard's list goes out without a reason, which RFC 9112 allows.
    reason = REASONS.get(response.status, b"")
    parts = [b"HTTP/1.1 %d %s\r\nDate: %s\r\n" % (response.status, reason, date)]
    if response.content_type is not None:
        parts.append(b"Content-Type: %s\r\n" % response.content_type.encode())
    for name, value in response.headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    parts.append(b"Content-Length: %d\r\n" % len(response.body))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(response.body)
    return b"".join(parts)
