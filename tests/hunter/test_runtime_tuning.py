"""The hunter's runtime tuning when a capture source opens (hunter.capture.tune_runtime):
the garbage collector's thresholds and frozen start-up objects, and glibc's malloc
thresholds. Each case runs in a fresh interpreter (the settings are per process)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def capture_file(tmp_path: Path) -> Path:
    path = tmp_path / "one.pcap"
    import struct

    path.write_bytes(
        struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
        + struct.pack("<IIII", 1, 2, 4, 4)
        + b"abcd"
    )
    return path


def test_opening_a_file_source_tunes_the_collector_once(capture_file: Path):
    got = _run(f"""
        import gc
        before = gc.get_threshold(), gc.get_freeze_count()
        from lc.hunter.capture import FileSource
        src = FileSource({str(capture_file)!r})
        assert len(src.read()) == 1
        after = gc.get_threshold(), gc.get_freeze_count() > 0
        gc.set_threshold(123, 4, 5)
        FileSource({str(capture_file)!r})
        print(before[0], after, gc.get_threshold())
    """)
    assert got == "(700, 10, 10) ((500000, 10, 20), True) (123, 4, 5)"


def test_thresholds_set_by_someone_else_are_left_alone(capture_file: Path):
    got = _run(f"""
        import gc
        gc.set_threshold(1000, 5, 5)
        from lc.hunter.capture import FileSource
        FileSource({str(capture_file)!r})
        print(gc.get_threshold(), gc.get_freeze_count())
    """)
    assert got == "(1000, 5, 5) 0"


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_malloc_thresholds_are_set_on_glibc(capture_file: Path):
    assert (
        _run(f"""
        from lc.hunter import capture
        capture.FileSource({str(capture_file)!r})
        print(capture._tuned)
    """)
        == "True"
    )
