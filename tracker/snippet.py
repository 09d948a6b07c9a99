"""The site snippet, `GET /s.js`: the file in the package, read once at start, served from memory.

Caching: ``/s.js?v=<version>`` (`Snippet.version`, the first 16 hex digits of the file's
SHA-256, also its ETag) is cached for a year as immutable: a page that names it never asks
again, and still runs the snippet while the tracker is down. ``/s.js`` itself, and any other
``v``, are cached for an hour, so that a new snippet reaches every site within the hour; a
stale ``v`` gets the current file with the short lifetime, never an old file for a year.
The gzipped body is made once too, for the clients that accept it.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

from tracker.http import Request, Response

CONTENT_TYPE: Final = "text/javascript; charset=utf-8"
PINNED_CACHE: Final = "public, max-age=31536000, immutable"
CURRENT_CACHE: Final = "public, max-age=3600"


@dataclass(frozen=True, slots=True)
class Snippet:
    source: bytes
    gzipped: bytes
    version: str

    @classmethod
    def load(cls) -> Snippet:
        """The packaged tracker/static/s.js; read at start, before the server takes requests."""
        source = files("tracker").joinpath("static", "s.js").read_bytes()
        version = hashlib.sha256(source).hexdigest()[:16]
        return cls(source, gzip.compress(source, compresslevel=9, mtime=0), version)

    @property
    def path(self) -> str:
        """The URL path a page should name to have the snippet cached for a year."""
        return f"/s.js?v={self.version}"

    def answer(self, request: Request) -> Response:
        pinned = request.query == f"v={self.version}".encode()
        etag = f'"{self.version}"'
        headers = [
            ("Cache-Control", PINNED_CACHE if pinned else CURRENT_CACHE),
            ("ETag", etag),
            ("Vary", "Accept-Encoding"),
            # Pages that isolate themselves (COEP) may still load it from the tracker's origin.
            ("Cross-Origin-Resource-Policy", "cross-origin"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        if request.header("if-none-match") == etag:
            return Response(304, b"", None, headers)
        if b"gzip" in (request.headers.get(b"accept-encoding") or b""):
            headers.append(("Content-Encoding", "gzip"))
            return Response(200, self.gzipped, CONTENT_TYPE, headers)
        return Response(200, self.source, CONTENT_TYPE, headers)
