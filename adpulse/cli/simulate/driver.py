"""Sends a `TrafficPlan` to the tracker over HTTP (aiohttp), at the plan's pace.

At most `concurrency` requests are in flight; when the tracker is slower than the plan, the
plan waits. A conversion or lead after a click waits for that click's answer (a redirect's
click id is in its Location); if the click failed, it is skipped and counted as such. Every
answer other than 2xx (302 for a redirect) is counted as an error in the `Tally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import aiohttp

from adpulse.cli.simulate.plan import (
    Action,
    Call,
    Click,
    Conversion,
    Lead,
    Redemption,
    Spend,
    TrafficPlan,
)
from adpulse.cli.simulate.tally import Tally

log = logging.getLogger(__name__)

BROWSERS: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
)
CRAWLERS: Final = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
)
CLICK_ID_PARAMETER: Final = "adp_click_id"
PROGRESS_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class DriverSettings:
    tracker_url: str
    api_token: str | None = None
    concurrency: int = 32
    request_timeout: float = 10.0
    drain_timeout: float = 15.0
    """At a stop, how long requests in flight may take before they are abandoned."""


# What a shop back end or a cost import sends: the tracker's bot check flags it, and only
# clicks keep that flag, so these conversions, redemptions and spend still count.
SERVER_AGENT: Final = "shop-backend/2.4 python-requests/2.32"


def user_agent(action: Action) -> str:
    """A crawler for a bot click, a browser for other clicks, a server's agent otherwise."""
    if not isinstance(action, Click):
        return SERVER_AGENT
    agents = CRAWLERS if action.bot else BROWSERS
    return agents[zlib.crc32(action.event_id.encode()) % len(agents)]


def visitor_address(action: Click) -> str:
    """A documentation address (RFC 5737) for the visitor a server forwards a click for."""
    return f"198.51.100.{zlib.crc32(action.event_id.encode()) % 254 + 1}"


def wire_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def click_id_from(location: str | None) -> str | None:
    """The tracker's click id from a redirect's Location, None if absent."""
    if not location:
        return None
    values = parse_qs(urlsplit(location).query).get(CLICK_ID_PARAMETER)
    return values[0] if values else None


class TrafficDriver:
    """Run with `await TrafficDriver(plan, settings, tally).run(stop)`; set `stop` to end it."""

    def __init__(self, plan: TrafficPlan, settings: DriverSettings, tally: Tally) -> None:
        self.plan = plan
        self.settings = settings
        self.tally = tally
        self._base = settings.tracker_url.rstrip("/")
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._clicks: dict[int, asyncio.Future[str | None]] = {}
        self._followers: dict[int, int] = {}
        # The number each call went to, so that a webhook posted again is the same.
        self._numbers: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self._started = 0.0
        self._wall_start = datetime.now(UTC)

    async def run(self, stop: asyncio.Event) -> Tally:
        loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout)
        connector = aiohttp.TCPConnector(limit=self.settings.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            self._started = loop.time()
            self._wall_start = datetime.now(UTC)
            progress_at = self._started + PROGRESS_SECONDS
            for action in self.plan.actions():
                delay = self._started + action.at - loop.time()
                if delay > 0 and not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
                await self._dispatch(action)
                if loop.time() >= progress_at:
                    progress_at += PROGRESS_SECONDS
                    self._log_progress()
            if stop.is_set():
                for spend in self.plan.close(loop.time() - self._started):
                    await self._dispatch(spend)
            await self._drain()
        self._log_progress()
        return self.tally

    def _log_progress(self) -> None:
        log.info(
            "sent %d requests, %d errors, %d conversions skipped",
            self.tally.requests,
            self.tally.error_count,
            self.tally.skipped,
        )

    async def _dispatch(self, action: Action) -> None:
        if isinstance(action, Click) and action.followers:
            self._clicks[action.key] = asyncio.get_running_loop().create_future()
            self._followers[action.key] = action.followers
        await self._slots.acquire()
        task = asyncio.create_task(self._send(action))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.settings.drain_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _send(self, action: Action) -> None:
        try:
            click_id: str | None = None
            if isinstance(action, Conversion | Lead | Call) and action.click_key is not None:
                click_id = await self._click_id(action.click_key)
                if click_id is None:
                    self.tally.skipped_for(action)
                    return
            if isinstance(action, Call) and action.call_id not in self._numbers:
                number = action.static_number or await self._lease(action, click_id)
                if number is None:
                    self.tally.calls_skipped += 1
                    return
                self._numbers[action.call_id] = number
            try:
                status, location = await self._request(action, click_id)
            except (aiohttp.ClientError, TimeoutError) as error:
                self.tally.failed(action, type(error).__name__)
                self._clicked(action, None)
                return
            if 200 <= status < 300 or status == 302:
                self.tally.accepted(action)
                if isinstance(action, Click):
                    self._clicked(action, action.click_id or click_id_from(location))
            else:
                self.tally.failed(action, f"HTTP {status}")
                self._clicked(action, None)
        except asyncio.CancelledError:
            self.tally.failed(action, "not answered before the stop")
            self._clicked(action, None)
            raise
        finally:
            self._slots.release()

    def _clicked(self, action: Action, click_id: str | None) -> None:
        if isinstance(action, Click):
            future = self._clicks.get(action.key)
            if future is not None and not future.done():
                future.set_result(click_id)

    async def _click_id(self, key: int) -> str | None:
        future = self._clicks.get(key)
        if future is None:
            return None
        try:
            return await asyncio.shield(future)
        finally:
            self._followers[key] -= 1
            if self._followers[key] <= 0:
                del self._clicks[key], self._followers[key]

    async def _request(self, action: Action, click_id: str | None) -> tuple[int, str | None]:
        session = self._session
        if session is None:
            raise RuntimeError("the driver is not running")
        headers = {"User-Agent": user_agent(action)}
        params: dict[str, str]
        body: dict[str, Any]
        match action:
            case Click(redirect=True):
                url = f"{self._base}/c"
                params = {"to": action.target, "channel": action.channel}
                params |= {"campaign": action.campaign, "event_id": action.event_id}
                async with session.get(
                    url, params=params, headers=headers, allow_redirects=False
                ) as response:
                    await response.read()
                    return response.status, response.headers.get("Location")
            case Click(forwarded=True) if self.settings.api_token is not None:
                # A shop's server posting the visit for the visitor: its own agent is an HTTP
                # library's, the visitor's agent and address travel in the event.
                body = {"event_id": action.event_id, "type": "click", "channel": action.channel}
                body |= {"campaign": action.campaign, "click_id": action.click_id or ""}
                body |= {"user_agent": user_agent(action), "ip": visitor_address(action)}
                headers = {
                    "User-Agent": SERVER_AGENT,
                    "Authorization": f"Bearer {self.settings.api_token}",
                }
                return await self._post("/v1/events", body, headers)
            case Click():
                params = {"type": "click", "channel": action.channel, "campaign": action.campaign}
                params |= {"event_id": action.event_id, "click_id": action.click_id or ""}
                async with session.get(
                    f"{self._base}/p.gif", params=params, headers=headers
                ) as response:
                    await response.read()
                    return response.status, None
            case Lead():
                body = {"event_id": action.event_id, "type": "lead", "lead_id": action.lead_id}
                if click_id is not None:
                    body["click_id"] = click_id
                return await self._post("/v1/events", body, headers)
            case Conversion():
                body = {"event_id": action.event_id, "type": "conversion"}
                body |= {"order_id": action.order_id, "value": str(action.value)}
                if click_id is not None:
                    body["click_id"] = click_id
                if action.coupon is not None:
                    body["coupon"] = action.coupon
                if action.status is not None:
                    body["status"] = action.status
                if action.customer is not None:
                    body["customer_id"] = action.customer
                return await self._post("/v1/events", body, headers)
            case Redemption():
                body = {"event_id": action.event_id, "type": "redemption"}
                body |= {"coupon": action.coupon, "value": str(action.value)}
                return await self._post("/v1/events", body, headers)
            case Spend():
                body = {"event_id": action.event_id, "channel": action.channel}
                body |= {
                    "cost": f"{action.cost.normalize():f}",
                    "start": wire_time(self._wall_start + timedelta(seconds=action.start)),
                    "end": wire_time(self._wall_start + timedelta(seconds=action.end)),
                }
                if self.settings.api_token is not None:
                    headers["Authorization"] = f"Bearer {self.settings.api_token}"
                return await self._post("/v1/spend", body, headers)
            case Call():
                # The telephony provider's webhook, when the call ends.
                body = {
                    "call_id": action.call_id,
                    "tracked_number": self._numbers[action.call_id],
                    "caller": action.caller,
                    "started_at": wire_time(datetime.now(UTC)),
                    "duration_seconds": action.seconds,
                    "answered": action.answered,
                }
                if self.settings.api_token is not None:
                    headers["Authorization"] = f"Bearer {self.settings.api_token}"
                return await self._post("/v1/calls", body, headers)
        raise ValueError(f"unknown action {action!r}")

    async def _lease(self, call: Call, click_id: str | None) -> str | None:
        """The number the visit's page would show (GET /v1/number), None without one."""
        session = self._session
        if session is None or click_id is None:
            return None
        params = {"channel": call.channel, "campaign": call.campaign, "click_id": click_id}
        async with session.get(f"{self._base}/v1/number", params=params) as response:
            if response.status != 200:
                await response.read()
                return None
            found: dict[str, Any] = await response.json()
        number = found.get("number")
        return number if isinstance(number, str) else None

    async def _post(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, str | None]:
        session = self._session
        if session is None:
            raise RuntimeError("the driver is not running")
        async with session.post(f"{self._base}{path}", json=body, headers=headers) as response:
            await response.read()
            return response.status, None
