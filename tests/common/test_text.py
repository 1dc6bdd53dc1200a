"""wire_text and log_text: any input gives valid UTF-8; logs get no control characters."""

from hypothesis import given
from hypothesis import strategies as st

from lc.common.text import log_text, wire_text


@given(st.binary(max_size=200))
def test_wire_text_from_bytes_is_valid_utf8(raw: bytes) -> None:
    wire_text(raw).encode("utf-8")  # raises on lone surrogates


@given(st.binary(max_size=200))
def test_wire_text_from_surrogateescaped_str(raw: bytes) -> None:
    s = raw.decode("utf-8", "surrogateescape")
    out = wire_text(s, limit=50)
    out.encode("utf-8")
    assert len(out) <= 50


@given(st.text(max_size=300))
def test_log_text_is_one_printable_line(s: str) -> None:
    out = log_text(s, limit=100)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out
    assert out.isprintable()


@given(st.text(alphabet=st.characters(codec=None), max_size=100))
def test_any_str_even_lone_surrogates(s: str) -> None:
    wire_text(s).encode("utf-8")
    assert log_text(s).isprintable()


def test_examples() -> None:
    assert wire_text("plain") == "plain"
    assert wire_text("ab\udcd3c") == "ab\ufffdc"
    assert wire_text(b"\xffok") == "\ufffdok"
    assert log_text("x\x1b[31mERR\nforged") == "x\\x1b[31mERR\\nforged"
    assert log_text("back\\slash\x07") == "back\\\\slash\\x07"
    assert log_text("a" * 10, limit=4) == "aaaa..."
    assert log_text(b"\xd3") == "\\ufffd"
