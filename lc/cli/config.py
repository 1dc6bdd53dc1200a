"""``--config FILE``: option values from a YAML file, keyed by the long flag names.

The keys a command accepts are derived from the command's own click parameters, so a
flag added to ``lc hunt`` or ``lc process`` (or a mode's flag) is a config key at once:
``--disk-buffer`` is ``disk-buffer`` (``disk_buffer`` is accepted too), ``-r/--read-file``
is ``read-file``. The file's values become click's ``default_map``, which gives the
precedence: command-line flags > ``LC_*`` environment variables > the file > defaults.

The file is read with YAML's core structure but no implicit numbers or dates: a value
stays the text it is and is converted by the option's own type, so ``processor: 1:30``
is the text "1:30" (YAML 1.1 would make it the number 90), and ``snaplen: 1.5`` is
refused rather than cut to 1. ``true``/``false`` (and ``yes``/``no``) are booleans, for
the on/off flags; a key with no value (``key:`` or ``key: null``) is the same as no key.
"""

from __future__ import annotations

import difflib
import sys
from typing import Any

import click
import yaml

from lc.common.errors import LcError, NotFound, ValidationError
from lc.common.text import log_text

__all__ = ["config_keys", "config_option", "load_config"]

_MAX_BYTES = 1 << 20  # a config file is a page of text; a bigger file is a mistake
_DEFERRED = "lc.config.unknown"  # ctx.meta key: a group's unknown-key error, for later


class _Loader(yaml.SafeLoader):
    """SafeLoader without implicit ints, floats and timestamps (see the module doc), and
    refusing a key given twice (YAML itself keeps the last silently)."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag
        not in (
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
            "tag:yaml.org,2002:timestamp",
        )
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            twice = key in seen
        except TypeError:  # an unhashable key: construct_mapping reports it
            break
        if twice:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {log_text(key)!r} appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def config_keys(command: click.Command) -> dict[str, click.Option]:
    """Every key ``command`` accepts in a config file, and the option it sets: each long
    flag without its dashes, in the dashed and in the underscored spelling."""
    keys: dict[str, click.Option] = {}
    for p in command.params:
        if not isinstance(p, click.Option) or p.name == "config":
            continue
        for opt in p.opts:
            if opt.startswith("--"):
                keys[opt[2:]] = p
                keys[opt[2:].replace("-", "_")] = p
    return keys


def _command_name(ctx: click.Context | None, command: click.Command) -> str:
    if ctx is not None:
        return ctx.command_path.removeprefix("lc ").strip() or ctx.command_path
    return command.name or "lc"


def _convert(ctx: click.Context, p: click.Option, key: str, value: Any, where: str) -> Any:
    """The value ``p`` takes for ``value`` from the file; ValidationError names the key."""
    if isinstance(value, dict):
        raise ValidationError(f"{where}: {key}: expected a value, not a mapping")
    if p.multiple:
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, list | dict | bool) or v is None for v in items):
            raise ValidationError(f"{where}: {key}: expected a value or a list of values")
        value = items
    elif isinstance(value, list):
        raise ValidationError(f"{where}: {key}: expected one value, not a list")
    elif p.is_flag:
        if not isinstance(value, bool):
            raise ValidationError(
                f"{where}: {key}: expected true or false, got {log_text(value)!r}"
            )
        if p.is_bool_flag:
            return value
        return p.flag_value if value else p.default  # a flag that stands for a text
    elif isinstance(value, bool):
        raise ValidationError(
            f"{where}: {key}: expected a value, not {str(value).lower()} "
            '(quote it, e.g. "yes", if that is the text you mean)'
        )
    try:
        return p.type_cast_value(ctx, value)
    except click.BadParameter as e:
        raise ValidationError(f"{where}: {key}: {e.message}") from None


def _yaml_error(e: yaml.YAMLError) -> str:
    """What YAML found wrong and where, in one line without the file's text."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is None:
        return log_text(problem)
    return f"{log_text(problem)} (line {mark.line + 1}, column {mark.column + 1})"


def _read(
    command: click.Command, path: str, ctx: click.Context | None
) -> tuple[dict[str, Any], list[str]]:
    """(values by parameter name, unknown keys) of the config file at ``path``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        raise NotFound(f"config file not found: {path}") from None
    except OSError as e:
        raise ValidationError(f"cannot read config file {path}: {e.strerror or e}") from None
    if len(raw) > _MAX_BYTES:
        raise ValidationError(f"config file {path} is larger than {_MAX_BYTES} bytes")
    try:
        doc = yaml.load(raw, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ValidationError(f"config file {path}: not valid YAML: {_yaml_error(e)}") from None
    if doc is None:
        return {}, []
    if not isinstance(doc, dict):
        raise ValidationError(f"config file {path}: expected a mapping of option: value")
    keys = config_keys(command)
    own = ctx if ctx is not None else click.Context(command)
    values: dict[str, Any] = {}
    given: dict[str, str] = {}  # parameter name -> the key that set it
    unknown: list[str] = []
    for key, value in doc.items():
        if not isinstance(key, str) or key not in keys:
            unknown.append(log_text(key))
            continue
        p = keys[key]
        assert p.name is not None
        if p.name in given:
            raise ValidationError(
                f"config file {path}: {key} and {given[p.name]} are the same option"
            )
        given[p.name] = key
        if value is None:  # `key:` with nothing: as if absent
            continue
        values[p.name] = _convert(own, p, key, value, f"config file {path}")
    return values, unknown


def _unknown_error(
    command: click.Command, path: str, unknown: list[str], name: str
) -> ValidationError:
    keys = sorted(k for k in config_keys(command) if "_" not in k)
    hint = ""
    close = difflib.get_close_matches(unknown[0].replace("_", "-"), keys, n=1)
    if close:
        hint = f" (did you mean {close[0]!r}?)"
    what = "key" if len(unknown) == 1 else "keys"
    return ValidationError(
        f"config file {path}: unknown {what} {', '.join(repr(k) for k in unknown)}{hint}: "
        f"lc {name} takes the long flag names of `lc {name} --help` as keys"
    )


def load_config(command: click.Command, path: str) -> dict[str, Any]:
    """The option values (by parameter name) a config file gives ``command``.

    Raises:
        NotFound: no such file.
        ValidationError: unreadable, not YAML, not a mapping, an unknown key (named, with
            the file), or a value the option refuses (naming the key).
    """
    values, unknown = _read(command, path, None)
    if unknown:
        raise _unknown_error(command, path, unknown, command.name or "")
    return values


def _load_into_context(ctx: click.Context, _param: click.Parameter, path: str | None) -> None:
    if path is None or ctx.resilient_parsing:
        return
    from lc.cli.main import fail_line

    name = _command_name(ctx, ctx.command)
    try:
        values, unknown = _read(ctx.command, path, ctx)
        if unknown:
            err = _unknown_error(ctx.command, path, unknown, name)
            if not isinstance(ctx.command, click.Group):
                raise err
            # `lc hunt` (a group): the file may be meant for the mode named after the
            # options; the group decides once it knows (check_deferred).
            ctx.meta[_DEFERRED] = (err, path, unknown)
    except LcError as e:
        sys.exit(fail_line(name, e))
    ctx.default_map = {**(ctx.default_map or {}), **values}


def check_deferred(ctx: click.Context) -> None:
    """Refuse the unknown keys a group's config file had (call when no subcommand runs)."""
    deferred = ctx.meta.get(_DEFERRED)
    if deferred is not None:
        from lc.cli.main import fail_line

        err, path, unknown = deferred
        name = _command_name(ctx, ctx.command)
        sys.exit(fail_line(name, _mode_hint(ctx, path, unknown, name) or err))


def _mode_hint(ctx: click.Context, path: str, unknown: list[str], name: str) -> LcError | None:
    """When every unknown key of a group's file is an option of one of its subcommands
    (``sip-port`` given to ``lc hunt``): say which, and how to run it."""
    group = ctx.command
    if not isinstance(group, click.Group):
        return None
    owners: list[str] = []
    for sub in group.list_commands(ctx):
        command = group.get_command(ctx, sub)
        if command is not None and all(k in config_keys(command) for k in unknown):
            owners.append(sub)
    if not owners:
        return None
    keys = ", ".join(repr(k) for k in unknown)
    which = " or ".join(f"lc {name} {o}" for o in owners)
    return ValidationError(
        f"config file {path}: {keys} {'is an option' if len(unknown) == 1 else 'are options'} "
        f"of {which}, not of lc {name}: give the mode first (lc {name} {owners[0]} "
        f"--config {path})"
    )


def config_option(f: Any) -> Any:
    """``--config FILE`` (eager: read before every other option, into click's
    ``default_map``)."""
    return click.option(
        "--config",
        metavar="FILE",
        expose_value=False,
        is_eager=True,
        callback=_load_into_context,
        help="YAML file of option values keyed by long flag name (disk-buffer: true); "
        "command-line flags and LC_* variables take precedence over it.",
    )(f)
