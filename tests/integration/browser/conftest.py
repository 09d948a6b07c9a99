"""A real headless Chromium, a small web site on its own origin, and a tracker it can stop.

Fixtures
    browser        a Playwright `Browser`: Debian's chromium at CHROMIUM, never a downloaded
                   one (`playwright install` is not used). Missing: skips with the install
                   command, fails when CI=true. One per module.
    context        a fresh `BrowserContext` (its own storage, cookies and HTTP cache).
    site           `Site`: pages on 127.0.0.1:<port>, the README's install lines in each.
    site_tracker   `SiteTracker`: a tracker whose CORS origin is the site, on a port it keeps
                   when `stop()`-ped and `start()`-ed again (the pages and the events they
                   queued name that origin).
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

import pytest
from aiohttp import web

from tests.conftest import RedisDatabase
from tests.integration.conftest import TRACKER_ENV, readiness
from tests.kafka_helpers import wait_until_sync
from tests.processes import AdpulseProcess, Worker
from tests.services import KafkaService, free_port

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext

CHROMIUM = "/usr/bin/chromium"
# Everything a test browser does not need, and nothing that reaches the Internet on its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
README = Path(__file__).parents[3] / "README.md"
README_HOST = "https://track.example.com"


def install_lines() -> str:
    """The two lines the README's "On your website" section tells a site to paste."""
    section = README.read_text().split("## On your website", 1)[1]
    found = re.search(r"```html\n(.*?)```", section, re.DOTALL)
    if found is None:
        raise AssertionError("README.md: no ```html block under '## On your website'")
    return found.group(1)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("the playwright package is missing: make venv (it is in the dev extra)")
    if not shutil.which(CHROMIUM):
        _unavailable(f"{CHROMIUM} not found: apt-get install -y chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    # A visitor's browser is not headless: with "HeadlessChrome" in its user agent the tracker
    # rightly flags its clicks as a bot's, and the worker does not count them.
    page = await browser.new_page()
    user_agent = (await page.evaluate("navigator.userAgent")).replace("HeadlessChrome", "Chrome")
    await page.close()
    made = await browser.new_context(user_agent=user_agent)
    try:
        yield made
    finally:
        await made.close()


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


class Site:
    """Pages of a shop: `/{name}` with the install lines, then the page's own script.

    A page's `head` script goes between the two install lines, where a consent manager's
    call must be to come before the snippet runs.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self.tracker_url = ""
        self.pages: dict[str, tuple[str, str]] = {}

    def page(self, name: str, body: str = "", head: str = "") -> None:
        self.pages[name] = (head, body)

    def url(self, name: str, query: str = "") -> str:
        return f"{self.origin}/{name}" + (f"?{query}" if query else "")

    async def handle(self, request: web.Request) -> web.Response:
        found = self.pages.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        head, body = found
        stub, script = install_lines().replace(README_HOST, self.tracker_url).split("\n", 1)
        document = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(request.path)}</title>"
            f"{stub}{_script(head)}{script}</head><body>{_script(body)}</body></html>"
        )
        return web.Response(text=document, content_type="text/html")


def _script(source: str) -> str:
    return f"<script>{source}</script>" if source else ""


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    made = Site(free_port())
    app = web.Application()
    app.router.add_get("/{name}", made.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", made.port).start()
    try:
        yield made
    finally:
        await runner.cleanup()


# The site's tracker issues signed click ids (`adpulse.core.click_ids`); its worker verifies
# them with the same key.
CLICK_KEY_ENV: Final = {"ADPULSE_CLICK_KEY": "browser-test-click-key-" + "5" * 16}


class SiteTracker:
    """`adpulse tracker` allowing the site's origin, on one port for its whole life."""

    def __init__(
        self,
        kafka: str,
        topic: str,
        tmp_path: Path,
        origin: str,
        *,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = [
            "--port", str(self.port), "--kafka", kafka, "--topic", topic,
            "--spool-dir", str(tmp_path / "spool"), "--partitions", "4", *extra,
        ]  # fmt: skip
        self._env = {
            **TRACKER_ENV,
            **CLICK_KEY_ENV,
            "ADPULSE_CORS_ORIGINS": origin,
            **(env or {}),
        }
        self._log = tmp_path / "tracker.log"
        self.process: AdpulseProcess | None = None

    def start(self) -> None:
        self.process = AdpulseProcess("tracker", self._args, self._log, self._env)
        self.process.wait_http(f"{self.url}/healthz")
        wait_until_sync(
            lambda: readiness(self.url).get("broker") == "up",
            timeout=30,
            message="tracker connected to the broker",
        )

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        code = process.terminate()
        assert code == 0, process.log()


@pytest.fixture
async def site_tracker(
    kafka: KafkaService, topic: str, tmp_path: Path, site: Site
) -> AsyncIterator[SiteTracker]:
    made = SiteTracker(kafka.bootstrap, topic, tmp_path, site.origin)
    await asyncio.to_thread(made.start)
    site.tracker_url = made.url
    try:
        yield made
    finally:
        await asyncio.to_thread(made.stop)


@pytest.fixture
def worker(
    kafka: KafkaService, topic: str, redis_db: RedisDatabase, tmp_path: Path
) -> Iterator[Worker]:
    """A worker counting the test's topic into its Redis database."""
    started = Worker(
        kafka=kafka.bootstrap,
        topic=topic,
        redis_url=redis_db.url,
        log=tmp_path / "worker.log",
        group=f"adpulse-worker-t{uuid.uuid4().hex[:8]}",
        env=CLICK_KEY_ENV,
    )
    try:
        yield started
    finally:
        if started.process.poll() is None:
            started.terminate()
