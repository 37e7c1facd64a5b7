"""The `mscg` command: one subcommand per pipeline stage, registered in pipeline order.

    items.jsonl ─embed→ embeddings ─quantize→ quantizer ─assign-codes→ codes ─train→ model
    interactions.jsonl ─collab→ collab embeddings (+ SASRec)          ─recommend / evaluate→
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mscg import __version__
from mscg.artifacts.meta import set_command_line
from mscg.commands import _common

app = typer.Typer(
    name="mscg",
    help="Multimodal generative recommendation (MSCGRec) as composable stages. "
         "Every stage reads and writes files; run `mscg STAGE --help` for its inputs, outputs and examples.",
    no_args_is_help=True,
    add_completion=False,
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
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    if debug:
        _common.DEBUG["on"] = True


def _register() -> None:
    from mscg.commands import assign_codes, collab, compare, embed, evaluate, prepare, quantize, recommend, train

    data, codes, model = "1. Data", "2. Codes", "3. Generator"
    app.command("prepare", short_help="Convert RecBole files into items.jsonl + interactions.jsonl.", rich_help_panel=data)(prepare.prepare_cli)
    app.command("embed", short_help="Embed item texts or images with a pretrained encoder.", rich_help_panel=data)(embed.embed_cli)
    app.command("import-embeddings", short_help="Import precomputed item features as an embeddings artifact.", rich_help_panel=data)(embed.import_embeddings_cli)
    app.command("collab", short_help="Train SASRec; its item table becomes the collab modality.", rich_help_panel=data)(collab.collab_cli)
    app.command("quantize", short_help="Learn a residual quantizer for one modality.", rich_help_panel=codes)(quantize.quantize_cli)
    app.command("assign-codes", short_help="Give every item its multimodal code (+ collision levels).", rich_help_panel=codes)(assign_codes.assign_codes_cli)
    app.command("train", short_help="Train the generative recommender on multimodal codes.", rich_help_panel=model)(train.train_cli)
    app.command("evaluate", short_help="Full-ranking Recall@K / NDCG@K on the test or valid split.", rich_help_panel=model)(evaluate.evaluate_cli)
    app.command("recommend", short_help="Top-K items for user histories (JSONL in, JSONL out).", rich_help_panel=model)(recommend.recommend_cli)
    app.command("compare", short_help="Put several evaluations side by side.", rich_help_panel=model)(compare.compare_cli)


_register()


def main() -> None:
    set_command_line(["mscg", *sys.argv[1:]])
    app()
