"""Config dataclasses as the single source of a stage's options.

A field declared with `option(...)` is an option of every stage that uses its dataclass: its flag (`--d-model`
for `d_model`, or `flag=`), its help, its valid range (`ge`, `gt`, `le`, `lt`) or `choices`. From these fields
`mscg.commands.options` makes a command's flags; `check_fields` refuses a value out of range, naming its flag;
`read_toml` and `toml_text` read and write a stage's options as one flat TOML table keyed by field name, the file
every trained folder records (train.toml, collab.toml, quantize.toml). Free of torch and typer, so that
`mscg CMD --help` stays quick.

    @dataclass
    class SASRecConfig(JsonConfig):
        d_model: int = option(64, help="Embedding width.", ge=1)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mscg.errors import UsageError


@dataclass(frozen=True)
class Option:
    """What makes a config field an option (`dataclasses.field(metadata={"option": Option(...)})`)."""

    help: str
    flag: str | None = None  # the flag where it is not --field-name: "--mask-prob", "--pack/--no-pack"
    ge: float | None = None  # the valid range: >= ge, > gt, <= le, < lt
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # the flag's text -> the value (ValueError: why it is no value)
    show: Callable[[Any], str] | None = None  # the value -> the flag's text (its default in --help)
    cli: bool = True  # False: set by a config file or from Python only (no flag)


def option(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING,
           **spec: Any) -> Any:
    """A dataclass field that is an option (see `Option` for `spec`)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"option": Option(help=help, **spec)})


@dataclass(frozen=True)
class Spec:
    """One option of a config class: its field name, Option and resolved type."""

    name: str
    option: Option
    hint: Any

    @property
    def flag(self) -> str:
        """How messages name it: its flag, or its key where it has none."""
        if not self.option.cli:
            return self.name
        return (self.option.flag or "--" + self.name.replace("_", "-")).split("/")[0]

    @property
    def base(self) -> Any:
        """The type without `| None`."""
        args = [a for a in typing.get_args(self.hint) if a is not type(None)]
        return args[0] if _is_union(self.hint) and len(args) == 1 else self.hint

    @property
    def optional(self) -> bool:
        return _is_union(self.hint) and type(None) in typing.get_args(self.hint)

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.base) is list


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def specs(config: Any) -> list[Spec]:
    """The options of a config class (or instance), in field order."""
    cls = config if isinstance(config, type) else type(config)
    hints = typing.get_type_hints(cls)
    return [Spec(f.name, f.metadata["option"], hints[f.name]) for f in dataclasses.fields(cls)
            if "option" in f.metadata]


# ---- validity -------------------------------------------------------------------------------------------------

def check_fields(config: Any) -> None:
    """Every option of `config` of its type and in its range (UsageError naming the flag)."""
    for spec in specs(config):
        value = getattr(config, spec.name)
        problem = _type_problem(spec, value) or _range_problem(spec, value)
        if problem:
            raise UsageError(f"{spec.flag} {problem}")


def _type_problem(spec: Spec, value: Any) -> str | None:
    if value is None:
        return None if spec.optional else "must be set"
    base = spec.base
    if base is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if base is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if base is str:
        if not isinstance(value, str):
            return "must be a string"
        choices = spec.option.choices
        return None if choices is None or value in choices else f"{value!r} must be one of: {', '.join(choices)}"
    if spec.is_list:
        return None if isinstance(value, list) and all(isinstance(v, str) for v in value) else "must list strings"
    return None


def _range_problem(spec: Spec, value: Any) -> str | None:
    o = spec.option
    if value is None or isinstance(value, (bool, str, list)):
        return None
    if ((o.ge is not None and value < o.ge) or (o.gt is not None and value <= o.gt)
            or (o.le is not None and value > o.le) or (o.lt is not None and value >= o.lt)):
        return range_text(o, integer=spec.base is int)
    return None


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def range_text(o: Option, *, integer: bool) -> str:
    """"must be at least 1", "must be a positive number", "must be in [0, 1)": what an option's range asks."""
    low, high = (o.ge if o.ge is not None else o.gt), (o.le if o.le is not None else o.lt)
    n = _number
    if low is not None and high is not None:
        if integer and o.gt is None and o.lt is None:
            return f"must be between {n(low)} and {n(high)}"
        return f"must be in {'[' if o.ge is not None else '('}{n(low)}, {n(high)}{']' if o.le is not None else ')'}"
    if high is not None:
        return f"must be at most {n(high)}" if o.le is not None else f"must be below {n(high)}"
    if o.gt is not None:
        return "must be a positive number" if o.gt == 0 else f"must be a number > {n(o.gt)}"
    if integer:
        return "must be 0 or more" if o.ge == 0 else f"must be at least {n(o.ge)}"
    return f"must be a number >= {n(o.ge)}"


# ---- values from a file, from Python, from the command line ----------------------------------------------------

def coerce(spec: Spec, value: Any) -> Any:
    """A value from a TOML file or a Python keyword as the field holds it (ValueError: what is wrong): an
    integer where a number is asked becomes a float, a comma-separated string a list, a text form is parsed."""
    if spec.option.parse is not None and isinstance(value, str):
        return spec.option.parse(value)
    if spec.is_list and isinstance(value, str):
        return split_list(value)
    if spec.base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    problem = _type_problem(spec, value)
    if problem:
        raise ValueError(problem)
    return value


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def coerce_all(values: dict[str, Any], known: dict[str, Spec], where: str) -> dict[str, Any]:
    """`values` (by field name) checked against the options `known` (UsageError naming `where` and the key)."""
    out = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = (f"; did you mean {close[0]!r}?" if close else
                    "; the keys are the options' names with _ for - (d_model for --d-model)")
            raise UsageError(f"{where}: unknown option {key!r}{hint}")
        try:
            out[key] = coerce(known[key], value)
        except (ValueError, TypeError) as e:
            raise UsageError(f"{where}: {key} = {_shown(value)} {e}") from None
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def all_specs(configs: dict[str, Any]) -> dict[str, Spec]:
    """The options of several config groups, by field name (no name in two groups)."""
    out: dict[str, Spec] = {}
    for config in configs.values():
        for spec in specs(config):
            assert spec.name not in out, f"option {spec.name!r} is in two config groups"
            out[spec.name] = spec
    return out


def build(configs: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Each group's config with the `values` (by field name) that are its options set."""
    out = {}
    for group, config in configs.items():
        mine = {s.name: values[s.name] for s in specs(config) if s.name in values}
        out[group] = dataclasses.replace(config, **mine) if mine else config
    return out


def configure(configs: dict[str, Any], options: dict[str, Any], *, file: Path | str | None = None,
              where: str = "option", given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config of each group: its default in `configs` (or the caller's instance in `given`, where not None),
    the options of a TOML `file` over it, the keyword `options` (by field name, e.g. d_model=64) over those. What a
    stage's Python function runs with, in the order of `configs`."""
    configs = {name: (given or {}).get(name) or default for name, default in configs.items()}
    known = all_specs(configs)
    values = read_toml(file, known) if file is not None else {}
    values.update(coerce_all(options, known, where))
    return build(configs, values)


# ---- TOML ------------------------------------------------------------------------------------------------------

def read_toml(path: Path | str, known: dict[str, Spec]) -> dict[str, Any]:
    """The options in a TOML file (a flat table keyed by field name), each checked for its type."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {path} cannot be read ({e}); pass a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--config {path} is not valid TOML ({e})") from None
    return coerce_all(data, known, str(path))


def toml_text(configs: list[Any], header: str, *, leave_out: frozenset[str] | set[str] = frozenset()) -> str:
    """The options of `configs` as a flat TOML table (what `read_toml` reads back), after a `header` comment and
    under a comment naming each config class; an option left unset (None) is named in a closing comment, and
    `leave_out` names options that do not apply."""
    import tomli_w

    def value_text(value: Any) -> str:
        if isinstance(value, list):  # on one line: modalities = ["text", "collab"]
            return "[" + ", ".join(value_text(v) for v in value) + "]"
        return tomli_w.dumps({"v": value}).split(" = ", 1)[1].strip()

    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    unset = []
    for config in configs:
        lines += ["", f"# {type(config).__name__}"]
        for spec in specs(config):
            value = getattr(config, spec.name)
            if value is None and spec.option.show is not None:
                value = spec.option.show(None)
            if spec.name in leave_out:
                continue
            if value is None:
                unset.append(spec.name)
            else:
                lines.append(f"{spec.name} = {value_text(value)}")
    if unset:
        lines += ["", f"# unset (its help says what then): {', '.join(unset)}"]
    return "\n".join(lines) + "\n"
