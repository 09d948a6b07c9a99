"""Gamma, beta and negative binomial functions (`stream.distributions`) against closed forms."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.distributions import (
    beta_cdf,
    gamma_cdf,
    gamma_quantile,
    gamma_ratio_below,
    negative_binomial_cdf,
    negative_binomial_quantile,
)


def poisson_at_least(n: int, mean: float) -> float:
    """P(Poisson(mean) >= n) = P(Gamma(n, 1) <= mean)."""
    return 1.0 - sum(math.exp(-mean) * mean**k / math.factorial(k) for k in range(n))


def binomial_at_least(a: int, trials: int, p: float) -> float:
    """P(Binomial(trials, p) >= a) = I_p(a, trials - a + 1)."""
    return sum(math.comb(trials, k) * p**k * (1 - p) ** (trials - k) for k in range(a, trials + 1))


@pytest.mark.parametrize("shape", [1, 2, 5, 17, 60])
@pytest.mark.parametrize("x", [0.01, 0.5, 1.0, 4.0, 16.0, 55.0, 90.0])
def test_gamma_cdf_of_integer_shape_is_a_poisson_tail(shape: int, x: float) -> None:
    assert gamma_cdf(x, shape, 1.0) == pytest.approx(poisson_at_least(shape, x), abs=1e-10)
    assert gamma_cdf(x / 4, shape, 4.0) == pytest.approx(poisson_at_least(shape, x), abs=1e-10)


@pytest.mark.parametrize(("a", "b"), [(1, 1), (2, 3), (7, 1), (10, 25), (40, 40)])
@pytest.mark.parametrize("x", [0.001, 0.1, 0.35, 0.5, 0.8, 0.999])
def test_beta_cdf_of_integer_parameters_is_a_binomial_tail(a: int, b: int, x: float) -> None:
    assert beta_cdf(x, a, b) == pytest.approx(binomial_at_least(a, a + b - 1, x), abs=1e-10)


@pytest.mark.parametrize(("size", "p"), [(0.5, 0.3), (1.0, 0.5), (4.5, 0.1), (80.0, 0.9)])
def test_negative_binomial_cdf_is_the_sum_of_its_probabilities(size: float, p: float) -> None:
    total = 0.0
    for k in range(60):
        total += math.exp(
            math.lgamma(k + size)
            - math.lgamma(size)
            - math.lgamma(k + 1)
            + size * math.log(p)
            + k * math.log1p(-p)
        )
        assert negative_binomial_cdf(k, size, p) == pytest.approx(total, abs=1e-10)


def test_ratio_of_exponentials() -> None:
    """X ~ Exp(2), Y ~ Exp(3): P(X / Y < r) = 2r / (2r + 3)."""
    for r in (0.1, 1.0, 2.5):
        assert gamma_ratio_below(r, (1, 2), (1, 3)) == pytest.approx(2 * r / (2 * r + 3))
    assert gamma_ratio_below(0.0, (1, 2), (1, 3)) == 0.0


@given(
    st.floats(0.3, 5000),
    st.floats(1e-6, 1e3),
    st.floats(0.001, 0.999),
)
def test_gamma_quantile_inverts_the_cdf(shape: float, rate: float, q: float) -> None:
    x = gamma_quantile(q, shape, rate)
    assert gamma_cdf(x, shape, rate) == pytest.approx(q, abs=1e-8)


@given(st.floats(0.3, 500), st.floats(0.01, 0.99), st.floats(0.01, 0.99))
def test_negative_binomial_quantile_is_the_least_count_reaching_the_level(
    size: float, p: float, q: float
) -> None:
    k = negative_binomial_quantile(q, size, p)
    assert negative_binomial_cdf(k, size, p) >= q
    assert negative_binomial_cdf(k - 1, size, p) < q


@pytest.mark.parametrize("call", [lambda: gamma_cdf(1, 0, 1), lambda: beta_cdf(0.5, 1, -1)])
def test_bad_parameters_are_refused(call: object) -> None:
    with pytest.raises(ValueError, match="positive"):
        call()  # type: ignore[operator]
