"""``lc hunt`` as a user runs it: flags refused before any use, and honest endings.

Real ``lc`` processes (no mocks); where a processor is needed it is a real one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import LC, lc_env
from tests.e2e.test_delivery import free_port, make_capture


def hunt(tmp: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LC, "hunt", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=lc_env(),
        cwd=tmp,
    )


def capture(tmp: Path, n: int = 5) -> Path:
    path = tmp / "a.pcap"
    make_capture(path, n, rate=1e3)
    return path


# -- item 7: --id is validated before it becomes a path -------------------------------------


@pytest.mark.parametrize("bad", ["../escaped", "ABS", "a/b", "..", "", "x" * 65, "bad id"])
def test_an_invalid_id_is_refused_before_the_disk_buffer_uses_it(tmp_path, bad):
    work = tmp_path / "work"
    work.mkdir()
    cap = capture(tmp_path)
    if bad == "ABS":
        bad = str(tmp_path / "abs")
    r = hunt(
        work, "--processor", f"127.0.0.1:{free_port()}", "--insecure", "--id", bad,
        "-r", str(cap), "--disk-buffer", "--shutdown-timeout", "0", "--connect-timeout", "1",
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert "--id" in r.stderr and "invalid hunter id" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    # Nothing was created anywhere from the id: not ./lc-spool/.., not ../escaped, not /abs.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pcap", "work"]
    assert list(work.iterdir()) == []


def test_a_valid_id_names_the_default_spool_directory(tmp_path):
    cap = capture(tmp_path)
    r = hunt(
        tmp_path, "--processor", f"127.0.0.1:{free_port()}", "--insecure", "--id", "sensor-1.a",
        "-r", str(cap), "--disk-buffer", "--shutdown-timeout", "0", "--connect-timeout", "1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "lc-spool" / "sensor-1.a" / "spool.lock").exists()
