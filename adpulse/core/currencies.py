"""Currencies and money amounts: ISO 4217 codes, exact decimal parsing, integer micros.

Money is never a binary float here: amounts are Decimal, stored as integer millionths
("micros") of the currency unit.

The code table is
From ISO 4217 list one (2025 edition). Left out on purpose, because no shop prices an order in
them: fund codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW), precious metals (XAG, XAU, XPD,
XPT), bond-market units (XBA to XBD), the SDR and its kin (XDR, XSU, XUA), and the testing and
"no currency" codes (XTS, XXX). Withdrawn codes such as HRK (Croatia, now EUR) are not here.
Codes still legal tender while being replaced stay until their withdrawal date (ANG, SLL, ZWL).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

_TABLE = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN
    BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD
    CAD CDF CHF CLP CNY COP CRC CUP CVE CZK
    DJF DKK DOP DZD
    EGP ERN ETB EUR
    FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD
    HKD HNL HTG HUF
    IDR ILS INR IQD IRR ISK
    JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT
    LAK LBP LKR LRD LSL LYD
    MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN
    NAD NGN NIO NOK NPR NZD
    OMR
    PAB PEN PGK PHP PKR PLN PYG
    QAR
    RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL
    THB TJS TMT TND TOP TRY TTD TWD TZS
    UAH UGX USD UYU UZS
    VED VES VND VUV
    WST
    XAF XCD XCG XOF XPF
    YER
    ZAR ZMW ZWG ZWL
"""

CURRENCY_CODES: frozenset[str] = frozenset(_TABLE.split())


def is_currency_code(code: str) -> bool:
    """True for an upper-case ISO 4217 code of a circulating currency, e.g. "EUR"."""
    return code in CURRENCY_CODES


MICROS = 1_000_000

# Wide enough that no product of an amount (at most 16 digits) and a configured rate rounds.
_EXACT = Context(prec=80, rounding=ROUND_HALF_EVEN)
_DECIMAL_TEXT = re.compile(r"\d+(?:\.\d+)?")
_MAX_DECIMAL_TEXT = 40


def parse_amount(value: str | int | float, max_amount: Decimal) -> Decimal | None:
    """An exact amount from a decimal string, an int or a float; None for a blank string.

    Strings must look like "12.34" (no sign, exponent, separators); a float is read through
    its shortest repr, so 19.99 is exactly 19.99. ValueError with the reason for a negative or
    non-finite number, more than 6 decimal places, or more than `max_amount`.

    >>> parse_amount("19.990", Decimal(1000)), parse_amount(0.1, Decimal(1000))
    (Decimal('19.990'), Decimal('0.1'))
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if len(text) > _MAX_DECIMAL_TEXT or _DECIMAL_TEXT.fullmatch(text) is None:
            reason = "must not be negative" if text.startswith("-") else "not a decimal number"
            raise ValueError(f"{reason}, e.g. 12.34")
        amount = Decimal(text)
    elif isinstance(value, float):
        amount = Decimal(repr(value))
        if not amount.is_finite():
            raise ValueError("not a finite number")
    else:
        amount = Decimal(value)
    if amount < 0:
        raise ValueError("must not be negative")
    if amount > max_amount:
        raise ValueError(f"more than the maximum of {max_amount}")
    micros = _EXACT.multiply(amount, MICROS)
    if micros != micros.to_integral_value():
        raise ValueError("more than 6 decimal places")
    return amount


def parse_micros(value: str | int | float, max_amount: Decimal) -> int | None:
    """`parse_amount` in integer micros, without Decimal for the common input.

    >>> parse_micros("12.34", Decimal(1000)), parse_micros(19.99, Decimal(1000))
    (12340000, 19990000)
    """
    if type(value) is int and value >= 0:
        if value > max_amount:
            raise ValueError(f"more than the maximum of {max_amount}")
        return value * MICROS
    # A float is read through its shortest repr, as `parse_amount` does: 49.9 is "49.9".
    text = value.strip() if type(value) is str else repr(value) if type(value) is float else ""
    whole, point, fraction = text.partition(".")
    # isdecimal() is what the regex's \d matches. Anything else (blank, negative, exponents,
    # more than 6 decimals, a bool) goes to `parse_amount` for its result or its reason.
    if (
        whole.isdecimal()
        and (fraction.isdecimal() if point else True)
        and len(fraction) <= 6
        and len(text) <= _MAX_DECIMAL_TEXT
    ):
        micros = int(whole) * MICROS + (int(fraction.ljust(6, "0")) if point else 0)
        if micros > max_amount * MICROS:
            raise ValueError(f"more than the maximum of {max_amount}")
        return micros
    amount = parse_amount(value, max_amount)
    return None if amount is None else to_micros(amount)


def convert_micros(micros: int, rate: Decimal) -> int:
    """`micros` times `rate`, rounded half to even: `to_micros` for an amount in micros.

    >>> convert_micros(49_900_000, Decimal("1.08"))
    53892000
    """
    return int(_EXACT.multiply(micros, rate).to_integral_value(ROUND_HALF_EVEN))


def to_micros(amount: Decimal, rate: Decimal = Decimal(1)) -> int:
    """`amount` times `rate` in integer millionths, rounded half to even.

    >>> to_micros(Decimal("49.90"), Decimal("1.08"))
    53892000
    """
    product = _EXACT.multiply(_EXACT.multiply(amount, rate), MICROS)
    return int(product.to_integral_value(ROUND_HALF_EVEN))


def parse_fx_rates(text: str) -> dict[str, Decimal]:
    """Parse ADPULSE_FX_RATES, e.g. ``"EUR=1.08, GBP=1.27"``: reporting units per unit."""
    rates: dict[str, Decimal] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        code, equals, number = item.partition("=")
        code = code.strip().upper()
        if not equals or code not in CURRENCY_CODES:
            raise ValueError(f"{item.strip()!r}: expected CODE=RATE with an ISO 4217 code")
        try:
            rate = Decimal(number.strip())
        except InvalidOperation:
            raise ValueError(f"{item.strip()!r}: rate is not a decimal number") from None
        if not rate.is_finite() or rate <= 0:
            raise ValueError(f"{item.strip()!r}: rate must be positive")
        rates[code] = rate
    return rates


_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
# ISO 4217 minor units other than 2, for the codes above.
_MINOR_UNITS = {
    **dict.fromkeys(_ZERO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
}


def minor_unit(code: str) -> int:
    """Digits after the decimal point of the currency's minor unit (ISO 4217): 2 for USD."""
    return _MINOR_UNITS.get(code, 2)
