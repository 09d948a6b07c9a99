"""The stored forms of order and customer states (`stream.states`): compact while they fit,
text otherwise, both read back to what was stored."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.batch import MAX_AMOUNT_MICROS
from stream.states import (
    CENT,
    CUSTOMER_SPAN,
    ORDER_SPAN,
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
    value=st.integers(0, MAX_AMOUNT_MICROS) | st.integers(0, 10**6).map(lambda c: c * CENT),
    reference=st.integers(1, 2**21),
    ltv=st.sampled_from([None, "", "1", "63", "64", "4095", "4096"]),
)
def test_an_order_reads_back_in_whichever_form_it_was_stored(
    status: str, offset: int, value: int, reference: int, ltv: str | None
) -> None:
    order = StoredOrder(status, ORIGIN + offset, value, reference, ltv)
    packed = pack_order(order, ORIGIN)
    if packed is None:
        # Out of the compact form's reach: the text form (with the references apart).
        apart = StoredOrder(status, order.minute, value, reference, ltv or "")
        assert unpack_order(order_text(apart), ORIGIN) == apart
    else:
        assert packed.isdigit()
        assert packed[0] != "0"  # canonical, so Redis may keep it as an integer
        assert unpack_order(packed, ORIGIN) == order
    if 0 <= offset < ORDER_SPAN and reference < 2**10 and value < 10**9:
        # Usual orders: one integer Redis keeps in 10 bytes of a listpack.
        assert packed is not None or (ltv is not None and (value % CENT or ltv == "4096"))
        assert packed is None or int(packed) <= INT64_MAX


def test_usual_orders_are_one_64_bit_integer() -> None:
    """Up to 1,024 references and $1,000 an order in micros, or $100,000 in whole cents with up
    to 64 LTV shares: an integer Redis keeps in 10 bytes of a listpack."""
    for value, ltv in ((1_000_000_000, None), (99_999_990_000, ""), (100 * CENT, "63")):
        for reference in (1, 63, 64, 1023):
            order = StoredOrder("r", ORIGIN + ORDER_SPAN - 1, value, reference, ltv)
            packed = pack_order(order, ORIGIN)
            assert packed is not None
            assert int(packed) <= INT64_MAX, (value, reference)
    # Micros that are not whole cents need the reference that names all three texts.
    assert pack_order(StoredOrder("a", ORIGIN, 12_345_678, 1, ""), ORIGIN) is None


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
