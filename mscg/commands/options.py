"""A command's flags made from its config dataclasses (mscg.configs), and `--config FILE`.

    @user_errors
    @config_options({"config": SASRecConfig(n_items=0), "loop": SASREC_LOOP}, record="collab.toml")
    def collab_cli(data: DataOpt, output: OutputOpt, config: SASRecConfig, loop: LoopConfig, force: ForceOpt = False):

Each parameter named in the mapping is replaced by one flag per option of its config (name, help, default: the
mapping's instance, choices), and `--config FILE` comes before them; the function is called with the configs
built back from the flags. A TOML file given with --config sets options by field name; a flag given on the
command line overrides the file.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from mscg.configs import Spec, all_specs, build, read_toml, specs, split_list
from mscg.errors import UsageError

CONFIG_PARAM = "config_file"
EXPLICIT = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")  # click's ParameterSource names of a value someone gave


def config_options(configs: dict[str, Any], *, record: str, flags: dict[str, dict[str, Any]] | None = None):
    """Replace the parameters named in `configs` by the options of their configs (their defaults: the instances);
    `record` names the file the command writes (for --config's help); `flags` changes an option's flag here (its
    Option's help or choices, by field name)."""
    known = all_specs(configs)
    flags = flags or {}

    def decorate(fn):
        signature = inspect.signature(fn, eval_str=True)
        params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
        for p in signature.parameters.values():
            if p.name not in configs:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
                continue
            if not any(q.name == CONFIG_PARAM for q in params):
                params.append(_config_file_param(record))
            params += [_flag(_filled(replace(spec, option=replace(spec.option, **flags.get(spec.name, {}))),
                                     configs[p.name]), getattr(configs[p.name], spec.name))
                       for spec in specs(configs[p.name]) if spec.option.cli]
        names = [p.name for p in params]
        assert len(names) == len(set(names)), f"{fn.__name__}: an option's name is also a parameter's"

        @functools.wraps(fn)
        def command(*, ctx: typer.Context, **kwargs):
            file = kwargs.pop(CONFIG_PARAM, None)
            values = read_toml(file, known) if file is not None else {}
            for spec in known.values():
                if not spec.option.cli:
                    continue
                text = kwargs.pop(spec.name)
                source = ctx.get_parameter_source(spec.name)
                if spec.name not in values or (source is not None and source.name in EXPLICIT):
                    values[spec.name] = _from_flag(spec, text)
            return fn(**kwargs, **build(configs, values))

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _config_file_param(record: str) -> inspect.Parameter:
    option = typer.Option("--config", metavar="<file.toml>", show_default=False,
                          help=f"Options from a TOML file, keyed by option name with _ for - (as in the {record} "
                               "that a trained folder holds); flags given here override it.")
    return inspect.Parameter(CONFIG_PARAM, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Path | None, option])


def _filled(spec: Spec, config: Any) -> Spec:
    """The option with its help's {name} fields filled from the command's default config (its fields and
    properties), e.g. the auto warm-up each command's defaults give."""
    if "{" not in spec.option.help:
        return spec
    return replace(spec, option=replace(spec.option, help=spec.option.help.format_map(_Attributes(config))))


class _Attributes(dict):
    def __init__(self, obj: Any):
        super().__init__()
        self.obj = obj

    def __missing__(self, key: str) -> Any:
        return getattr(self.obj, key)


def _flag(spec: Spec, default: Any) -> inspect.Parameter:
    """The typer option of one config option, `default` its value in the command's default config."""
    o = spec.option
    annotation: Any = spec.hint
    if o.parse is not None:  # a text form: --warmup-steps <N|auto>
        annotation, default = str, o.show(default)
    elif spec.is_list:  # comma-separated
        annotation, default = str | None, (",".join(default) or None)
    elif o.choices is not None:
        annotation = Literal[o.choices] | None if spec.optional else Literal[o.choices]
    decls = o.flag.split(",") if o.flag else ()
    info = typer.Option(*decls, help=o.help, metavar=o.metavar, show_default=default is not None)
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, info])


def _from_flag(spec: Spec, value: Any) -> Any:
    """A flag's parsed value as the config holds it."""
    if spec.option.parse is not None:
        try:
            return spec.option.parse(value)
        except ValueError as e:
            raise UsageError(f"{spec.flag} {value!r} {e}") from None
    if spec.is_list:
        return split_list(value) if value is not None else []
    return value
