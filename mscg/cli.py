"""The `mscg` command: one subcommand per pipeline stage, registered in pipeline order.

    items.jsonl ─embed→ embeddings ─quantize→ quantizer ─assign-codes→ codes ─train→ model
    interactions.jsonl ─collab→ collab embeddings (+ SASRec)          ─recommend / evaluate→
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command_from_info
from typer.models import CommandInfo

from mscg import __version__
from mscg.artifacts.meta import set_command_line

# click's exception classes as this typer uses them (typer >= 0.2x carries its own copy of click)
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
NoArgsIsHelpError = getattr(sys.modules[ClickException.__module__], "NoArgsIsHelpError",
                            type("Never", (Exception,), {}))


def _one_line(e: Exception):
    """A usage error of click's own (unknown option, missing or invalid value) as one `error:` line, as mscg's
    own errors are, with the exit code click gives it (2)."""
    from mscg.console import error

    ctx = getattr(e, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    message = " ".join(e.format_message().split()).replace(": Value error, ", ": ")  # typer's coercion prefix
    error(message + hint)
    raise typer.Exit(e.exit_code)


def _no_metavar(ctx) -> None:
    return None


def _no_range() -> None:
    return None


def _plain_flags(command) -> None:
    """Boolean flags take no value: their help shows no `<bool>` metavar (so nobody writes `--force true`); a
    number with a range shows its type only (click still refuses a value outside it, naming the range)."""
    if getattr(command, "_mscg_plain_flags", False):
        return
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.display_type_rich = _no_metavar
        desc = getattr(param, "type_descriptor", None)
        if desc is not None and desc.is_ranged and param.metavar is None:  # `<int>`, not `<int range> [0<=x<=...]`
            param.metavar = f"<{desc.ranged_type_name}>"
            param._get_number_range_help_str = _no_range
    help_option = command.get_help_option

    def get_help_option(ctx):
        option = help_option(ctx)
        if option is not None:
            option.display_type_rich = _no_metavar
        return option

    command.get_help_option = get_help_option
    command._mscg_plain_flags = True


class OneLineErrors(TyperGroup):
    """The mscg group: click's usage errors print one line instead of typer's boxed panel; flags show no
    metavar."""

    def list_commands(self, ctx):
        return [*STAGES, *(name for name in super().list_commands(ctx) if name not in STAGES)]

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in STAGES:  # listed in `mscg --help`: its module stays unimported
            _, short_help, panel = STAGES[cmd_name]
            return TyperCommand(cmd_name, short_help=short_help, help=short_help, rich_help_panel=panel)
        if command is not None:
            _plain_flags(command)
        return command

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        if name in STAGES and name not in self.commands:  # the command to run (or to show the help of)
            self.add_command(_load(name), name)
            command = super().get_command(ctx, name)
            _plain_flags(command)
        return name, command, rest

    def make_context(self, info_name, args, parent=None, **extra):
        _plain_flags(self)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except NoArgsIsHelpError:  # `mscg` alone prints the help
            raise
        except ClickException as e:
            _one_line(e)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except ClickException as e:
            _one_line(e)


app = typer.Typer(
    name="mscg",
    cls=OneLineErrors,
    help="Multimodal generative recommendation (MSCGRec) as composable stages. "
         "Every stage reads and writes files; run `mscg STAGE --help` for its inputs, outputs and examples.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"mscg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show a traceback when a command fails.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Only warnings and errors on stderr: no progress, "
                                        "no status lines (also MSCG_QUIET=1).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    from mscg import console

    console.QUIET["on"] = quiet  # set on every run: one process may run several commands (tests)
    if debug:
        from mscg.commands import _common

        _common.DEBUG["on"] = True


def _register() -> dict[str, tuple[str, str, str]]:
    """name -> ("module:function" in mscg.commands, short help, panel), in pipeline order. A command's module
    is imported only to run it or show its own help: `mscg --help` imports none (and so no torch)."""
    data, codes, model = "1. Data", "2. Codes", "3. Generator"
    stages = (  # (name, short help, panel, function), in pipeline order
        ("prepare", "Convert RecBole files (or reshape a dataset) into items.jsonl + interactions.jsonl.", data,
         "prepare:prepare_cli"),
        ("embed", "Embed item texts or images with a pretrained encoder.", data, "embed:embed_cli"),
        ("import-embeddings", "Import precomputed item features as an embeddings artifact.", data,
         "embed:import_embeddings_cli"),
        ("collab", "Train SASRec; its item table becomes the collab modality.", data, "collab:collab_cli"),
        ("predict-collab", "Collab embeddings for items without interactions, predicted from content.", data,
         "predict_collab:predict_collab_cli"),
        ("quantize", "Learn a residual quantizer for one modality.", codes, "quantize:quantize_cli"),
        ("assign-codes", "Give every item its multimodal code (+ collision levels).", codes,
         "assign_codes:assign_codes_cli"),
        ("train", "Train the generative recommender on multimodal codes.", model, "train:train_cli"),
        ("fuse", "Re-rank a generator's beam with SASRec's scores (weight chosen on validation).", model,
         "fuse:fuse_cli"),
        ("evaluate", "Full-ranking Recall@K / NDCG@K on the test or valid split.", model, "evaluate:evaluate_cli"),
        ("recommend", "Top-K items for user histories (JSONL in, JSONL out).", model, "recommend:recommend_cli"),
        ("serve", "Answer recommendation requests over HTTP (JSON), the model loaded once.", model,
         "serve:serve_cli"),
        ("compare", "Put several evaluations side by side.", model, "compare:compare_cli"),
        ("plot", "Draw training curves, codebook usage or metrics as a PNG.", model, "plot:plot_cli"),
    )
    return {name: (function, short_help, panel) for name, short_help, panel, function in stages}


def _load(name: str):
    """The click command of stage `name`, its module imported now."""
    function, short_help, panel = STAGES[name]
    module, attr = function.split(":")
    callback = getattr(importlib.import_module(f"mscg.commands.{module}"), attr)
    info = CommandInfo(name=name, callback=callback, short_help=short_help, rich_help_panel=panel)
    return get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                 rich_markup_mode=app.rich_markup_mode)


STAGES = _register()


def main() -> None:
    set_command_line(["mscg", *sys.argv[1:]])
    app()
