"""``lc hunt -r``'s progress bar: file bytes read of its size, packets, pkt/s and ETA.

Drawn with rich on stderr, only when stderr is a terminal (the caller checks), so the
summary line on stdout and any piped output never hold a bar. While it is drawn, log
lines go through rich's stderr proxy, which prints them above the bar instead of
through it; at the end the bar is removed (the summary line says it all).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from lc.common.text import log_text

__all__ = ["ReplayProgress", "wanted"]

_RATE_WINDOW = 2.0  # seconds of samples behind the pkt/s figure
_WIDE = 100  # columns from which the bar shows the bytes read too


def _one_line() -> Column:
    return Column(no_wrap=True, overflow="ellipsis")


def wanted(stream: TextIO) -> bool:
    """A bar on ``stream``: a terminal that can draw one."""
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


class ReplayProgress:
    """The ``progress`` callback of a replaying Hunter (lc.hunter.run.ProgressFn); the bar
    appears with the first report, once the hunter is connected and reading."""

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self._name = log_text(os.path.basename(name) or name, limit=60)
        self._stream = stream if stream is not None else sys.stderr
        self._progress: Progress | None = None
        self._task: Any = None
        self._samples: deque[tuple[float, int]] = deque()
        self._first: tuple[float, int] | None = None  # the first report (time, packets)
        self._pps = 0.0
        self._moved: list[tuple[logging.StreamHandler, Any]] = []

    def __call__(self, phase: str, packets: int, nbytes: int, offset: int, size: int) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (now, packets)
        if phase == "reading":
            s = self._samples
            s.append((now, packets))
            while len(s) > 2 and now - s[0][0] > _RATE_WINDOW:
                s.popleft()
            t0, p0 = s[0]
            self._pps = (packets - p0) / (now - t0) if now > t0 else 0.0
            desc = self._name
        else:  # read: the average rate of the whole file
            t0, p0 = self._first
            if now > t0 and packets > p0:
                self._pps = (packets - p0) / (now - t0)
            desc = f"{self._name}: waiting for acks"
        fields = dict(
            description=desc,
            completed=offset,
            total=max(size, offset, 1),
            packets=packets,
            pps=self._pps,
        )
        if self._progress is None:
            self._start(fields)
        else:
            self._progress.update(self._task, **fields)

    def _start(self, fields: dict[str, Any]) -> None:
        console = self._console()
        # One line whatever the width: no column wraps (rich would put "kB" on a line of
        # its own at 80 columns); below 100 columns the bytes go (the percentage says as
        # much) and the bar takes what is left.
        wide = console.width >= _WIDE
        columns: list[Any] = [
            TextColumn("{task.description}", markup=False, table_column=_one_line()),
            BarColumn(bar_width=40 if wide else None),
            TaskProgressColumn(table_column=_one_line()),
        ]
        if wide:
            columns.append(DownloadColumn(table_column=_one_line()))
        columns += [
            TextColumn("{task.fields[packets]:,} pkts", markup=False, table_column=_one_line()),
            TextColumn("{task.fields[pps]:,.0f} pkt/s", markup=False, table_column=_one_line()),
            TextColumn("ETA", markup=False, table_column=_one_line()),
            TimeRemainingColumn(table_column=_one_line()),
        ]
        self._progress = Progress(
            *columns,
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=True,
            refresh_per_second=4,
        )
        self._task = self._progress.add_task(**fields)
        self._progress.start()
        # Log handlers hold the real stderr: send them through rich's proxy meanwhile.
        proxy = sys.stderr
        if proxy is not self._stream:
            for h in logging.getLogger().handlers:
                if isinstance(h, logging.StreamHandler) and h.stream is self._stream:
                    self._moved.append((h, h.setStream(proxy)))

    def _console(self) -> Console:
        return Console(file=self._stream, stderr=self._stream is sys.stderr)

    def close(self) -> None:
        """Remove the bar and give the log handlers their stream back (safe twice)."""
        for h, old in self._moved:
            h.setStream(old)
        self._moved.clear()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
