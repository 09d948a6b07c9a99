"""The README's website and shell examples, run as written against `adpulse dev`.

Only the host changes (https://track.example.com becomes the dev tracker). The shell examples
run in bash with curl; the HTML ones are played by a plain HTTP client as a browser would: the
pixel is fetched, the newsletter link is followed to its landing page, and the landing page's
beacon posts its JSON with the click id from that page's address. Then the counters must show
what the examples sent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from email.message import Message
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from adpulse.cli.devstack import SAMPLE_COUPONS, SAMPLE_FX_RATES
from tests.integration.test_dev_stack import ROOT, DevRun, assert_all_gone, start_dev
from tests.kafka_helpers import wait_until_sync
from tests.metrics import Samples, scrape

README = ROOT / "README.md"
README_HOST = "https://track.example.com"
API_TOKEN = "readme-token"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"


def examples(language: str) -> list[str]:
    """The README's fenced blocks in `language` that talk to the tracker."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return [block for block in blocks if README_HOST in block]


class Page(HTMLParser):
    """The pixels, links and scripts of an HTML example, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, str]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img" and found.get("src"):
            self.elements.append(("img", found["src"] or ""))
        elif tag == "a" and found.get("href"):
            self.elements.append(("a", found["href"] or ""))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.elements.append(("script", data))


BEACON = re.compile(
    r"navigator\.sendBeacon\(\s*\"([^\"]+)\",\s*JSON\.stringify\((\{.*?\})\)\)", re.S
)
LANDING_CLICK_ID = 'new URLSearchParams(location.search).get("adp_click_id")'


def beacon(script: str, landing: str) -> tuple[str, bytes]:
    """The URL and body a browser's sendBeacon posts, on a page whose address is `landing`."""
    match = BEACON.search(script)
    assert match, f"no sendBeacon(url, JSON.stringify({{...}})) in {script!r}"
    url, literal = match.groups()
    click_id = parse_qs(urlsplit(landing).query).get("adp_click_id", [None])[0]
    assert LANDING_CLICK_ID in literal, literal
    literal = literal.replace(LANDING_CLICK_ID, json.dumps(click_id))
    # A JavaScript object literal with bare keys, as JSON.
    document = json.loads(re.sub(r"([{,]\s*)([A-Za-z_]\w*)\s*:", r'\1"\2":', literal))
    return url, json.dumps(document).encode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: bytes


def request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
    """The answer as a browser gets it; a redirect is not followed (its Location is wanted)."""
    opener = urllib.request.build_opener(NoRedirect)
    sent = urllib.request.Request(
        url, data=data, headers={"User-Agent": BROWSER, **(headers or {})}
    )
    try:
        with opener.open(sent, timeout=10) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, error.headers, error.read())


def json_documents(text: str) -> list[dict[str, Any]]:
    """The JSON answers curl printed one after another, without newlines between them."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while position < len(text.rstrip()):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
        while position < len(text) and text[position].isspace():
            position += 1
    return documents


def total(samples: Samples, name: str, **labels: str) -> Decimal:
    wanted = set(labels.items())
    return sum(
        (Decimal(str(value)) for (sample, got), value in samples.items()
         if sample == name and wanted <= set(got)),
        Decimal(0),
    )  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    run = start_dev(tmp_path_factory.mktemp("readme"), env={"ADPULSE_API_TOKEN": API_TOKEN})
    try:
        wait_until_sync(
            lambda: "adpulse dev is running" in run.text() or run.process.poll() is not None,
            timeout=120,
            interval=0.1,
        )
        assert run.process.poll() is None, run.text()
        yield run
    finally:
        assert run.stop() == 0, run.text()
    assert_all_gone(run)


def test_the_readme_examples_are_counted_as_the_readme_says(stack: DevRun) -> None:
    tracker = f"http://127.0.0.1:{stack.ports['tracker']}"
    before = scrape(stack.exporter)

    # The website examples, in document order, as a browser plays them.
    html = examples("html")
    assert html, "the README has no HTML example for the tracker"
    landing = ""
    for block in html:
        if "/s.js" in block:
            continue  # the site snippet's install: played in Chromium by tests/integration/browser
        page = Page()
        page.feed(block)
        for kind, content in page.elements:
            if kind == "img":
                answer = request(content.replace(README_HOST, tracker))
                assert answer.status == 200, answer.headers.get("X-Adpulse-Error")
                assert answer.headers.get("X-Adpulse-Error") is None
            elif kind == "a":
                answer = request(content.replace(README_HOST, tracker))
                assert answer.status == 302, answer.body
                landing = answer.headers["Location"]
            else:
                url, body = beacon(content, landing)
                answer = request(
                    url.replace(README_HOST, tracker),
                    data=body,
                    headers={
                        "Content-Type": "text/plain;charset=UTF-8",
                        "Origin": "https://shop.example.com",
                    },
                )
                assert answer.status == 202, answer.body

    # The shell examples, as written but for the host.
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed: apt-get install curl"
    for block in examples("sh"):
        script = block.replace(README_HOST, tracker)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": "/usr/bin:/bin", "ADPULSE_API_TOKEN": API_TOKEN},
        )
        assert result.returncode == 0, result.stderr
        documents = json_documents(result.stdout)
        assert len(documents) == block.count("curl "), result.stdout
        for document in documents:
            assert document.get("accepted", 0) >= 1, document

    # What the examples sent, from the README itself.
    text = README.read_text()
    rate = Decimal(dict(item.split("=") for item in SAMPLE_FX_RATES.split(","))["EUR"])
    value = Decimal(re.search(r"order_id=A-1001&amp;value=([\d.]+)&amp;currency=EUR", text)[1])  # type: ignore[index]
    spend = Decimal(re.search(r'"cost":"([\d.]+)"', text)[1])  # type: ignore[index]
    coupon_channel = dict(SAMPLE_COUPONS)[re.search(r'"coupon":"(\w+)"', text)[1]]  # type: ignore[index]

    def grew(samples: Samples, name: str, **labels: str) -> Decimal:
        return total(samples, name, **labels) - total(before, name, **labels)

    expected = {
        # The newsletter link's click, and the one a server forwarded with a browser's agent.
        ("adpulse_events_total", (("channel", "email"), ("type", "click"))): Decimal(2),
        # The CRM's lead.
        ("adpulse_events_total", (("channel", "email"), ("type", "lead"))): Decimal(1),
        # The pixel and the beacon report one order, A-1001: counted once.
        ("adpulse_events_total", (("type", "conversion"),)): Decimal(1),
        ("adpulse_revenue_total", ()): value * rate,
        # The postback's coupon is registered for its channel, so it is not unattributed.
        ("adpulse_events_total", (("channel", coupon_channel), ("type", "redemption"))): Decimal(1),
        ("adpulse_spend_total", (("channel", "paid_search"),)): spend,
    }

    def shown() -> dict[tuple[str, tuple[tuple[str, str], ...]], Decimal]:
        samples = scrape(stack.exporter)
        return {key: round(grew(samples, key[0], **dict(key[1])), 6) for key in expected}

    try:
        wait_until_sync(lambda: shown() == expected, timeout=30, interval=0.2)
    except TimeoutError:
        assert shown() == expected
