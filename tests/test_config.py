"""``--config FILE`` on lc hunt and lc process, and the example configs and units in contrib/.

The precedence (flags > LC_* environment > file > defaults) is checked on the real click
commands (their parsing, not a copy of it), the error paths through the real ``lc``
process, and the contrib files through lc's own loader against the command their unit
runs, with ``systemd-analyze verify`` as the units' judge when it is installed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import click.testing
import pytest

from lc.cli.config import config_keys, config_option, load_config
from lc.cli.hunt import hunt, mode_command
from lc.cli.main import cli
from lc.cli.process import process
from lc.common.errors import NotFound, ValidationError
from lc.hunter import modes
from tests.conftest import CORPUS, ROOT, lc_env, run_lc, start_processor, tls_args

CONTRIB = ROOT / "contrib"


def params(command: click.Command, args: list[str]) -> click.Context:
    return command.make_context(command.name or "x", list(args))


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# -- precedence --------------------------------------------------------------------------


def test_flags_then_environment_then_file_then_defaults(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("LC_")]:
        monkeypatch.delenv(k)
    cfg = write(
        tmp_path,
        "processor: file.example:1\n"
        "tls-cert: /file/cert.pem\n"
        "tls_key: /file/key.pem\n"  # the underscored spelling too
        "snaplen: 1500\n"
        "batch-size: 10\n"
        "disk-buffer: true\n"
        "interface: [eth0, eth1]\n",
    )
    ctx = params(hunt, ["--config", cfg, "--snaplen", "9000"])
    p = ctx.params
    assert p["snaplen"] == 9000  # flag over file
    assert p["batch_size"] == 10 and p["disk_buffer"] is True  # file over default
    assert p["interfaces"] == ("eth0", "eth1")
    assert p["processor"] == "file.example:1" and p["tls_cert"] == "/file/cert.pem"
    assert p["tls_key"] == "/file/key.pem"
    assert p["queue_mb"] == 256  # default
    S = click.core.ParameterSource
    assert ctx.get_parameter_source("batch_size") == S.DEFAULT_MAP
    monkeypatch.setenv("LC_PROCESSOR", "env.example:2")
    monkeypatch.setenv("LC_TLS_CERT", "/env/cert.pem")
    p = params(hunt, ["--config", cfg]).params
    assert p["processor"] == "env.example:2" and p["tls_cert"] == "/env/cert.pem"  # env > file
    p = params(hunt, ["--config", cfg, "--processor", "flag.example:3"]).params
    assert p["processor"] == "flag.example:3"  # flag > env
    # A flag before --config on the command line still wins (--config is read first).
    p = params(process, ["--rotate-size", "5M", "--config", write(tmp_path, "rotate-size: 1G\n")])
    assert p.params["rotate_size"] == "5M"


def test_mode_flags_and_switches_from_the_file(tmp_path):
    cfg = write(
        tmp_path,
        "processor: a:1\nsip-port: 5070,5071\nrtp-port-range: 20000-20100\nmax-calls: 10\n",
    )
    p = params(mode_command(modes.get("voip")), ["--config", cfg]).params
    assert p["sip_ports"] == "5070,5071" and p["rtp_range"] == "20000-20100"
    assert p["max_calls"] == "10"
    # A switch (a flag that stands for "yes") and an on/off flag.
    http = mode_command(modes.get("http"))
    p = params(http, ["--config", write(tmp_path, "capture-body: true\n")]).params
    assert p["capture_body"] == "yes"
    p = params(http, ["--config", write(tmp_path, "capture-body: false\n")]).params
    assert p["capture_body"] == "no"
    dns = mode_command(modes.get("dns"))
    p = params(dns, ["--config", write(tmp_path, "udp-only: true\n")]).params
    assert p["udp_only"] is True


def test_keys_come_from_the_command_itself(tmp_path):
    """A flag added to a command (by anyone, later) is a key at once: nothing lists them."""

    @click.command()
    @click.option("--metrics-listen", default="off")
    @click.option("--upstream-retries", type=int, default=1)
    @config_option
    def cmd(metrics_listen, upstream_retries):
        click.echo(f"{metrics_listen} {upstream_retries}")

    keys = config_keys(cmd)
    assert {"metrics-listen", "metrics_listen", "upstream-retries"} <= set(keys)
    assert "config" not in keys
    cfg = write(tmp_path, "metrics-listen: 127.0.0.1:9100\nupstream_retries: 7\n")
    r = click.testing.CliRunner().invoke(cmd, ["--config", cfg])
    assert r.exit_code == 0 and r.output == "127.0.0.1:9100 7\n", r.output
    # Every long flag of the real commands (each mode's included) is a key.
    commands = [hunt, process, *(mode_command(s) for s in map(modes.get, modes.names()) if s)]
    for command in commands:
        for prm in command.params:
            for opt in getattr(prm, "opts", []):
                if opt.startswith("--") and opt != "--config":
                    assert opt[2:] in config_keys(command), (command.name, opt)


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("snaplen: 1.5\n", ["snaplen", "'1.5' is not a valid integer"]),
        ("snaplen: [1]\n", ["snaplen", "not a list"]),
        ("disk-buffer: 1\n", ["disk-buffer", "true or false"]),
        ("processor: yes\n", ["processor", "not true"]),
        ("events: some\n", ["events", "'some' is not one of"]),
        ("tls-ca: {a: 1}\n", ["tls-ca", "not a mapping"]),
        ("queue-mb: 1\nqueue_mb: 2\n", ["queue_mb and queue-mb are the same option"]),
        ("batch-size: 1\nbatch-size: 2\n", ["'batch-size' appears twice", "line 2"]),
        ("- a\n", ["expected a mapping"]),
        ("a: [\n", ["not valid YAML", "line 2"]),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ValidationError) as e:
        load_config(hunt, path)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_unknown_keys_are_refused_with_name_and_file(tmp_path):
    path = write(tmp_path, "snaplen: 100\nsnaplenn: 1\nsip-port: 5060\n")
    with pytest.raises(ValidationError) as e:
        load_config(hunt, path)
    msg = str(e.value)
    assert path in msg and "'snaplenn'" in msg and "'sip-port'" in msg
    assert "did you mean 'snaplen'" in msg
    with pytest.raises(NotFound):
        load_config(process, str(tmp_path / "missing.yaml"))


def test_the_real_command_refuses_with_exit_3(tmp_path):
    bad = write(tmp_path, "listen: :0\nlisten-port: 1\n")
    r = run_lc("process", "--config", bad)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == (
        f"lc process: error: config file {bad}: unknown key 'listen-port' "
        "(did you mean 'listen'?): lc process takes the long flag names of "
        "`lc process --help` as keys"
    )
    r = run_lc("hunt", "--config", write(tmp_path, "snaplen: big\n"))
    assert r.returncode == 3 and "snaplen: 'big' is not a valid integer" in r.stderr, r.stderr
    r = run_lc("hunt", "http", "--config", write(tmp_path, "sip-port: 5060\n"))
    assert r.returncode == 3 and "lc hunt http: error:" in r.stderr
    assert "unknown key 'sip-port'" in r.stderr
    # A mode's key is known to that mode only, and --config goes after the mode.
    voip = write(tmp_path, "sip-port: 5060\n", "voip.yaml")
    r = run_lc("hunt", "--config", voip)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == (  # which mode takes it, and how to run that mode
        f"lc hunt: error: config file {voip}: 'sip-port' is an option of lc hunt voip, "
        f"not of lc hunt: give the mode first (lc hunt voip --config {voip})"
    )
    # A key of no mode at all is still an unknown key, with the nearest one.
    r = run_lc("hunt", "--config", write(tmp_path, "snaplenn: 1\n", "typo.yaml"))
    assert r.returncode == 3 and "unknown key 'snaplenn' (did you mean 'snaplen'?)" in r.stderr
    r = run_lc("hunt", "--config", voip, "voip")
    assert r.returncode == 3 and "options go after the mode" in r.stderr, r.stderr
    r = run_lc("process", "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 4 and "config file not found" in r.stderr
    # Where a conflicting value came from is said (the file, not a flag on the line).
    r = run_lc("process", "--config", write(tmp_path, "tls-key: /k.pem\n"), "--insecure")
    assert r.returncode == 3, r.stderr
    assert "--insecure cannot be combined with tls-key from the --config file" in r.stderr


# -- the real processes, configured by files ------------------------------------------------


@pytest.mark.e2e
def test_processor_and_hunter_run_from_config_files(tmp_path, pki):
    pcap = CORPUS / "sip" / "sip-call.pcap"
    if not pcap.exists():
        pcap = ROOT / "captures" / "sip-call.pcap"
    out = tmp_path / "out" / "from-config.pcap"
    pa = tls_args(pki, "processor")
    pcfg = write(
        tmp_path,
        f"tls-cert: {pa[1]}\ntls-key: {pa[3]}\ntls-ca: {pa[5]}\n"
        f"write-file: {out}\nlisten: 127.0.0.1:1\nno-events: true\n",
        "processor.yaml",
    )
    # The harness's --listen 127.0.0.1:0 and --data-dir flags win over the file.
    p = start_processor(tmp_path, [], "--config", pcfg)
    try:
        ha = tls_args(pki, "hunter-h1")
        hcfg = write(
            tmp_path,
            f"processor: {p.addr}\ntls-cert: {ha[1]}\ntls-key: {ha[3]}\ntls-ca: {ha[5]}\n"
            f"read-file: {pcap}\nbatch-size: 3\n",
            "hunter.yaml",
        )
        r = subprocess.run(
            [*shlex.split(f"{ROOT}/.venv/bin/lc"), "hunt", "--config", hcfg],
            capture_output=True, text=True, timeout=120, env=lc_env(),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "unacknowledged 0" in r.stdout
        n = int(r.stdout.split(": ")[2].split(" packets")[0])
        s = run_lc("show", "status", "--processor", p.addr, *tls_args(pki, "admin"))
        status = json.loads(s.stdout)
        assert status["packets_written"] == n > 0
        assert status["batches_written"] >= n // 3  # batch-size 3 from the file
        assert status["output_files"] == [str(out)] and status["events_file"] == ""
    finally:
        assert p.stop() == 0


# -- contrib/ ----------------------------------------------------------------------------


def unit_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit's sections and keys (a key may repeat); comments dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path}:{n}: {raw!r}"
        key, _, value = line.partition("=")
        assert key.strip() == key and key.isidentifier(), f"{path}:{n}: {key!r}"
        current.setdefault(key, []).append(value)
    return sections


UNITS = {"lc-hunter.service": "hunter.yaml", "lc-processor.service": "processor.yaml"}


@pytest.mark.parametrize("unit, yaml_name", sorted(UNITS.items()))
def test_contrib_unit_runs_its_config_through_the_real_cli(unit, yaml_name):
    s = unit_sections(CONTRIB / unit)
    assert set(s) == {"Unit", "Service", "Install"}
    svc = s["Service"]
    argv = shlex.split(svc["ExecStart"][0])
    assert argv[0] == "/usr/local/bin/lc" and argv[-2:] == ["--config", f"/etc/lc/{yaml_name}"]
    # The command the unit runs, found the way `lc` finds it, loads the example config.
    ctx = click.Context(cli)
    command: click.Command = cli
    for word in argv[1:-2]:
        assert isinstance(command, click.Group)
        command = command.get_command(ctx, word)
        assert command is not None, word
    values = load_config(command, str(CONTRIB / yaml_name))
    assert values["tls_cert"].startswith("/etc/lc/certs/")
    made = command.make_context(argv[-3], ["--config", str(CONTRIB / yaml_name)])
    assert made.params["tls_ca"] == "/etc/lc/certs/ca.pem"
    state = "/var/lib/" + svc["StateDirectory"][0]
    assert svc["WorkingDirectory"] == [state]
    written = [v for k, v in values.items() if k in ("data_dir", "disk_buffer_dir")]
    assert written and all(v.startswith(state) for v in written)
    # Hardening: an unprivileged user, a read-only system, no more capability than needed.
    assert svc["User"] == ["lc"] and svc["NoNewPrivileges"] == ["yes"]
    assert svc["ProtectSystem"] == ["strict"] and svc["ProtectHome"] == ["yes"]
    caps = set(svc["CapabilityBoundingSet"][0].split())
    assert set(svc["AmbientCapabilities"][0].split()) == caps
    assert caps == ({"CAP_NET_RAW", "CAP_NET_ADMIN"} if "hunt" in argv else set())
    assert svc["RestartPreventExitStatus"] == ["3 4"]


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_contrib_unit_passes_systemd_analyze(tmp_path, unit):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (the parse test above still ran)")
    # verify wants ExecStart's program to exist: point it at this checkout's lc.
    text = (CONTRIB / unit).read_text().replace("/usr/local/bin/lc", f"{ROOT}/.venv/bin/lc")
    (tmp_path / unit).write_text(text)
    r = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # It only warns (exit 0) about an unknown key or a bad value: any output is a failure.
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stderr
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(tmp_path / unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    exposure = float(r.stdout.split("Overall exposure level for")[1].split(":")[1].split()[0])
    assert exposure <= 3.0, r.stdout


def test_a_hunter_given_a_non_hunter_certificate_is_refused_at_start_naming_its_source(
    tmp_path, pki
):
    # The README's quick start exports LC_TLS_CERT=admin.pem for the admin commands; in
    # that shell it overrides a --config file's tls-cert. Said at start, with where the
    # file came from (before: the processor's 'not a hunter certificate', exit 2).
    conf = write(
        tmp_path,
        f"processor: 127.0.0.1:9\nread-file: {ROOT / 'captures' / 'sip-call.pcap'}\n"
        f"tls-cert: {pki / 'hunter-h1.pem'}\ntls-key: {pki / 'hunter-h1.key'}\n"
        f"tls-ca: {pki / 'ca.pem'}\n",
    )
    admin = str(pki / "admin.pem")
    env = lc_env(LC_TLS_CERT=admin, LC_TLS_KEY=str(pki / "admin.key"))
    r = run_lc("hunt", "voip", "--config", conf, env=env)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == (
        f"lc hunt: error: --tls-cert {admin} (from LC_TLS_CERT in the environment, "
        "which overrides --config) has role 'admin' (CN 'admin'): lc hunt needs a 'hunter' "
        "certificate (lc certs add --hunter ID issues one)"
    )
    proc = str(pki / "processor.pem")
    r = run_lc(
        "hunt", "--config", conf, "--tls-cert", proc, "--tls-key", str(pki / "processor.key")
    )
    assert r.returncode == 3 and f"--tls-cert {proc} has role 'processor'" in r.stderr, r.stderr
