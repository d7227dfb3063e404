"""Command-line flags built from a config dataclass, so the dataclass is the one home of defaults and help.

    add_config_arguments(parser, EraseConfig, aliases={"anchor": "--to"})
    config = config_from_args(EraseConfig, args, base=saved_config_dict)

Every flag defaults to "not given" (argparse.SUPPRESS): the value comes from `base` (a saved config, for
`--config`) or else from the dataclass default, and a flag the user gave wins over both. Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _plain_type(annotation) -> tuple[type, bool]:
    """(the scalar type, whether None is allowed) of str / int / float / bool / X | None annotations."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0]
    return annotation, optional


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: Iterable[str] = (),
    aliases: dict[str, str] | None = None,
    choices: dict[str, Iterable[str]] | None = None,
) -> None:
    """One flag per dataclass field (`field_name` -> `--field-name`, or its alias), help from the field's metadata."""
    aliases, choices, skip = aliases or {}, choices or {}, set(skip)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        flags = [aliases.get(field.name, _flag(field.name))]
        if field.name in aliases and aliases[field.name] != _flag(field.name):
            flags.append(_flag(field.name))
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = field.metadata.get("help", "")
        help_text = f"{help_text} (default: {default!r})" if help_text else f"default: {default!r}"
        kwargs = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text.replace("%", "%%")}
        if "metavar" in field.metadata:
            kwargs["metavar"] = field.metadata["metavar"]
        annotation = hints[field.name]
        origin = typing.get_origin(annotation)
        if origin is list:  # list[str]: a repeatable flag
            kwargs.update(action="append", type=typing.get_args(annotation)[0])
        elif origin is tuple:
            args = typing.get_args(annotation)
            if len(args) == 2 and args[1] is Ellipsis:  # tuple[str, ...]: a repeatable flag
                kwargs.update(action="append", type=args[0])
            else:
                kwargs.update(nargs=len(args), type=args[0], metavar=tuple(a.__name__.upper() for a in args))
        else:
            scalar, _ = _plain_type(annotation)
            if scalar is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = scalar
                if field.name in choices:
                    kwargs["choices"] = list(choices[field.name])
        parser.add_argument(*flags, **kwargs)


def config_from_args(cls: type, args: argparse.Namespace, base: dict | None = None, **overrides):
    """The dataclass from `base` (a saved config) updated with every flag the user gave, then `overrides`."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {k: v for k, v in (base or {}).items() if k in names}
    unknown = sorted(set(base or {}) - names)
    if unknown:
        raise ValueError(f"the saved config has fields {unknown} that {cls.__name__} does not know; "
                         "was it written by another version of t2v_unlearn?")  # fmt: skip
    values.update({k: v for k, v in vars(args).items() if k in names})
    values.update(overrides)
    return cls(**values)
