"""The processor's TLS key log sink (``DATA_DIR/keys/sslkeylog.txt``): a batch taken
back takes back its own lines only, also when it is the first of a run that continues
an existing file (keys of an earlier run must never be lost)."""

from __future__ import annotations

from types import SimpleNamespace

from lc.processor.keylog import KeyLog

OLD = b"CLIENT_RANDOM " + b"aa" * 32 + b" " + b"bb" * 48
NEW = b"CLIENT_RANDOM " + b"cc" * 32 + b" " + b"dd" * 48


def _batch(*lines: bytes) -> SimpleNamespace:
    return SimpleNamespace(cols=SimpleNamespace(keylog=list(lines)))


def test_a_batch_taken_back_first_in_a_run_keeps_the_earlier_runs_keys(tmp_path) -> None:
    first = KeyLog(str(tmp_path / "keys"))
    first.write(_batch(OLD))  # type: ignore[arg-type]
    first.prepare()
    first.close()
    path = tmp_path / "keys" / "sslkeylog.txt"
    assert path.read_bytes() == OLD + b"\n"
    again = KeyLog(str(tmp_path / "keys"))  # a processor restarted on the same data dir
    mark = again.mark()  # before the run's first line: the file is not open yet
    again.write(_batch(NEW))  # type: ignore[arg-type]
    again.rollback(mark)  # another sink refused the batch: its lines are taken back
    again.close()
    assert path.read_bytes() == OLD + b"\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_batch_taken_back_keeps_the_lines_before_it(tmp_path) -> None:
    k = KeyLog(str(tmp_path / "keys"))
    k.write(_batch(OLD))  # type: ignore[arg-type]
    mark = k.mark()
    k.write(_batch(NEW, b"bad\x00line"))  # type: ignore[arg-type]
    assert k.lines == 2 and k.malformed == 1
    k.rollback(mark)
    k.write(_batch(NEW))  # type: ignore[arg-type]
    k.close()
    assert (tmp_path / "keys" / "sslkeylog.txt").read_bytes() == OLD + b"\n" + NEW + b"\n"
    assert k.lines == 2
