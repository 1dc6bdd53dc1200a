"""Tests for lc.common.filters.phone: normalisation examples and the suffix rule.

Expected digit strings are worked out by hand from the steps in the module docstring.
"""

from __future__ import annotations

import pytest

from lc.common.filters import MIN_PHONE_DIGITS, normalise_phone, phone_matches

NORMALISED = [
    # (as written, digits)
    ("+49 30 1234567", "49301234567"),
    ("030 1234567", "301234567"),
    ("0049301234567", "49301234567"),
    ("0049 (0)30 1234567", "490301234567"),  # "(0)" stays; it still ends with 301234567
    ("tel:+1-212-555-0100;ext=1", "12125550100"),
    ("TEL:+1.212.555.0100", "12125550100"),
    ("sip:00441234567890@example.com", "441234567890"),
    ("sips:+441234567890@example.com;user=phone", "441234567890"),
    ("<sip:+49-30-1234567@example.com>", "49301234567"),
    ("sip:+1-212-555-0100;phone-context=example.com@example.com", "12125550100"),
    ("sip:0301234567?subject=x", "301234567"),
    ("011 44 20 7946 0958", "442079460958"),  # North American international prefix
    ("(212) 555/0100", "2125550100"),
    ("0 30 1234567", "301234567"),  # a single trunk 0
    ("00 0 30 1234567", "301234567"),  # "00" then one trunk 0
    ("0000301234567", "0301234567"),  # only one trunk 0 after "00"
    ("1234567", "1234567"),
    ("  +4930 1234567\t", "49301234567"),
    ("+4567", "4567"),  # short numbers normalise; filters need 7 digits
]

NOT_NUMBERS = [
    "",
    "   ",
    "+",
    "00",
    "0",
    "alice",
    "sip:alice@example.com",
    "tel:",
    "*67",
    "12#34",
    "49３０1234567",  # fullwidth digits are not ASCII digits
    "+49 30 1234567x",
    "+-",
]


@pytest.mark.parametrize(("written", "digits"), NORMALISED)
def test_normalise_phone(written: str, digits: str) -> None:
    assert normalise_phone(written) == digits


@pytest.mark.parametrize("written", NOT_NUMBERS)
def test_not_phone_numbers(written: str) -> None:
    assert normalise_phone(written) is None


def test_min_digits_is_seven() -> None:
    assert MIN_PHONE_DIGITS == 7


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("+49 30 1234567", "030 1234567", True),
        ("+49 30 1234567", "0049301234567", True),
        ("+49 30 1234567", "1234567", True),  # 7 digits: enough
        ("+49 30 1234567", "234567", False),  # 6 digits: too few
        ("+49 30 1234567", "+49 30 1234568", False),
        ("+49 30 1234567", "+49 30 12345678", False),  # not a suffix
        ("4567", "4567", True),  # equal numbers match whatever their length
        ("4567", "+44 4567", False),
        ("tel:+1-212-555-0100;ext=1", "sip:+12125550100@example.com", True),
        ("sip:00441234567890@example.com", "01234 567890", True),
        ("alice", "alice", False),  # names are not numbers
        ("", "", False),
    ],
)
def test_phone_matches(a: str, b: str, expected: bool) -> None:
    assert phone_matches(a, b) is expected
    assert phone_matches(b, a) is expected  # symmetric
