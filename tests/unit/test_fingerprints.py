"""Fingerprints of remembered ids and the linear hashing of their buckets (`stream.fingerprints`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.batch import ROW, make_row
from stream.fingerprints import (
    PERSONS,
    bucket_of,
    fingerprint,
    fingerprint_rows,
    place_of,
    place_value,
    placed_rows,
    places_of,
)


def test_a_fingerprint_is_a_signed_64_bit_integer_per_kind_of_id() -> None:
    values = {fingerprint(name, "same-text") for name in PERSONS}
    assert len(values) == len(PERSONS)  # an event id and an order id that are equal differ
    for value in values:
        assert str(int(value)) == value
        assert -(2**63) <= int(value) < 2**63
    assert fingerprint("event_id", "a") == fingerprint("event_id", "a")


def test_rows_get_fingerprints_and_keep_absent_ids_absent() -> None:
    rows = make_row(kind="c", event_id="e1", order_id="o1", minute=7)
    copied = fingerprint_rows(rows)
    assert rows[ROW.index("event_id")] == "e1"  # the batch itself is left as it was
    assert copied[ROW.index("event_id")] == fingerprint("event_id", "e1")
    assert copied[ROW.index("order_id")] == fingerprint("order_id", "o1")
    assert copied[ROW.index("click_id")] == ""
    assert copied[ROW.index("minute")] == 7


def test_each_distinct_fingerprint_comes_once_with_the_number_it_is_placed_by() -> None:
    row: dict[str, str | int] = dict.fromkeys(ROW, "")
    row.update(kind="c", event_id="e1", order_id="o1", customer_id="u1", minute=7)
    again = dict(row, event_id="e2")  # the same order and customer in a second row
    rows = [row[name] for name in ROW] + [again[name] for name in ROW]
    copied, flat = placed_rows(rows)
    assert copied == fingerprint_rows(rows)
    places = dict(zip(flat[::2], flat[1::2], strict=True))
    assert len(flat) == 2 * 6  # two event ids, and the order and customer of each row
    assert len(places) == 4
    expected = {
        fingerprint(name, text)
        for name, text in (("event_id", "e1"), ("event_id", "e2"), ("order_id", "o1"))
    } | {fingerprint("customer_id", "u1")}
    assert set(places) == expected
    for text, value in places.items():
        assert isinstance(text, str)
        assert value == place_value(text)
    # Cluster mode's customer facts arrive fingerprinted: the same placing numbers.
    assert places_of(copied) == flat


@given(st.integers(-(2**63), 2**63 - 1), st.integers(1, 2**20), st.data())
def test_a_split_keeps_an_id_or_moves_it_to_the_new_bucket(
    value: int, buckets: int, data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, buckets - 1))
    text = str(value)
    before = bucket_of(text, buckets, split)
    assert 0 <= before < buckets + split
    # Splitting bucket `split`: its ids stay or go to split + buckets; no other id moves.
    after = (
        bucket_of(text, buckets, split + 1)
        if split + 1 < buckets
        else bucket_of(text, 2 * buckets, 0)
    )
    if before == split:
        assert after in (split, split + buckets)
    else:
        assert after == before


@given(
    st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.integers(-(10**13), 10**13),
        st.sampled_from([0, -1, -(10**11), -(10**11) + 1, -(10**12), 10**12, 10**12 - 1]),
    )
)
def test_the_placing_number_from_the_integer_is_the_one_from_its_text(value: int) -> None:
    assert place_of(value) == place_value(str(value))
