"""The mode registry and the seam around it: the pipeline knows no mode, the CLI is built
from the registry, filter types agree with the table, the user's BPF is ANDed in."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from lc.common.errors import ValidationError
from lc.common.filters import TYPES, Filter, compile_filters
from lc.hunter import modes
from lc.hunter.modes.base import (
    MATCH_NOTHING,
    ModeContext,
    ModeSpec,
    option,
    parse_options,
    port_list,
    positive_int,
)
from lc.hunter.modes.generic import GenericMode
from lc.hunter.run import HuntConfig, Hunter

ROOT = Path(__file__).resolve().parents[2]


def test_the_pipeline_names_no_mode():
    """hunter/run.py: no mode name, no isinstance on modes, no mode's counter names."""
    src = (ROOT / "hunter" / "run.py").read_text()
    tree = ast.parse(src)
    text = " ".join(
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    )
    names = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
    attrs = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    for word in (r"voip", r"\bsip", r"calls?_", r"\brtp", r"VoIP", r"SIP"):
        assert not re.search(word, text, re.IGNORECASE), word
        assert not any(re.search(word, x, re.IGNORECASE) for x in names + attrs), word
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
            first = ast.unparse(node.args[0])
            assert first != "self.mode", ast.unparse(node)  # no branching on the mode's class


def test_each_modes_filter_types_are_those_the_type_table_gives_it():
    for name in modes.names():
        spec = modes.get(name)
        assert spec is not None
        table = {t for t, ft in TYPES.items() if name in ft.modes}
        assert set(spec.filter_types) == table, name


@dataclass(slots=True)
class EchoConfig:
    ports: frozenset[int] = option("--echo-port", "7", port_list, "Ports.", "PORTS")
    depth: int = option("--echo-depth", "3", positive_int, "Depth.", "N")

    def validate(self) -> None:
        if self.depth > 10:
            raise ValidationError("--echo-depth must be at most 10")


ECHO = ModeSpec(
    name="echo",
    help="A mode that only exists in this test.",
    filter_types=("ip_address",),
    default_policy="deny",
    config=EchoConfig,
    factory=lambda ctx, cfg: GenericMode(ctx),
)


@pytest.fixture
def echo():
    modes.register(ECHO)
    yield ECHO
    modes.unregister("echo")


def test_a_registered_mode_is_a_subcommand_with_its_flags(echo):
    from lc.cli.main import cli

    r = CliRunner().invoke(cli, ["hunt", "--help"])
    assert r.exit_code == 0 and "echo" in r.output and "voip" in r.output
    r = CliRunner().invoke(cli, ["hunt", "echo", "--help"])
    assert r.exit_code == 0
    assert "--echo-port PORTS" in r.output and "--echo-depth N" in r.output
    assert "--events [captured|all]" in r.output and "-r, --read-file" in r.output
    with pytest.raises(ValidationError) as e:
        parse_options(EchoConfig, {"ports": "7,x"})
    assert str(e.value) == "--echo-port '7,x': a comma-separated list of ports"
    with pytest.raises(ValidationError, match="--echo-depth must be at most 10"):
        parse_options(EchoConfig, {"depth": "11"})
    assert parse_options(EchoConfig, {"depth": "4"}) == EchoConfig(frozenset({7}), 4)
    with pytest.raises(ValueError, match="registered already"):
        modes.register(ECHO)


def test_hunt_config_refuses_an_unknown_mode_and_a_foreign_config():
    with pytest.raises(ValidationError, match="unknown mode 'nope'; modes: generic, voip"):
        HuntConfig(processor="x:1", read_file="f", mode="nope").validate()
    with pytest.raises(ValidationError, match="config must be a VoipConfig"):
        HuntConfig(processor="x:1", read_file="f", mode="voip", mode_config=object()).validate()
    with pytest.raises(ValidationError, match="--events must be captured or all"):
        HuntConfig(processor="x:1", read_file="f", events="some").validate()


@pytest.mark.parametrize(
    "mode,filters,policy,want",
    [
        ("generic", [], "allow", "(udp port 9) and (not (tcp port 1))"),
        ("generic", [], "deny", MATCH_NOTHING),
        (
            "generic",
            [Filter(id="a", type="ip_address", pattern="10.0.0.0/8")],
            "deny",
            "(udp port 9) and (not (tcp port 1)) and (net 10.0.0.0/8)",
        ),
        (
            "voip",
            [],
            "deny",  # a protocol mode follows its protocol even with nothing to forward
            "(udp port 9) and (not (tcp port 1)) and (((udp or tcp) and (port 5060 or port "
            "5061)) or (udp and portrange 10000-32768) or (ip and ip[6:2] & 0x3fff != 0) or "
            "(ip6 and ip6[6] == 44))",
        ),
    ],
)
def test_the_users_bpf_is_anded_with_the_modes_kernel_filter(mode, filters, policy, want):
    spec = modes.get(mode)
    assert spec is not None
    h = Hunter(HuntConfig(processor="127.0.0.1:1", read_file="f", mode=mode, bpf="udp port 9"))
    h.base_bpf = ["udp port 9", "not (tcp port 1)"]
    h.mode = spec.factory(ModeContext([("lo", 1)], policy), spec.config())
    assert h._kernel_expression(compile_filters(filters, "h", spec.filter_types)) == want


def test_every_modes_figures_fit_a_heartbeat():
    """counters.mode and counters.dropped are maps the processor bounds (MAX_COUNTERS
    keys, token names): a mode's figures must fit, with room for the pipeline's own
    reasons (figures a parser adds once it has seen traffic too: the HTTP mode's 74)."""
    from lc.processor.tree import MAX_COUNTERS

    token = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
    for name in modes.names():
        spec = modes.get(name)
        assert spec is not None
        c = spec.factory(ModeContext([("lo", 1)], "deny"), spec.config()).counters()
        assert len(c.figures) <= MAX_COUNTERS // 2 and len(c.dropped) <= 10, name
        assert all(token.fullmatch(k) for k in [*c.figures, *c.dropped]), name


def test_a_mode_that_raises_is_a_loss_the_exit_names():
    """A mode's exception never stops the hunter (its chunk is counted as
    dropped.mode_error), but it is a loss: the hunter's exit causes must say so."""
    from array import array

    from lc.hunter.capture import Chunk

    spec = modes.get("generic")
    assert spec is not None
    h = Hunter(HuntConfig(processor="127.0.0.1:1", read_file="f"))
    h.mode = spec.factory(ModeContext([("lo", 1)], "allow"), spec.config())

    def broken(chunk: Chunk):
        raise RuntimeError("a bug")

    chunk = Chunk(array("q", [1, 2]), array("I", [0, 0]), array("I", [0, 0]), bytes(32), 0)
    fwd = h._mode_call(broken, chunk, lost=len(chunk))
    assert len(fwd.chunk) == 0
    assert h.counters().dropped["mode_error"] == 2
    causes = h._loss_causes(True, 0, 0)
    assert any("the generic mode failed 1 times" in c and "2 packets" in c for c in causes), causes


def test_generic_bpf_that_does_not_compile_for_a_later_link_type_never_raises(tmp_path):
    # The set was applied for Ethernet (no interface known yet); a raw-IP capture then
    # made the mode compile `ether host` for it on the hot path, and the
    # ValidationError escaped process().
    import struct

    from lc.hunter.capture import FileSource

    path = tmp_path / "raw.pcap"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2])) + struct.pack("!HHHH", 1000, 53, 8, 0)  # fmt: skip
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        out.write(struct.pack("<IIII", 1, 0, len(ip), len(ip)) + ip)
    ifs: list = []
    mode = GenericMode(ModeContext(ifs, policy="deny"))
    filters = [
        Filter(id="e", type="bpf", pattern="ether host 00:00:00:00:00:01"),
        Filter(id="u", type="bpf", pattern="udp"),
    ]
    mode.apply(compile_filters(filters, "h"))
    src = FileSource(str(path), None)
    chunk = src.read(64)
    ifs[:] = src.interfaces
    out = mode.process(chunk)
    assert list(out.chunk.caplen) == [len(ip)] and out.meta == {0: ["u"]}
