"""The key log follower: appended whole lines, format checks, truncation."""

from __future__ import annotations

from lc.hunter.keylog import KeylogFollower

CR = b"CLIENT_RANDOM " + b"ab" * 32 + b" " + b"cd" * 48


def test_appended_whole_lines_are_read_once_and_junk_is_counted(tmp_path) -> None:
    p = tmp_path / "keys.txt"
    k = KeylogFollower(str(p))
    assert k.poll() == []  # not there yet
    p.write_bytes(b"# comment\n" + CR + b"\nnot a key line\n" + CR[:20])
    assert k.poll() == [CR]
    with open(p, "ab") as f:
        f.write(CR[20:] + b"\n")
    assert k.poll() == [CR]  # the line finished across two writes
    assert k.poll() == []
    assert k.counters["lines"] == 2 and k.counters["malformed"] == 1
    p.write_bytes(CR + b"\n")  # rewritten shorter: read from the start again
    assert k.poll() == [CR] and k.counters["restarts"] == 1
