"""The configuration the connection modes share (lc.hunter.modes.localfilters): local
filter flags and the session engine's bounds, declared once, named per mode."""

from __future__ import annotations

import pytest

from lc.common.errors import ValidationError
from lc.hunter.modes.base import cli_options, parse_options
from lc.hunter.modes.email import EmailConfig
from lc.hunter.modes.http import HttpConfig
from lc.hunter.modes.localfilters import GRACE_NS, local_filters


def test_local_flags_become_filters_in_declaration_order() -> None:
    cfg = parse_options(
        HttpConfig, {"keywords": "secret", "hosts": "a.example, *.b.example", "statuses": "5xx"}
    )
    got = [(f.id, f.type, f.pattern, f.description) for f in local_filters(cfg)]
    assert got == [
        ("local:host:1", "http_host", "a.example", "local"),
        ("local:host:2", "http_host", "*.b.example", "local"),
        ("local:status:1", "http_status", "5xx", "local"),
        ("local:keywords:1", "keyword", "secret", "local"),
    ]
    mail = parse_options(EmailConfig, {"recipients": "x@y.example", "commands": "RETR"})
    assert [(f.id, f.type) for f in local_filters(mail)] == [
        ("local:recipient:1", "email_address"),
        ("local:command:1", "email_command"),
    ]
    assert local_filters(HttpConfig()) == []


@pytest.mark.parametrize(
    ("config", "field", "text", "words"),
    [
        (HttpConfig, "statuses", "6x6", ["--status", "'6x6'", "http_status"]),
        (HttpConfig, "keywords", "fine,ab", ["--keywords", "'ab'", "3 are needed"]),
        (EmailConfig, "subjects", "**", ["--subject", "'**'"]),
    ],
)
def test_a_bad_pattern_is_refused_naming_its_flag(config, field, text, words) -> None:
    with pytest.raises(ValidationError) as e:
        parse_options(config, {field: text})
    assert all(w in str(e.value) for w in words), str(e.value)


def test_session_bounds_have_each_modes_flags_and_defaults() -> None:
    http = parse_options(HttpConfig, {"max_sessions": "7", "decide_timeout_ns": "1.5"}).limits()
    assert (http.max_sessions, http.max_held_packets, http.max_held_bytes) == (7, 2000, 256 << 20)
    assert (http.idle_timeout_ns, http.decide_timeout_ns, http.grace_ns) == (
        300 * 10**9, 1_500_000_000, GRACE_NS
    )  # fmt: skip
    mail = EmailConfig().limits()
    assert (mail.idle_timeout_ns, mail.decide_timeout_ns) == (600 * 10**9, 300 * 10**9)
    flags = {c: [o.flag for _, o in cli_options(c)] for c in (HttpConfig, EmailConfig)}
    # The mode's own flags first, then the bounds it inherits.
    assert flags[HttpConfig][0] == "--http-port" and flags[HttpConfig][-5:] == [
        "--max-connections", "--conn-buffer-packets", "--conn-buffer-mb",
        "--conn-idle-timeout", "--conn-decide-timeout",
    ]  # fmt: skip
    assert flags[EmailConfig][0] == "--protocol" and flags[EmailConfig][-5] == "--max-sessions"
