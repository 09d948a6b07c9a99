"""Fingerprints of remembered ids and the linear hashing of their buckets (`stream.fingerprints`)."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stream.batch import ROW, SCRIPT_ROW, SCRIPT_WIDTHS, make_row, script_rows
from stream.fingerprints import (
    PERSONS,
    PLACED,
    bucket_of,
    fingerprint,
    place_numbers,
    place_value,
    places_of,
    script_arguments,
)


def placed_rows(rows: list[str | int]) -> tuple[list[str | int], list[list[int]]]:
    """The reference `script_arguments` is held to, id by id from the public definitions: a copy
    of the rows with each id (text, or a number built by hand; "" and 0 absent) replaced by its
    `fingerprint`, and the `place_value` of each, per column of `PLACED`, of the rows whose
    kind's script row carries that column (`SCRIPT_WIDTHS`; a kind not listed carries all)."""
    width = len(ROW)
    copied = list(rows)
    places: list[list[int]] = []
    for name in PLACED:
        at = ROW.index(name)
        numbers = []
        for start in range(0, len(rows), width):
            value = rows[start + at]
            if not value:
                continue
            text = fingerprint(name, str(value))
            copied[start + at] = text
            if SCRIPT_WIDTHS.get(str(rows[start]), len(SCRIPT_ROW)) > SCRIPT_ROW.index(name):
                numbers.append(place_value(text))
        places.append(numbers)
    return copied, places


def fingerprint_rows(rows: list[str | int]) -> list[str | int]:
    return placed_rows(rows)[0]


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


def test_an_id_given_as_a_number_is_fingerprinted_as_its_text() -> None:
    """A row built by hand (a tool, a test) may hold a number where the decoding writes text."""
    as_number = fingerprint_rows(make_row(kind="c", event_id="e1", order_id=1234))
    assert as_number == fingerprint_rows(make_row(kind="c", event_id="e1", order_id="1234"))
    assert as_number[ROW.index("order_id")] == fingerprint("order_id", "1234")


def test_each_fingerprint_the_script_receives_comes_with_its_placing_number() -> None:
    conversion = make_row(
        kind="c", event_id="e1", order_id="o1", customer_id="u1", click_id="g1", minute=7
    )
    again = make_row(kind="c", event_id="e2", order_id="o1", customer_id="u1", minute=7)
    # A lead's row ends at its lead id (`batch.SCRIPT_WIDTHS`): its order id is not sent.
    lead = make_row(kind="l", event_id="e3", lead_id="d1", order_id="o2", minute=7)
    click = make_row(kind="k", event_id="e4", click_id="g2", minute=7)
    rows = conversion + again + lead + click
    copied, places = placed_rows(rows)
    assert copied == fingerprint_rows(rows)
    assert PLACED == ("event_id", "click_id", "lead_id", "order_id", "customer_id", "caller")
    expected = {
        "event_id": [("event_id", "e1"), ("event_id", "e2"), ("event_id", "e3"),
                     ("event_id", "e4")],
        "click_id": [("click_id", "g1"), ("click_id", "g2")],
        "lead_id": [("lead_id", "d1")],
        "order_id": [("order_id", "o1"), ("order_id", "o1")],
        "customer_id": [("customer_id", "u1"), ("customer_id", "u1")],
        "caller": [],
    }  # fmt: skip
    assert len(places) == len(PLACED)
    for name, numbers in zip(PLACED, places, strict=True):
        assert numbers == [place_value(fingerprint(*pair)) for pair in expected[name]]
        assert all(isinstance(number, int) for number in numbers)
    # Cluster mode's customer facts arrive fingerprinted: the same placing numbers.
    assert places_of(copied) == places


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


_EDGES = [
    *(-(2**63), -(2**63) + 1, 2**63 - 1, 2**63 - 2, -1, 0, 1),
    *(-(10**11) - 1, -(10**11), -(10**11) + 1, 10**11 - 1, 10**11),
    *(-(10**12) - 1, -(10**12), -(10**12) + 1, 10**12 - 1, 10**12, 10**12 + 1),
    *(2**32 - 1, 2**32, -(2**32), 2**31, -(2**31), 2**62, -(2**62)),
]


@given(
    st.lists(
        st.one_of(
            st.integers(-(2**63), 2**63 - 1),
            st.integers(-(10**13), 10**13),
            st.sampled_from(_EDGES),
        ),
        max_size=50,
    )
)
def test_the_placing_number_from_the_integer_is_the_one_from_its_text(values: list[int]) -> None:
    placed = place_numbers(np.array(values, np.int64))
    assert placed == [place_value(str(value)) for value in values]
    assert all(type(number) is int for number in placed)  # msgpack integers, not numpy's


def test_the_placing_numbers_of_the_edges_of_64_bits_and_of_12_digits() -> None:
    values = _EDGES + [random.Random(12).randrange(-(2**63), 2**63) for _ in range(10_000)]
    placed = place_numbers(np.array(values, np.int64))
    assert placed == [place_value(str(value)) for value in values]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["k", "c", "r", "l", "p", "b"]),
            st.text(max_size=40),
            st.text(max_size=3),
            st.text(max_size=3),
        ),
        max_size=30,
    )
)
def test_placed_rows_give_each_id_its_fingerprint_and_placing_number(
    rows: list[tuple[str, str, str, str]],
) -> None:
    # Many ids a column (the JSON texts of the integers) and absent ones between them.
    flat = [
        value
        for kind, event_id, order_id, lead_id in rows
        for value in make_row(
            kind=kind, event_id=event_id, order_id=order_id, lead_id=lead_id, minute=1
        )
    ]
    copied, places = placed_rows(flat)
    expected = list(flat)
    for name in PLACED:
        at = ROW.index(name)
        expected[at :: len(ROW)] = [
            fingerprint(name, str(text)) if text else "" for text in flat[at :: len(ROW)]
        ]
    assert copied == expected
    assert places_of(copied) == places
    event_ids = copied[ROW.index("event_id") :: len(ROW)]
    assert [place_value(str(text)) for text in event_ids if text] == places[
        PLACED.index("event_id")
    ]


_ID = st.one_of(st.just(""), st.text(max_size=12), st.integers(0, 10**6))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted({*SCRIPT_WIDTHS, "p", "k", "c", "r", "l", "b"})),
            st.lists(_ID, min_size=len(PLACED), max_size=len(PLACED)),
        ),
        max_size=40,
    )
)
def test_script_arguments_are_the_script_rows_of_the_fingerprinted_rows(
    rows: list[tuple[str, list[str | int]]],
) -> None:
    """The worker's one pass against the two it replaces: the same rows and placing numbers
    for every kind, with ids absent, repeated, numeric or beyond their kind's width."""
    flat = [
        value
        for kind, ids in rows
        for value in make_row(kind=kind, minute=1, **dict(zip(PLACED, ids, strict=True)))
    ]
    before = list(flat)
    copied, places = placed_rows(flat)
    assert script_arguments(flat) == (script_rows(copied), places)
    assert flat == before  # the batch itself is left as it was (it may be retried)


def test_script_arguments_of_a_bench_sized_batch_are_the_old_forms() -> None:
    draw = random.Random(11)
    kinds = ["k"] * 30 + ["b", "r", "r", "c", "c", "c", "l", "p"]
    flat: list[str | int] = []
    for number in range(5000):
        ids = {
            name: "" if draw.random() < 0.5 else f"{name}-{draw.randrange(900)}" for name in PLACED
        }
        ids["event_id"] = f"event-{number}"
        flat += make_row(kind=draw.choice(kinds), minute=draw.randrange(3), **ids)
    copied, places = placed_rows(flat)
    assert script_arguments(flat) == (script_rows(copied), places)


def test_script_arguments_of_numeric_ids_built_by_hand() -> None:
    """The event id column hashed as it is holds texts only; a number (0 for none) takes the
    general path."""
    cases: list[list[str | int]] = [[0, 0], [5, 0], [5, 6], ["e1", 0], ["", 0], ["", ""]]
    for event_ids in cases:
        flat = [
            value
            for event_id in event_ids
            for value in make_row(kind="c", event_id=event_id, order_id=7, minute=1)
        ]
        copied, places = placed_rows(flat)
        assert script_arguments(flat) == (script_rows(copied), places)
