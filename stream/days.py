"""Local days and months of the reporting time zone, as the day and month buckets name them.

Pure (zoneinfo only). A day bucket is keyed by the local date of an event's time in the
reporting time zone (``ADPULSE_TIMEZONE``), written YYYYMMDD; a month by YYYYMM. Days with 23
or 25 hours (a DST change) need nothing special: an event belongs to the local date its
instant has, and a day's bounds are the instants of two local midnights.

The worker computes the day of each minute of a batch here, in Python, and hands the script a
table minute -> (day, day expiry, month, month expiry) (`LocalDays.table`): the script never
knows the time zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from stream.keys import DAY_RETENTION

MINUTE_SECONDS: Final = 60
_DAY: Final = timedelta(days=1)
MINUTE_CACHE_ENTRIES: Final = 7 * 24 * 60
"""Minutes whose days `LocalDays.of_minute` remembers, a week's: live traffic needs the last few
and late conversions a few days, while each entry costs about 300 bytes, so the former bound of
100,000 let a long-running worker's cache grow to about 30 MB before it was cleared."""


def zone_named(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. "America/New_York"), or ValueError with the reason."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Europe/Berlin)") from error


def day_number(day: date) -> int:
    """YYYYMMDD of a date."""
    return day.year * 10_000 + day.month * 100 + day.day


def month_number(day: date) -> int:
    """YYYYMM of a date's month."""
    return day.year * 100 + day.month


def date_of(number: int) -> date:
    """The date of a YYYYMMDD number."""
    return date(number // 10_000, number // 100 % 100, number % 100)


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


@dataclass(frozen=True)
class LocalDays:
    """Days of one time zone, and how long their buckets are kept (`retention_seconds`)."""

    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    retention_seconds: int = int(DAY_RETENTION.total_seconds())
    _minutes: dict[int, tuple[int, int, int, int]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _windows: dict[tuple[date, int], bytes] = field(default_factory=dict, repr=False, compare=False)

    def start(self, day: date) -> int:
        """Unix seconds of the local midnight starting `day` (the first instant of that date)."""
        moment = datetime.combine(day, time(), tzinfo=self.zone)
        seconds = int(moment.timestamp())
        # A midnight skipped by a DST change: the day starts at the first instant it exists.
        while datetime.fromtimestamp(seconds, self.zone).date() < day:
            seconds += MINUTE_SECONDS
        return seconds

    def date_at(self, seconds: int) -> date:
        return datetime.fromtimestamp(seconds, self.zone).date()

    def today(self, now: datetime | None = None) -> date:
        return (now or datetime.now(UTC)).astimezone(self.zone).date()

    def of_minute(self, minute: int) -> tuple[int, int, int, int]:
        """(day, day bucket expiry, month, month bucket expiry) of a minute; expiries in Unix
        seconds: the end of the day or month plus the retention."""
        entry = self._minutes.get(minute)
        if entry is None:
            day = self.date_at(minute * MINUTE_SECONDS)
            month_end = self.start(next_month(day.replace(day=1)))
            entry = (
                day_number(day),
                self.start(day + _DAY) + self.retention_seconds,
                month_number(day),
                month_end + self.retention_seconds,
            )
            if len(self._minutes) >= MINUTE_CACHE_ENTRIES:  # a cache, not a record: bounded
                self._minutes.clear()
            self._minutes[minute] = entry
        return entry

    def table(self, minutes: Iterable[int], now_seconds: int) -> list[int]:
        """The script's day table: (minute, day, day expiry, month, month expiry) for each
        distinct minute whose day is still kept at `now_seconds`."""
        flat: list[int] = []
        for minute in set(minutes):
            day, day_expiry, month, month_expiry = self.of_minute(minute)
            if day_expiry > now_seconds:
                flat += (minute, day, day_expiry, month, month_expiry)
        return flat

    def window_table(self, now_seconds: int, window_seconds: int) -> bytes:
        """The script's table of the local days an order counted within `window_seconds` before
        `now_seconds` may belong to: (first minute, day, day expiry, month, month expiry) per
        day, oldest first, as JSON; the last row's first minute only ends the one before it.

        A restatement counts in its order's original day, which the batch's own `table` need
        not hold. Made once per local day and window (a cache, like `of_minute`'s).
        """
        today = self.date_at(now_seconds)
        cached = self._windows.get((today, window_seconds))
        if cached is not None:
            return cached
        first = self.date_at(now_seconds - window_seconds) - _DAY
        flat: list[int] = []
        day = first
        while day <= today + 2 * _DAY:
            minute = self.start(day) // MINUTE_SECONDS
            flat += (minute, *self.of_minute(minute))
            day += _DAY
        table = orjson.dumps(flat)
        if len(self._windows) > 16:
            self._windows.clear()
        self._windows[today, window_seconds] = table
        return table

    def spans(self, start_seconds: int, end_seconds: int) -> Iterator[tuple[int, int, int]]:
        """(day, first second, end second) of each local day [start, end) touches, in order."""
        moment = start_seconds
        while moment < end_seconds:
            day = self.date_at(moment)
            end = max(self.start(day + _DAY), moment + MINUTE_SECONDS)
            yield day_number(day), moment, min(end, end_seconds)
            moment = min(end, end_seconds)


def minute_rows(rows: list[str | int], fields: int, position: int) -> Iterator[int]:
    """The distinct minutes of a batch's rows (`fields` values a row, the minute at `position`):
    a batch's rows share a few minutes, so the column is deduplicated in C before any Python
    sees a value."""
    return map(int, set(rows[position::fields]))
