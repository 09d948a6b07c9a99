"""The few distribution functions the lag, nowcast and advice arithmetic needs, in plain Python.

Gamma and beta distribution functions (regularised incomplete gamma and beta, by series and
continued fraction as in Numerical Recipes, ch. 6.2 and 6.4), the negative binomial through the
beta, and quantiles by bisection. A dozen evaluations a channel per snapshot do not justify
scipy in every process; the tests check these against closed forms (integer shapes are Poisson
and binomial sums).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

_EPSILON: Final = 1e-13
_TINY: Final = 1e-300
_ITERATIONS: Final = 1000


def _gamma_series(a: float, x: float) -> float:
    term = total = 1.0 / a
    denominator = a
    for _ in range(_ITERATIONS):
        denominator += 1.0
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _EPSILON:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_fraction(a: float, x: float) -> float:
    """Q(a, x) by Lentz's continued fraction; converges fast for x > a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPSILON:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def gamma_cdf(x: float, shape: float, rate: float) -> float:
    """P(X <= x) for X ~ Gamma(shape, rate) (mean shape / rate)."""
    if shape <= 0 or rate <= 0:
        raise ValueError("gamma shape and rate must be positive")
    scaled = x * rate
    if scaled <= 0:
        return 0.0
    if scaled < shape + 1.0:
        return min(1.0, _gamma_series(shape, scaled))
    return max(0.0, 1.0 - _gamma_fraction(shape, scaled))


def _beta_fraction(a: float, b: float, x: float) -> float:
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = _TINY if abs(d) < _TINY else d
    d = 1.0 / d
    h = d
    for m in range(1, _ITERATIONS):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPSILON:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """P(X <= x) for X ~ Beta(a, b): the regularised incomplete beta I_x(a, b)."""
    if a <= 0 or b <= 0:
        raise ValueError("beta parameters must be positive")
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return min(1.0, front * _beta_fraction(a, b, x) / a)
    return max(0.0, 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b)


def gamma_ratio_below(
    ratio: float, first: tuple[float, float], second: tuple[float, float]
) -> float:
    """P(X / Y < ratio) for independent X ~ Gamma(*first), Y ~ Gamma(*second), (shape, rate).

    X * rate_x and Y * rate_y are standard gammas, and G1 / (G1 + G2) ~ Beta(shape_x, shape_y).
    """
    (shape_x, rate_x), (shape_y, rate_y) = first, second
    if ratio <= 0:
        return 0.0
    scaled = ratio * rate_x / rate_y
    return beta_cdf(scaled / (1.0 + scaled), shape_x, shape_y)


def negative_binomial_cdf(k: int, size: float, probability: float) -> float:
    """P(N <= k), N the failures before `size` successes of probability `probability`.

    This is the Gamma-Poisson predictive: N ~ Poisson(L * theta), theta ~ Gamma(size, rate) gives
    probability = rate / (rate + L).
    """
    if k < 0:
        return 0.0
    if probability >= 1.0:
        return 1.0
    return beta_cdf(probability, size, k + 1.0)


def _bisect_integer(predicate: Callable[[int], bool], high: int) -> int:
    """The least k >= 0 with predicate(k), predicate monotone; `high` grows until it holds."""
    while not predicate(high):
        high *= 2
    low = -1
    while high - low > 1:
        middle = (low + high) // 2
        if predicate(middle):
            high = middle
        else:
            low = middle
    return high


def negative_binomial_quantile(q: float, size: float, probability: float) -> int:
    """The least k with P(N <= k) >= q (see `negative_binomial_cdf`)."""
    if not 0.0 < q < 1.0:
        raise ValueError("quantile level must be strictly between 0 and 1")
    if probability >= 1.0:
        return 0
    mean = size * (1.0 - probability) / probability
    return _bisect_integer(
        lambda k: negative_binomial_cdf(k, size, probability) >= q, max(1, int(2 * mean) + 1)
    )


def _gamma_density(x: float, shape: float, rate: float) -> float:
    if x <= 0:
        return 0.0
    return math.exp(
        shape * math.log(rate) + (shape - 1) * math.log(x) - rate * x - math.lgamma(shape)
    )


def gamma_quantile(q: float, shape: float, rate: float) -> float:
    """The x with P(X <= x) = q for X ~ Gamma(shape, rate), to 1e-10 relative.

    Newton's method from the Wilson-Hilferty approximation, kept inside a bisection bracket.
    """
    if not 0.0 < q < 1.0:
        raise ValueError("quantile level must be strictly between 0 and 1")
    if shape <= 0 or rate <= 0:
        raise ValueError("gamma shape and rate must be positive")
    z = _normal_quantile(q)
    cube = 1.0 - 1.0 / (9.0 * shape) + z / (3.0 * math.sqrt(shape))
    x = shape * cube**3 / rate if cube > 0 else shape / rate * q
    low, high = 0.0, math.inf
    for _ in range(100):
        error = gamma_cdf(x, shape, rate) - q
        if error < 0:
            low = x
        else:
            high = x
        if abs(error) < 1e-12 or (high < math.inf and high - low <= 1e-10 * high):
            return x
        density = _gamma_density(x, shape, rate)
        step = x - error / density if density > 0 else math.nan
        if low < step < high:
            x = step
        elif math.isinf(high):
            x = 2.0 * x if x > 0 else 1.0 / rate
        else:
            x = 0.5 * (low + high)
    return x


def _normal_quantile(q: float) -> float:
    """Acklam's rational approximation of the standard normal quantile (error below 1e-9)."""
    a = (
        -39.69683028665376,
        220.9460984245205,
        -275.9285104469687,
        138.3577518672690,
        -30.66479806614716,
        2.506628277459239,
    )
    b = (
        -54.47609879822406,
        161.5858368580409,
        -155.6989798598866,
        66.80131188771972,
        -13.28068155288572,
    )
    c = (
        -0.007784894002430293,
        -0.3223964580411365,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    )
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    if q < 0.02425:
        r = math.sqrt(-2 * math.log(q))
        return (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / (
            (((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1
        )
    if q > 1 - 0.02425:
        return -_normal_quantile(1 - q)
    r = q - 0.5
    t = r * r
    return (
        (((((a[0] * t + a[1]) * t + a[2]) * t + a[3]) * t + a[4]) * t + a[5])
        * r
        / (((((b[0] * t + b[1]) * t + b[2]) * t + b[3]) * t + b[4]) * t + 1)
    )
