"""The report's fast paths against their exact references (hypothesis).

`_significant` rounds through the float quotient unless the fraction lies near a tie, and
`sum_buckets` sums along one list of names with map(): both must give exactly what the plain
integer ways give, ties and signs included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypothesis import given
from hypothesis import strategies as st

from stream.kpi import Counters
from stream.report_buckets import RowKey, row_key, sum_buckets
from stream.report_figures import _significant, _significant_exact

numerators = st.integers(-(10**18), 10**18)
denominators = st.integers(1, 10**18)


@st.composite
def near_ties(draw: st.DrawFn) -> tuple[int, int]:
    """m.mmm5 x 10**k exactly, or one unit of a large denominator off it."""
    mantissa = draw(st.integers(10_000, 99_999)) * 10 + 5
    exponent = draw(st.integers(-9, 9))
    scale = draw(st.sampled_from([1, 3, 7, 10**9, 10**12 + 1]))
    numerator = mantissa * 10 ** max(0, exponent) * scale + draw(st.sampled_from([-1, 0, 1]))
    denominator = 10**5 * 10 ** max(0, -exponent) * scale
    sign = draw(st.sampled_from([-1, 1]))
    return sign * numerator, denominator


@given(st.one_of(st.tuples(numerators, denominators), near_ties()))
def test_fast_significant_digits_are_the_exact_ones(value: tuple[int, int]) -> None:
    fast, exact = _significant(value), _significant_exact(value)
    assert fast == exact
    assert repr(fast) == repr(exact)


def reference_sum(
    fetched: Mapping[str, Mapping[str, str]], plan: Sequence[tuple[str, int]]
) -> dict[RowKey, Counters]:
    index = {"k": 0, "r": 1, "c": 2, "v": 3, "s": 4}
    sums: dict[str, list[int]] = {}
    for key, sign in plan:
        for name, value in fetched.get(key, {}).items():
            base, _, counter = name.rpartition(":")
            if base and counter in index:
                sums.setdefault(base, [0] * 5)[index[counter]] += sign * int(value)
    rows = {}
    for base, values in sums.items():
        row = row_key(base)
        if row is not None and any(values):
            rows[row] = Counters(*values)
    return rows


names = st.builds(
    lambda row, counter: f"{row}:{counter}",
    st.sampled_from(["email", "paid_search", "email\tspring", "email\t", "x\tother"]),
    st.sampled_from(["k", "r", "c", "v", "s", "z"]),
)
buckets = st.dictionaries(names, st.integers(-(10**15), 10**15).map(str), max_size=12)


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), buckets),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "gone"]), st.sampled_from([1, -1]))),
)
def test_sum_buckets_is_the_signed_sum_per_row(
    fetched: dict[str, dict[str, str]], plan: list[tuple[str, int]]
) -> None:
    assert sum_buckets(fetched, plan) == reference_sum(fetched, plan)
