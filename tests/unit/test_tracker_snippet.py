"""The site snippet as the tracker serves it: its size, and the caching of its two URLs."""

from __future__ import annotations

import gzip
import re

from adpulse.core.channels import AD_CLICK_ID_KEYS
from adpulse.core.event import EventRules
from tracker.http import Request
from tracker.snippet import CURRENT_CACHE, PINNED_CACHE, Snippet

# Issue 14's budget for what a page downloads.
MAX_GZIPPED_BYTES = 5 * 1024
SNIPPET = Snippet.load()


def get(query: bytes = b"", **headers: str) -> Request:
    raw = {name.replace("_", "-").encode(): value.encode() for name, value in headers.items()}
    return Request("GET", "/s.js", query, raw, b"", "127.0.0.1")


def test_the_snippet_gzipped_is_under_5_kb() -> None:
    size = len(SNIPPET.gzipped)
    print(f"/s.js: {len(SNIPPET.source)} bytes, {size} gzipped")  # the figure, with -s
    assert gzip.decompress(SNIPPET.gzipped) == SNIPPET.source
    assert size < MAX_GZIPPED_BYTES


def test_the_versioned_url_is_cached_for_a_year_and_the_plain_one_for_an_hour() -> None:
    pinned = SNIPPET.answer(get(SNIPPET.path.split("?", 1)[1].encode()))
    assert dict(pinned.headers)["Cache-Control"] == PINNED_CACHE
    assert PINNED_CACHE == "public, max-age=31536000, immutable"
    for query in (b"", b"v=0123456789abcdef", b"v=" + SNIPPET.version.encode() + b"&x=1"):
        answer = SNIPPET.answer(get(query))
        assert answer.status == 200
        assert answer.body == SNIPPET.source
        assert dict(answer.headers)["Cache-Control"] == CURRENT_CACHE


def test_gzip_when_accepted_and_304_when_unchanged() -> None:
    zipped = SNIPPET.answer(get(accept_encoding="gzip, deflate, br"))
    assert dict(zipped.headers)["Content-Encoding"] == "gzip"
    assert zipped.body == SNIPPET.gzipped
    etag = dict(zipped.headers)["ETag"]
    assert etag == f'"{SNIPPET.version}"'
    unchanged = SNIPPET.answer(get(if_none_match=etag))
    assert (unchanged.status, unchanged.body) == (304, b"")
    assert SNIPPET.answer(get(if_none_match='"other"')).status == 200


def test_the_snippets_limits_are_the_contracts() -> None:
    # The snippet runs in the visitor's browser and restates these; here they are held to
    # the contract's (adpulse.core.event.EventRules), so that a change there fails here.
    source = SNIPPET.source.decode()
    rules = EventRules()
    (kept,) = re.findall(r"value\.slice\(0, (\d+)\)", source)
    assert int(kept) == rules.max_utm_length
    assert int(kept) == rules.max_campaign_length == rules.max_ad_click_id_length
    (click_id,) = re.findall(r"const CLICK_ID = /\^\[\\x21-\\x7e\]\{1,(\d+)\}\$/;", source)
    assert int(click_id) == rules.max_id_length
    params = re.search(r"const PARAMS = \[([^\]]*)\]", source)
    assert params is not None
    names = set(re.findall(r'"(\w+)"', params[1]))
    assert names >= AD_CLICK_ID_KEYS
