"""Shared fixtures: a PKI made by lc's own code, and real processor processes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
LC = [sys.executable, "-m", "lc.cli"]


def lc_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    from lc.common.credentials import init_pki

    d = tmp_path_factory.mktemp("pki") / "certs"
    init_pki(d, hunters=["h1", "h2", "live"])
    return d


@dataclass
class ProcessorProc:
    proc: subprocess.Popen
    port: int
    data_dir: Path
    args: list[str]
    stderr_path: Path
    tls_args: list[str] = field(default_factory=list)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def start_processor(tmp: Path, tls_args: list[str], *extra: str) -> ProcessorProc:
    data = tmp / "data"
    err = tmp / f"processor-{time.monotonic_ns()}.err"
    args = [*LC, "process", "--listen", "127.0.0.1:0", "--data-dir", str(data), *tls_args, *extra]
    f = open(err, "w")  # noqa: SIM115 (the process owns it)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=f, env=lc_env())
    deadline = time.monotonic() + 20
    port = 0
    while time.monotonic() < deadline:
        m = re.search(r"\(port (\d+)\)", err.read_text())
        if m:
            port = int(m.group(1))
            break
        if proc.poll() is not None:
            raise AssertionError(f"processor exited {proc.returncode}: {err.read_text()}")
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError(f"processor did not start: {err.read_text()}")
    return ProcessorProc(proc, port, data, args, err, tls_args)


def tls_args(pki: Path, name: str) -> list[str]:
    return [
        "--tls-cert",
        str(pki / f"{name}.pem"),
        "--tls-key",
        str(pki / f"{name}.key"),
        "--tls-ca",
        str(pki / "ca.pem"),
    ]


@pytest.fixture
def processor(tmp_path, pki) -> Iterator[ProcessorProc]:
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    yield p
    p.stop()


def run_lc(*args: str, timeout: float = 120, env: dict[str, str] | None = None):
    return subprocess.run(
        [*LC, *args], capture_output=True, text=True, timeout=timeout, env=env or lc_env()
    )


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is required in CI (make test installs it)")
        pytest.skip(f"{tool} not installed (make test installs it)")


def start_hunter(target: str, pki: Path, name: str, *args: str) -> subprocess.Popen:
    """A long-running `lc hunt` with hunter ``name``'s certificate (stop it with SIGTERM)."""
    return subprocess.Popen(
        [*LC, "hunt", "--processor", target, *tls_args(pki, f"hunter-{name}"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=lc_env(),
    )
