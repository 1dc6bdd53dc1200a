"""``lc hunt -r``'s progress bar keeps to one line on a narrow terminal (80 columns):
rich wrapped a column that did not fit onto a second line ("kB" alone), which every
refresh then redrew below the bar."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from lc.cli import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("width", [80, 100, 200])
def test_one_line_per_refresh_with_every_figure(monkeypatch, width):
    def console(file, stderr=False):
        return Console(file=file, width=width, force_terminal=True, color_system=None)

    monkeypatch.setattr(progress, "Console", console)
    out = _Tty()
    bar = progress.ReplayProgress("/captures/sip-call.pcap", stream=out)
    bar("reading", 100, 10_000, 10_000, 451_000)
    bar("read", 1494, 427_563, 451_000, 451_000)
    bar._progress.refresh()
    text = out.getvalue()
    bar.close()
    assert "\n" not in text, repr(text)  # every frame is one line, redrawn in place
    last = text.split("\r")[-1]
    assert len(last.removeprefix("\x1b[2K")) <= width, repr(last)
    for figure in ("sip-call.pcap: waiting for acks", "━", "100%", "1,494 pkts", "ETA 0:00:00"):
        assert figure in last, (figure, last)
    assert ("451.0/451.0 kB" in last) == (width >= 100), last
