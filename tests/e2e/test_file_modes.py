"""Captured traffic is not for other users (issue 9, item 10).

``lc process`` and ``lc hunt`` run with umask 027 (or the caller's, when stricter): the
PCAPs, per-call files, lc.db and spool segments are 0640 and the directories lc
creates 0750. Before, they were 0644 in 0755 directories.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_lc, start_processor, tls_args

SAMPLE = ROOT / "captures" / "sip-call.pcap"


def modes(top: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(top.stat().st_mode)}
    for p in top.rglob("*"):
        out[str(p.relative_to(top))] = stat.S_IMODE(p.stat().st_mode)
    return out


def assert_private(top: Path, file_mode: int, dir_mode: int) -> None:
    found = modes(top)
    assert len(found) > 1, found
    for name, mode in found.items():
        want = dir_mode if (top / name).is_dir() else file_mode
        assert mode == want, f"{top / name}: {oct(mode)}, expected {oct(want)}"


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)  # what most users have: lc must tighten it
    yield
    os.umask(old)


@pytest.mark.e2e
def test_processor_and_hunter_files_are_not_world_readable(tmp_path, pki, loose_umask):
    calls = tmp_path / "calls"
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--per-call-pcap-dir", str(calls))
    try:
        r = run_lc(
            "hunt", "voip", "--processor", p.addr, *tls_args(pki, "hunter-h1"),
            "-r", str(SAMPLE), "--sip-port", "5061,5070", "--rtp-port-range", "6000-6199",
            "--no-filter-policy", "allow", timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    finally:
        assert p.stop() == 0
    assert list(calls.glob("*.pcap")), "no per-call file written"
    assert (p.data_dir / "capture.pcap").exists() and (p.data_dir / "lc.db").exists()
    assert_private(p.data_dir, 0o640, 0o750)
    assert_private(calls, 0o640, 0o750)
    # The spool: the processor is down, so every batch goes to disk.
    spool = tmp_path / "spool"
    r = run_lc(
        "hunt", "--processor", "127.0.0.1:1", *tls_args(pki, "hunter-h1"), "-r", str(SAMPLE),
        "--disk-buffer", "--disk-buffer-dir", str(spool), "--shutdown-timeout", "1",
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert any(f.is_file() and f.name != "spool.lock" for f in spool.rglob("*")), modes(spool)
    assert_private(spool, 0o640, 0o750)


@pytest.mark.e2e
def test_a_stricter_umask_is_kept(tmp_path, pki):
    old = os.umask(0o077)
    try:
        p = start_processor(tmp_path, tls_args(pki, "processor"))
        try:
            r = run_lc("hunt", "--processor", p.addr, *tls_args(pki, "hunter-h1"),
                       "-r", str(SAMPLE), timeout=60)  # fmt: skip
            assert r.returncode == 0, r.stderr
        finally:
            assert p.stop() == 0
    finally:
        os.umask(old)
    assert_private(p.data_dir, 0o600, 0o700)
