"""Phone numbers as digit strings, and the suffix rule that matches them.

A phone number is written in many ways on the wire and by people: ``+49 30 1234567``,
``030 1234567``, ``0049301234567``, ``tel:+1-212-555-0100;ext=1``,
``sip:00441234567890@example.com``. :func:`normalise_phone` reduces every one of them
to the digits that identify the subscriber, and :func:`phone_matches` decides whether
two numbers are the same by comparing the ends of those digit strings.

Normalisation (the same for a filter's pattern and for an observed value), in order:

1. surrounding whitespace and one leading ``<`` are dropped;
2. a ``tel:``, ``sip:`` or ``sips:`` scheme is dropped (any case);
3. everything from the first ``@`` (the domain), then from the first ``;``
   (parameters such as ``;ext=1`` or ``;phone-context=...``), ``?`` (URI headers) or
   ``>`` is dropped;
4. visual separators are removed: space, tab, ``-``, ``.``, ``(``, ``)``, ``/``;
5. one leading ``+`` is dropped;
6. an international prefix is dropped: ``00`` (most of the world) or ``011``
   (North America);
7. then a single leading trunk ``0`` is dropped (``030 1234567`` -> ``301234567``).

What is left must be ASCII digits, otherwise the value is not a phone number
(``None``): SIP users that are names (``alice``), star codes (``*67``) and empty
strings never match a phone filter. Every step only removes characters from the front
or the end, so the result is always a *suffix* of the number's full international
form; this is why the comparison below is by suffix.

Matching (:func:`phone_matches`): two numbers match when their digit strings are equal,
or when the shorter one is a suffix of the longer one and has at least
:data:`MIN_PHONE_DIGITS` digits. So ``+49 30 1234567`` (``49301234567``) matches
``030 1234567`` (``301234567``), ``0049301234567`` and ``1234567``, but not ``4567``.

Why a minimum of 7: national formats hide a country code (and sometimes an area code)
that the international form spells out, so the shorter number must be allowed to match
the end of the longer one. But a short suffix says almost nothing: ``4567`` ends one
number in ten thousand, and a 4-digit extension would match a huge share of all
traffic. Seven digits is the shortest subscriber number in common numbering plans
(many cities, NANP's 7-digit local numbers), and leaves one chance in ten million that
an unrelated number shares the suffix. Filters are refused with fewer digits (see
:mod:`lc.common.filters.model`), so an observed value shorter than 7 digits can only
ever match a filter by being equal to it, which never happens.

Limits: no numbering-plan knowledge (libphonenumber-style parsing is out of scope);
the ``011`` and trunk ``0`` rules may strip digits that belong to the number, which
only shortens the suffix that is compared. Letters in vanity numbers are not mapped
to digits.
"""

from __future__ import annotations

__all__ = ["MIN_PHONE_DIGITS", "normalise_phone", "phone_matches"]

MIN_PHONE_DIGITS = 7
"""The fewest digits a suffix match may rest on (and the fewest a filter may have)."""

_SEPARATORS = " \t-.()/"
_SCHEMES = (("tel:", 4), ("sip:", 4), ("sips:", 5))


def normalise_phone(value: str) -> str | None:
    """The digits that identify a phone number, or None if ``value`` is not one.

    See the module docstring for the steps. Never raises for any ``str``.
    """
    s = value.strip()
    # Fast paths for what SIP users mostly are, "digits" and "+digits"; the same
    # result as the full procedure in _strip_notation, with fewer steps.
    if s.isdigit() and s.isascii():
        digits = s
    elif s.startswith("+") and (d := s[1:]).isdigit() and d.isascii():
        digits = d
    else:
        found = _strip_notation(s)
        if found is None:
            return None
        digits = found
    if digits[0] == "0":
        if digits.startswith("00"):
            digits = digits[2:]
        elif digits.startswith("011"):
            digits = digits[3:]
        if digits.startswith("0"):
            digits = digits[1:]
    return digits or None


def _strip_notation(s: str) -> str | None:
    """Steps 1-5 of the module docstring; None as soon as a non-digit must remain."""
    if s.startswith("<"):
        s = s[1:]
    if s[:1] in ("t", "T", "s", "S"):
        head = s[:5].lower()
        for scheme, n in _SCHEMES:
            if head.startswith(scheme):
                s = s[n:]
                break
    if s[:1].isalpha():
        # A name such as "alice": a letter here survives every later step.
        return None
    s = s.partition("@")[0]
    for stop in ";?>":
        if stop in s:
            s = s.partition(stop)[0]
    for sep in _SEPARATORS:
        if sep in s:
            s = s.replace(sep, "")
    if s.startswith("+"):
        s = s[1:]
    if not (s.isdigit() and s.isascii()):
        return None  # also for "", so the caller may index s[0]
    return s


def phone_matches(a: str, b: str) -> bool:
    """Whether two phone numbers (in any notation) are the same by the suffix rule.

    The rule the engine applies, written plainly: equal digit strings match; otherwise
    the shorter must end the longer and have at least :data:`MIN_PHONE_DIGITS` digits.
    Anything that is not a phone number (see :func:`normalise_phone`) matches nothing.
    """
    da, db = normalise_phone(a), normalise_phone(b)
    if da is None or db is None:
        return False
    if da == db:
        return True
    short, long_ = (da, db) if len(da) <= len(db) else (db, da)
    return len(short) >= MIN_PHONE_DIGITS and long_.endswith(short)
