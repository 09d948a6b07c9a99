"""The stored forms of order and customer states (`stream.states`): compact while they fit,
text otherwise, both read back to what was stored."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.batch import MAX_AMOUNT_MICROS
from stream.states import (
    CUSTOMER_SPAN,
    EXACT,
    ORDER_SPAN,
    REFERENCE_WIDTHS,
    STATUSES,
    StoredCustomer,
    StoredOrder,
    customer_text,
    order_text,
    pack_customer,
    pack_order,
    unpack_customer,
    unpack_order,
)

INT64_MAX = 2**63 - 1
ORIGIN = 29_000_000


@given(
    status=st.sampled_from(STATUSES),
    offset=st.integers(-ORDER_SPAN, 2 * ORDER_SPAN),
    value=st.integers(0, MAX_AMOUNT_MICROS),
    reference=st.integers(1, 2**21),
)
def test_an_order_reads_back_in_whichever_form_it_was_stored(
    status: str, offset: int, value: int, reference: int
) -> None:
    order = StoredOrder(status, ORIGIN + offset, value, reference)
    packed = pack_order(order, ORIGIN)
    if packed is None:
        # Out of the compact form's reach: the text form, and why.
        width = next((w for w in REFERENCE_WIDTHS if reference < w), None)
        assert not 0 <= offset < ORDER_SPAN or width is None or (value + 1) * width * 4 > EXACT
        text = order_text(StoredOrder(status, order.minute, value, reference, "7"))
        assert unpack_order(text, ORIGIN) == StoredOrder(
            status, order.minute, value, reference, "7"
        )
    else:
        assert packed.isdigit()
        assert packed[0] != "0"  # canonical, so Redis may keep it as an integer
        assert unpack_order(packed, ORIGIN) == order


def test_a_usual_order_is_one_64_bit_integer() -> None:
    """Up to 1,024 references (channel, campaign and LTV share) and $2,000 an order: an integer
    Redis keeps in 10 bytes of a listpack."""
    for value in (0, 1, 49_990_000, 2_000_000_000):
        for reference in (1, 63, 64, 1023):
            packed = pack_order(StoredOrder("r", ORIGIN + ORDER_SPAN - 1, value, reference), ORIGIN)
            assert packed is not None
            assert int(packed) <= INT64_MAX, (value, reference)


def test_old_text_states_read_as_before() -> None:
    """What versions before the compact form wrote (and their snapshots hold)."""
    assert unpack_order("p12500000:29412345:3:", 0) == StoredOrder(
        "p", 29_412_345, 12_500_000, 3, ""
    )
    assert unpack_order("r0:-5:12:4", 0) == StoredOrder("r", -5, 0, 12, "4")
    assert unpack_customer("2:29412345:202611", 0) == StoredCustomer(2, 29_412_345, "202611")
    assert unpack_customer("2:29412345:", 0) == StoredCustomer(2, 29_412_345, "")


@given(offset=st.integers(-CUSTOMER_SPAN, 2 * CUSTOMER_SPAN), reference=st.integers(1, 10**6))
def test_a_customer_reads_back_in_whichever_form_it_was_stored(offset: int, reference: int) -> None:
    customer = StoredCustomer(reference, ORIGIN + offset)
    packed = pack_customer(customer, ORIGIN)
    if packed is None:
        assert not 0 <= offset < CUSTOMER_SPAN
        text = customer_text(StoredCustomer(reference, customer.minute, "202612"))
        assert unpack_customer(text, ORIGIN) == StoredCustomer(reference, customer.minute, "202612")
    else:
        assert unpack_customer(packed, ORIGIN) == customer
        # A 32-bit listpack integer while the dictionary has fewer than 2,147 references.
        assert (int(packed) < 2**31) == (reference < 2147)
