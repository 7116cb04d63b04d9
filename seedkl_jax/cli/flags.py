"""absl flags generated from a config dataclass tree (seedkl_jax/config.py), and the config built
back from the parsed flags.

Why generated: a flag's name, type, default, choices and help are then written once, on the config
field (`config.setting`), and a new setting cannot be forgotten on the command line, in study.json or
in the multi-host check. The flag's kind follows the field: `choices` -> DEFINE_enum, bool ->
DEFINE_boolean, int -> DEFINE_integer, tuple -> DEFINE_list (a comma list), else DEFINE_string.
Fields with `cli=False` (mesh, dtype, ...) get no flag.
"""
from __future__ import annotations

import enum
from typing import Any

from absl import flags

from seedkl_jax import config


def _kind(field) -> str:
    """Which DEFINE_* a field gets, from its metadata and its (string) annotation."""
    if field.metadata.get("choices"):
        return "enum"
    annotation = str(field.type).replace(" ", "")
    if annotation.startswith("tuple"):
        return "list"
    kinds = [t for t in annotation.split("|") if t != "None"]  # `int | str | None` (a seed) stays a string
    if kinds == ["bool"]:
        return "boolean"
    if kinds == ["int"]:
        return "integer"
    return "string"


def _default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def cli_fields(cls: type = config.StudyConfig) -> dict[str, Any]:
    """Dotted path -> field, for every field of the tree that is a flag (cli=True)."""
    return {path: f for path, f in config.fields(cls).items() if f.metadata.get("cli", True)}


def define(cls: type = config.StudyConfig, *, module_name: str, extra_help: dict[str, str] | None = None,
           flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, str]:
    """Define one absl flag per cli field of `cls`'s tree, listed under `module_name` in --help;
    extra_help[flag] is appended to that flag's help. Returns dotted path -> flag name."""
    names = config.flag_names(cls)
    extra_help = extra_help or {}
    for path, f in cli_fields(cls).items():
        name = names[path]
        help_ = f.metadata["help"] + (extra_help.get(name) or "")
        kw = dict(flag_values=flag_values, module_name=module_name)
        default = _default(f.default)
        kind = _kind(f)
        if kind == "enum":
            flags.DEFINE_enum(name, default, list(f.metadata["choices"]), help_, **kw)
        else:
            getattr(flags, f"DEFINE_{kind}")(name, default, help_, **kw)
    return {path: names[path] for path in cli_fields(cls)}


def values(cls: type = config.StudyConfig, flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
    """The parsed value of every flag of `cls`'s tree, by flag name."""
    names = config.flag_names(cls)
    return {names[path]: flag_values[names[path]].value for path in cli_fields(cls)}


def build(cls: type = config.StudyConfig, flag_values: flags.FlagValues = flags.FLAGS, **extra: Any):
    """`cls` (a config with `from_flat`) from the parsed flags of its tree; `extra`: its non-flag
    fields, by name."""
    return cls.from_flat(**values(cls, flag_values), **extra)
