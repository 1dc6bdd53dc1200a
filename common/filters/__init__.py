"""Filters for every hunter mode: one model, one set of matching rules, one engine.

* :mod:`~lc.common.filters.model`: :class:`Filter`, the types, validation and
  normalisation, JSON/YAML conversion. Its docstring is the reference table of what
  each filter type matches.
* :mod:`~lc.common.filters.engine`: :func:`compile_filters` builds an immutable
  :class:`FilterSet` that answers "which filters match these values?" cheaply with
  many thousands of filters.
* :mod:`~lc.common.filters.phone`: phone number normalisation and the suffix rule.

Pure Python: no sockets, no grpc, no libpcap (``bpf`` patterns are checked through a
``bpf_check`` callable the caller passes).
"""

from lc.common.filters.engine import FilterSet, KeywordMatcher, KeywordStream, compile_filters
from lc.common.filters.model import (
    FILTER_TYPES,
    MAX_BPF_LEN,
    MAX_DESCRIPTION_LEN,
    MAX_PATTERN_LEN,
    TYPES,
    Filter,
    FilterType,
    dump_filters,
    new_filter_id,
    normalise_value,
    parse_filters,
    validate_filter,
)
from lc.common.filters.phone import MIN_PHONE_DIGITS, normalise_phone, phone_matches

__all__ = [
    "FILTER_TYPES",
    "MAX_BPF_LEN",
    "MAX_DESCRIPTION_LEN",
    "MAX_PATTERN_LEN",
    "MIN_PHONE_DIGITS",
    "TYPES",
    "Filter",
    "FilterSet",
    "FilterType",
    "KeywordMatcher",
    "KeywordStream",
    "compile_filters",
    "dump_filters",
    "new_filter_id",
    "normalise_phone",
    "normalise_value",
    "parse_filters",
    "phone_matches",
    "validate_filter",
]
