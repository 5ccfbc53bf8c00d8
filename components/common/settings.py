"""Typed settings records: one dataclass per step, from which everything else is derived.

A step's knobs are fields of one dataclass (components/<step>/settings.py), each with a default and a one-line
help (`knob(...)`); a field whose default is None means "keep the recipe's value". From the record come:
- the pipeline's parameters and their Kubeflow UI descriptions (pipelines/settings.py),
- params.yaml's keys (checked against the records: an unknown key is an error naming it),
- the CLI flags (`add_arguments`),
- the text a kfp component receives (`encode` / `decode`): one `name=value` per line; a line that does not
  start with `name=` continues the previous value (a gate policy's YAML text).

Why text and not one typed kfp input per knob: a lightweight kfp component's signature is its source code, so
every knob would be written again there and in its call. A pipeline can hand a component one string built
from its parameters (an f-string of pipeline channels, which Kubeflow resolves at run time, so the task's
cache key still changes with every setting); the component passes the record's fields to its core function by
name (`step_kwargs`), so a new knob takes two edits: the record, and the code that uses it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any


class SettingsError(ValueError):
    """A setting that cannot be parsed or is not a field of its record (deterministic: never retried)."""


def knob(default: Any, help: str, *, choices: tuple[str, ...] | None = None) -> Any:  # noqa: A002
    """A record field: its default and the one-line help the UI, params.yaml docs and the CLI show."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Knob:
    name: str
    type: type  # the base type: str, int, float, bool, dict or list
    optional: bool  # None allowed (= the recipe's value)
    default: Any
    help: str
    choices: tuple[str, ...] | None


def knobs(cls: type) -> list[Knob]:
    """The record's fields with their resolved types, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        base, optional = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append(
            Knob(f.name, base, optional, default, f.metadata.get("help", ""), f.metadata.get("choices"))
        )
    return out


def _base_type(hint: Any) -> tuple[type, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported settings type {hint}")
        return _base_type(args[0])[0], True
    if origin in (list, dict):
        return origin, False
    if hint in (str, int, float, bool, list, dict):
        return hint, False
    raise TypeError(f"unsupported settings type {hint}")


def coerce(k: Knob, value: Any, where: str = "") -> Any:
    """`value` (a YAML/CLI/kfp value, often a string) as the knob's type. '' or None -> None for an optional
    knob; for a `str` knob '' stays '' (an empty list of languages is a real value)."""
    label = f"{where}{k.name}"
    if value is None or (isinstance(value, str) and value.strip() == "" and k.optional):
        if k.optional:
            return None
        if k.type is str:
            return ""
        raise SettingsError(f"{label}: a value is required ({k.help})")
    try:
        if k.type is bool:
            if isinstance(value, bool):
                out: Any = value
            elif str(value).strip().lower() in ("true", "1", "yes"):
                out = True
            elif str(value).strip().lower() in ("false", "0", "no"):
                out = False
            else:
                raise ValueError(value)
        elif k.type is int:
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError(value)
            out = int(as_float)
        elif k.type is float:
            out = float(value)
        elif k.type in (list, dict):
            out = json.loads(value) if isinstance(value, str) else value
            if not isinstance(out, k.type):
                raise ValueError(value)
        else:
            out = value if isinstance(value, str) else str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{label}: expected {k.type.__name__}, got {value!r}") from None
    if k.choices and out is not None and out not in k.choices:
        raise SettingsError(f"{label}: must be one of {list(k.choices)}, got {out!r}")
    return out


def from_mapping(cls: type, values: Mapping[str, Any], where: str = "") -> Any:
    """A record from plain values; unknown names are an error that names them and the known ones."""
    by_name = {k.name: k for k in knobs(cls)}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise SettingsError(f"{where}unknown setting(s) {unknown}; known: {sorted(by_name)}")
    return cls(**{name: coerce(by_name[name], v, where) for name, v in values.items()})


def to_mapping(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


_SETTING_LINE = re.compile(r"[a-z_][a-z0-9_]*=")


def encode(values: Mapping[str, Any]) -> str:
    """`name=value` lines (what a kfp component receives); None is written as an empty value. A value may span
    lines (a gate policy's YAML text) as long as no later line of it looks like `name=` (`decode`'s rule)."""
    lines = []
    for name, value in values.items():
        text = "" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        if any(_SETTING_LINE.match(line) for line in text.split("\n")[1:]):
            raise SettingsError(f"{name}: a line of this value reads as a setting (name=...): {text!r}")
        lines.append(f"{name}={text}")
    return "\n".join(lines)


def decode(cls: type, text: str, where: str = "") -> Any:
    """The record from `encode`'s text (or from a pipeline's f-string of its parameters): a line that starts
    with a lower-case `name=` starts a setting, any other line continues the previous value (a multi-line gate
    policy). Names are checked against the record (`from_mapping`: an unknown one is named)."""
    values: dict[str, str] = {}
    name = ""
    for line in text.split("\n"):
        if _SETTING_LINE.match(line):
            name, _, value = line.partition("=")
            values[name] = value
        elif name:
            values[name] += "\n" + line
        elif line.strip():
            raise SettingsError(f"{where}settings line {line!r}: expected name=value")
    return from_mapping(cls, {k: v.rstrip("\n") for k, v in values.items()}, where)


def step_kwargs(cls: type, settings: Any, section: str) -> dict[str, Any]:
    """A step's record, given as itself or as its `name=value` text ('' = the defaults), as the keyword
    arguments of the step's core function: each field by its name (what a kfp component passes on, so a new
    field reaches the core without an edit to the component)."""
    record = settings if isinstance(settings, cls) else decode(cls, settings or "", f"{section}.")
    return to_mapping(record)


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: Iterable[str] = (),
    aliases: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """One `--name-with-dashes` flag per knob (strings, parsed by `from_mapping`); absent = the default.
    `aliases`: a knob's older flag names, still accepted."""
    for k in knobs(cls):
        if k.name in skip:
            continue
        default = "the recipe's" if k.default is None and k.optional else repr(k.default)
        parser.add_argument(
            "--" + k.name.replace("_", "-"),
            *(aliases or {}).get(k.name, ()),
            dest=k.name,
            default=argparse.SUPPRESS,
            help=f"{k.help} (default: {default})",
        )


def from_arguments(cls: type, args: argparse.Namespace) -> Any:
    given = {k.name: getattr(args, k.name) for k in knobs(cls) if hasattr(args, k.name)}
    return from_mapping(cls, given, "--")


def parse_att_context_size(value) -> list[int] | None:
    """The one rule for a streaming lookahead [left, right] (every step uses it): '' / None / [] -> None (the
    model's default); '[56,1]', '56,1', '(56, 1)', [56, 1] or (56, 1) -> [56, 1]. Two integers, left >= -1
    (-1: unlimited), right >= 0; anything else is a SettingsError (a ValueError) naming the value."""
    if value is None or (isinstance(value, str | list | tuple) and not str(value).strip("[]() ")):
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.strip().strip("[]()").split(",")]
        if not all(re.fullmatch(r"-?\d+", p) for p in parts):
            raise SettingsError(f"att_context_size: expected two integers like '[56,1]', got {value!r}")
        value = [int(p) for p in parts]
    if not (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise SettingsError(f"att_context_size: expected two integers like '[56,1]', got {value!r}")
    if value[0] < -1 or value[1] < 0:
        raise SettingsError(
            f"att_context_size: expected [left, right] with left >= -1, right >= 0, got {value!r}"
        )
    return [int(value[0]), int(value[1])]
