"""Settings from the outside: the loader (command-line flag > `BRIDGE_*` environment variable > default),
each command's flags and `--help` generated from its settings, the README's flag table, and validation
errors told in one line by flag and variable name. Everything here walks `flat_fields`, so a setting
added to a group has its flag, its variable, its help and its row in the README's table at once."""

from __future__ import annotations

import argparse
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import SecretStr, ValidationError

from bridge.settings.base import CommandSettings, FlatField, flat_fields, group_title
from bridge.settings.commands import COMMANDS

__all__ = ["add_flags", "closest", "default_text", "flag_table", "load", "one_line_error"]

_Settings = TypeVar("_Settings", bound=CommandSettings)


def load(
    model: type[_Settings], flags: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> _Settings:
    """`model` from command-line `flags` (by flat name; None = not given), else `BRIDGE_*` variables of
    `environ` (default: os.environ), else defaults. Raises pydantic's ValidationError."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in flat_fields(model):
        if flags.get(field.name) is not None:
            values[field.name] = flags[field.name]
        elif field.env in environ:
            values[field.name] = environ[field.env]
    return model.model_validate(values)


def add_flags(parser: argparse.ArgumentParser, model: type[CommandSettings]) -> None:
    """A flag per setting of `model`, in one argument group per settings group ("upstream options"), each
    with its help: the description, the variable, the default."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in flat_fields(model):
        if field.group not in groups:
            groups[field.group] = parser.add_argument_group(f"{group_title(model, field.group)} options")
        aliases = f"; also {', '.join(field.flag_aliases)}" if field.flag_aliases else ""
        groups[field.group].add_argument(
            field.flag,
            *field.flag_aliases,
            dest=field.name,
            metavar=_metavar(field),
            help=f"{field.info.description} (env {field.env}; {default_text(field)}{aliases})",
        )


def _metavar(field: FlatField) -> str:
    """`{a,b,c}` for a choice (validation stays pydantic's, with its one-line error), else the name."""
    if get_origin(field.info.annotation) is Literal:
        return "{" + ",".join(str(choice) for choice in get_args(field.info.annotation)) + "}"
    if field.info.annotation is bool:
        return "{true,false}"
    return field.name.upper()


def default_text(field: FlatField) -> str:
    """ "required", "default: none" or "default: VALUE", as --help and the README say it."""
    if field.info.is_required():
        return "required"
    return "default: none" if field.info.default is None else f"default: {_shown(field.info.default)}"


def _shown(default: object) -> str:
    """A default as a user types it: booleans as the `true`/`false` the flags take."""
    return str(default).lower() if isinstance(default, bool) else str(default)


def flag_table(command: str) -> str:
    """The Markdown table of `command`'s flags, env vars and defaults (the README's; a test compares)."""
    model, _ = COMMANDS[command]
    rows = ["| flag | env | default | |", "|---|---|---|---|"]
    for field in flat_fields(model):
        default = "required" if field.info.is_required() else f"`{_shown(field.info.default)}`"
        if field.info.default is None:
            default = "none"
        meaning = (field.info.description or "").replace("|", "\\|")
        flags = ", ".join(f"`{flag}`" for flag in (field.flag, *field.flag_aliases))
        rows.append(f"| {flags} | `{field.env}` | {default} | {meaning} |")
    return "\n".join(rows)


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice closest to `word`, if one is close (a typo, a missing letter, a different case)."""
    by_case = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(by_case), n=1, cutoff=0.6)
    return by_case[close[0]] if close else None


def one_line_error(exc: ValidationError) -> str:
    """`--flag / BRIDGE_FLAG: problem (got 'value')` for each error, secrets never echoed."""
    problems = []
    for error in exc.errors():
        text = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check across settings, worded by us with the flags it names
            problems.append(text)
            continue
        # The field's name: the last name in the location (an item of a list is located by its index).
        name = next(str(part) for part in reversed(error["loc"]) if isinstance(part, str))
        if isinstance(error["loc"][-1], int):
            text = f"item {error['loc'][-1] + 1}: {text}"
        value = error.get("input")
        # Our own validators word their messages (safely); keys and URLs may hold secrets.
        hidden = error["type"] in ("missing", "value_error") or "key" in name or "url" in name
        shown = "" if hidden or value is None or isinstance(value, SecretStr) else f" (got {value!r})"
        if error["type"] == "missing":
            text = "is required"
        elif error["type"] == "literal_error" and shown:  # one of a few choices: the nearest one
            choices = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
            close = closest(str(value), choices)
            shown = f" (got {value!r}; did you mean {close!r}?)" if close else shown
        problems.append(f"--{name.replace('_', '-')} / BRIDGE_{name.upper()}: {text}{shown}")
    return "; ".join(problems)
