"""Command-line flags generated from the config dataclasses, so ``--help`` never disagrees with the code.

Every field of a config dataclass becomes ``--field-name``; its default is the field's default (or
the job's override, shown as such), its help text the field's ``metadata["help"]``. Supported types:
``int``, ``float``, ``str`` (optionally ``| None``), ``bool`` (``--flag`` / ``--no-flag``),
``tuple[float, float]`` (two values), ``tuple[str, ...]`` (one or more values) and
``dict[str, float]`` (``NAME=AMOUNT`` items). Metadata keys: ``help``, ``choices``, ``metavar``,
``cli`` (False keeps a field off the command line), ``flag`` (the flag's name when it is not the
field's: ``three_d_aware`` as ``--3d-aware`` / ``--no-3d-aware``), ``deprecated_alias``, ``minimum`` and
``exclusive_minimum`` (the bounds of a number, as JSON Schema names them: the config's
``__post_init__`` calls ``check_minimums``, so a value below is refused when the config is made, from
flags or in Python, naming the field, never met later as a ZeroDivisionError in a worker). A nested dataclass field (``settings:
RenderSettings``) has its own fields added in place, prefixed with its ``metadata["prefix"]`` if
any (``fit: FitConfig`` with prefix "fit_" gives ``--fit-steps``).

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainConfig, defaults={"lr": 4e-4})
    config = config_from_args(TrainConfig, parser.parse_args())
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
import warnings
from typing import Any

from pipeline.resources import parse_resources
from pipeline.submission import check_locations


def option(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:
    """A config field with its command-line help: ``lr: float = option(3e-5, "AdamW learning rate")``.

    No default makes a required flag; a dict default gets a fresh copy per instance."""
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def check_minimums(config: Any) -> None:
    """Raise ValueError naming the first field of ``config`` (a dataclass instance) below its
    ``option(..., minimum=)`` or at or below its ``exclusive_minimum``; None passes (an unset optional)."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if value is None:
            continue
        if "minimum" in item.metadata and value < item.metadata["minimum"]:
            raise ValueError(f"{item.name} must be at least {item.metadata['minimum']}, got {value}")
        if "exclusive_minimum" in item.metadata and value <= item.metadata["exclusive_minimum"]:
            raise ValueError(f"{item.name} must be more than {item.metadata['exclusive_minimum']}, got {value}")


def _is_dataclass_type(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _unwrap_optional(kind: Any) -> Any:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return kind


def _default_of(item: dataclasses.Field) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return dataclasses.MISSING


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _deprecation(old: str, new: str) -> str:
    return f"{old} is deprecated and will be removed in the next release: use {new}"


class StoreWithDeprecatedAlias(argparse._StoreAction):
    """A store action that warns when given by its deprecated alias (``option(..., deprecated_alias=)``;
    a hand-built parser passes ``action=StoreWithDeprecatedAlias, alias="--old-name"``)."""

    def __init__(self, *args: Any, alias: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alias = alias

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if option_string == self.alias:
            warnings.warn(_deprecation(self.alias, self.option_strings[0]), FutureWarning, stacklevel=2)
        super().__call__(parser, namespace, values, option_string)


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type, *,
                         defaults: dict[str, Any] | None = None, exclude: tuple[str, ...] = (),
                         prefix: str = "") -> None:
    """Add one flag per field of ``config_cls`` (recursing into nested dataclass fields).

    Args:
        defaults: job-specific defaults replacing the dataclass's (``--help`` shows these).
        exclude: field names left off the command line.
        prefix: put before every field name (flags and ``args`` attributes).
    """
    defaults = defaults or {}
    hints = typing.get_type_hints(config_cls)
    for item in dataclasses.fields(config_cls):
        name = prefix + item.name
        if name in exclude or not item.metadata.get("cli", True):
            continue
        kind = _unwrap_optional(hints[item.name])
        if _is_dataclass_type(kind):
            add_config_arguments(parser, kind, defaults=defaults, exclude=exclude,
                                 prefix=prefix + item.metadata.get("prefix", ""))
            continue
        default = defaults.get(name, _default_of(item))
        help_text = item.metadata.get("help", item.name.replace("_", " "))
        options: dict[str, Any] = {"dest": name, "help": help_text}
        if "metavar" in item.metadata:
            options["metavar"] = item.metadata["metavar"]
        if "choices" in item.metadata:
            options["choices"] = item.metadata["choices"]
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            options.update(type=args[0], nargs="*" if default == () else "+")
        elif origin is tuple:
            options.update(type=args[0], nargs=len(args))
        elif origin is dict:
            options.update(nargs="+", metavar=options.get("metavar", "NAME=AMOUNT"))
        elif kind in (int, float, str):
            options["type"] = kind
        else:
            raise TypeError(f"{config_cls.__name__}.{item.name}: no flag for type {kind!r}")
        if default is dataclasses.MISSING:
            options["required"] = True
        else:
            if isinstance(default, dict):
                default = [f"{k}={v}" for k, v in default.items()] or None
            elif isinstance(default, tuple) and origin is tuple:
                default = list(default)
            options["default"] = default
            if not (default is None or default is False or (isinstance(default, (list, str)) and not default)):
                options["help"] = help_text + " (default: %(default)s)"
        flags = [_flag(prefix + item.metadata["flag"]) if "flag" in item.metadata else _flag(name)]
        alias = item.metadata.get("deprecated_alias")
        if alias:  # a renamed flag keeps working for one release, with a warning
            flags.append(_flag(prefix + alias))
            options.update(action=StoreWithDeprecatedAlias, alias=flags[1],
                           help=options.get("help", "") + f"; {flags[1]} is its deprecated old name")
        parser.add_argument(*flags, **options)


def config_from_args(config_cls: type, args: argparse.Namespace, prefix: str = "", **overrides: Any) -> Any:
    """Build ``config_cls`` (and its nested dataclasses) from parsed flags; ``overrides`` win.

    Fields without a flag (excluded) keep their defaults. Raises ValueError (from the dataclass's
    own checks, a bad ``NAME=AMOUNT``, or a location a submitted job cannot use:
    ``pipeline.submission``) on bad values.
    """
    config = _config_from_args(config_cls, args, prefix, **overrides)
    check_locations(config)
    return config


def _config_from_args(config_cls: type, args: argparse.Namespace, prefix: str = "", **overrides: Any) -> Any:
    hints = typing.get_type_hints(config_cls)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(config_cls):
        if item.name in overrides:
            values[item.name] = overrides[item.name]
            continue
        kind = _unwrap_optional(hints[item.name])
        if _is_dataclass_type(kind):
            values[item.name] = _config_from_args(kind, args, prefix + item.metadata.get("prefix", ""))
        elif hasattr(args, prefix + item.name):
            value = getattr(args, prefix + item.name)
            if typing.get_origin(kind) is dict:
                value = parse_resources(value)
            elif typing.get_origin(kind) is tuple and value is not None:
                value = tuple(value)
            values[item.name] = value
    return config_cls(**values)


def config_from_strings(config_cls: type, values: dict[str, str]) -> Any:
    """Build a flat ``config_cls`` from ``name=value`` strings (Ray Serve's application arguments),
    each converted by its field's type; "" means None. ValueError names unknown or missing fields."""
    hints = typing.get_type_hints(config_cls)
    fields = {item.name: item for item in dataclasses.fields(config_cls)}
    values = dict(values)
    for name, item in fields.items():
        alias = item.metadata.get("deprecated_alias")
        if alias and alias in values:
            if name in values:
                raise ValueError(f"give {name}=... or its deprecated alias {alias}=..., not both")
            warnings.warn(_deprecation(f"{alias}=", f"{name}="), FutureWarning, stacklevel=2)
            values[name] = values.pop(alias)
    unknown = sorted(set(values) - set(fields))
    missing = sorted(name for name, item in fields.items() if _default_of(item) is dataclasses.MISSING
                     and name not in values)
    if unknown or missing:
        raise ValueError(f"arguments are {', '.join(f'{name}=...' for name in fields)}; "
                         f"unknown: {unknown}, missing: {missing}")
    converted = {}
    for name, value in values.items():
        kind = _unwrap_optional(hints[name])
        if typing.get_origin(kind) is tuple and value == "":
            converted[name] = ()
        elif value == "" or value is None:
            converted[name] = None
        elif kind is bool:
            converted[name] = str(value).lower() in ("1", "true", "yes")
        elif typing.get_origin(kind) is tuple:  # "a,b" (or a YAML list) -> ("a", "b")
            items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v]
            converted[name] = tuple(typing.get_args(kind)[0](item) for item in items)
        else:
            converted[name] = kind(value)
    return config_cls(**converted)
