"""The click ids the tracker issues (`tracker.click_ids`): signed with a key, carrying what
the worker will count the click under; random registry ids without a key."""

from __future__ import annotations

from datetime import UTC, datetime

from adpulse.core.click_ids import MAX_CARRIED_BYTES, CarriedClick, ClickKeys, is_signed, verify
from adpulse.core.event import Event, EventType
from tracker.click_ids import issue_click_id

KEY = b"tracker-click-key-" * 2
TS = datetime(2026, 12, 6, 9, 30, 59, 999_999, tzinfo=UTC)
MINUTE = int(datetime(2026, 12, 6, 9, 30, tzinfo=UTC).timestamp()) // 60


def click(**fields: object) -> Event:
    return Event(event_id="c1", type=EventType.CLICK, ts=TS, received_at=TS, **fields)  # type: ignore[arg-type]


def carried(event: Event) -> CarriedClick | None:
    assert event.click_id is not None
    return verify(ClickKeys(KEY), event.click_id)


def test_a_click_carries_its_channel_campaign_and_minute() -> None:
    issued = issue_click_id(click(channel="email", campaign="nov"), KEY)
    assert carried(issued) == CarriedClick("email", "nov", MINUTE)
    assert issued.channel == "email"


def test_without_a_channel_of_its_own_the_grouping_is_carried() -> None:
    assert carried(issue_click_id(click(grouped_channel="paid_search"), KEY)) == CarriedClick(
        "paid_search", "", MINUTE
    )


def test_a_bots_or_unattributed_click_carries_no_channel() -> None:
    assert carried(issue_click_id(click(channel="email", bot=True), KEY)) == CarriedClick(
        "", "", MINUTE
    )
    assert carried(issue_click_id(click(channel="unattributed"), KEY)) == CarriedClick(
        "", "", MINUTE
    )


def test_without_a_key_or_room_the_id_is_a_registry_one() -> None:
    for issued in (
        issue_click_id(click(channel="email"), None),
        issue_click_id(click(channel="email", campaign="c" * (MAX_CARRIED_BYTES + 1)), KEY),
    ):
        assert issued.click_id is not None
        assert not is_signed(issued.click_id)
        assert len(issued.click_id) == 32
