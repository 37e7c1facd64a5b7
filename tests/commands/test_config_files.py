"""Options from the config dataclasses (issue 33, item 4): the flags of train, collab and quantize are made from
the configs' fields and spell every flag as before; `--config FILE.toml` sets any option and a flag overrides the
file; every trained folder records its options (train.toml, collab.toml, quantize.toml), and that file reproduces
the run; `mscg.train(...)` & co. run a stage as its command does."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import pytest

from tests.helpers import (TINY_GENERATOR, TINY_SASREC, Pipeline, assert_refused, build_tiny_pipeline, invoke, ok,
                           one_thread)  # noqa: F401 (one_thread: a fixture)

# Every flag of the three commands as `--help` listed them before the flags were made from the configs.
OLD_FLAGS = {
    "train": ["--data", "-d", "--codes", "--output", "-o", "--modalities", "--decode", "--constraint",
              "--max-history", "--d-model", "--n-layers", "--n-decoder-layers", "--n-heads", "--d-ff", "--dropout",
              "--mask-prob", "--dual-positions", "--no-dual-positions", "--history-encoding", "--label-smoothing",
              "--train-trie", "--dense-content", "--dense-loss-weight", "--dense-negatives", "--dense-temperature",
              "--samples", "--window-stride", "--epochs", "--batch-size", "--lr", "--weight-decay", "--patience",
              "--validate-every", "--log-every", "--warmup-steps", "--valid-users", "--beam-size", "--device",
              "--precision", "--seed", "--force", "--resume", "--keep-checkpoint", "--help", "-h"],
    "collab": ["--data", "-d", "--output", "-o", "--model-out", "--max-history", "--d-model", "--n-layers",
               "--n-heads", "--dropout", "--negatives", "--negative-sampler", "--pack", "--no-pack", "--epochs",
               "--batch-size", "--lr", "--weight-decay", "--patience", "--validate-every", "--log-every",
               "--warmup-steps", "--valid-users", "--device", "--precision", "--init-embeddings", "--seed", "--force",
               "--resume", "--keep-checkpoint", "--help", "-h"],
    "quantize": ["--output", "-o", "--modality", "--embeddings", "--data", "-d", "--method", "--n-levels",
                 "--codebook-size", "--normalize", "--no-normalize", "--epochs", "--batch-size", "--lr", "--log-every",
                 "--backbone", "--image-size", "--skip-bad-images", "--refit-codebooks", "--no-refit-codebooks",
                 "--balanced-last-level", "--device", "--seed", "--force", "--resume", "--help", "-h"],
}
ADDED = {"train": ["--pack", "--no-pack"]}  # flags added since (generator window packing, issue 34)
REQUIRED = {"train": ["-d", "data", "--codes", "codes", "-o", "out"], "collab": ["-d", "data", "-o", "out"],
            "quantize": ["-o", "out"]}
SAMPLE = {"int": "12", "float": "0.5", "str": "auto"}  # a value each type of flag parses


def command(name: str):
    from mscg.cli import _load

    return _load(name)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return build_tiny_pipeline(tmp_path_factory.mktemp("config"), generator=False, sasrec=False)


# ---- the flags ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OLD_FLAGS))
def test_the_flags_are_the_old_ones_and_each_still_parses(name):
    cmd = command(name)
    flags = {opt: p for p in cmd.params for opt in [*p.opts, *p.secondary_opts]}
    old = [flag for flag in OLD_FLAGS[name] if flag not in ("--help", "-h")]  # the group's, not the command's
    assert sorted(flags) == sorted([*old, "--config", *ADDED.get(name, [])])
    for flag in old:
        p = flags[flag]
        desc = p.type_descriptor
        value = ([] if p.is_flag else [desc.choices[0]] if desc.is_choice else
                 [SAMPLE.get(getattr(desc.annotation, "__name__", ""), "x")])
        ctx = cmd.make_context(name, [*REQUIRED[name], flag, *value])  # click parses and converts it
        assert ctx.get_parameter_source(p.name).name == "COMMANDLINE", flag


@pytest.mark.parametrize("name", sorted(OLD_FLAGS))
def test_each_config_option_is_a_flag_with_the_configs_default_and_help(name):
    import importlib

    from mscg.configs import all_specs

    configs = importlib.import_module(f"mscg.commands.{name}").CONFIGS
    params = {p.name: p for p in command(name).params}
    for spec in all_specs(configs).values():
        if not spec.option.cli:
            assert spec.name not in params  # set by a file (or from Python) only
            continue
        default = next(getattr(c, spec.name) for c in configs.values() if hasattr(c, spec.name))
        shown = spec.option.show(default) if spec.option.show else ",".join(default) or None \
            if isinstance(default, list) else default
        if spec.name == "n_decoder_layers":
            shown = None  # unset: as many as --n-layers
        assert params[spec.name].default == shown, spec.name
        assert params[spec.name].help.split()[0] in spec.option.help or spec.name == "batch_size", spec.name


# ---- --config FILE --------------------------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_file_sets_options_and_a_flag_overrides_it(pipe, tmp_path):
    conf = write(tmp_path / "mine.toml", "d_model = 8\nd_ff = 16\nepochs = 1\ndropout = 0.05\nwarmup_steps = 'auto'"
                                         "\nlabel_smoothing = 0\n")
    out = tmp_path / "gen"
    ok("train", "-d", pipe.data, "--codes", pipe.codes, "-o", out, "--config", conf, *TINY_GENERATOR, "--d-ff", "24")
    config = json.loads((out / "config.json").read_text())
    assert (config["d_model"], config["d_ff"], config["dropout"]) == (16, 24, 0.05)  # TINY_GENERATOR's --d-model 16
    recorded = tomllib.loads((out / "train.toml").read_text())
    assert recorded["warmup_steps"] == "auto" and recorded["label_smoothing"] == 0.0 and recorded["d_ff"] == 24
    out2 = tmp_path / "gen2"
    ok("train", "-d", pipe.data, "--codes", pipe.codes, "-o", out2, "--config", conf, "--n-heads", "2",
       "--max-history", "5", "--valid-users", "10", "--beam-size", "10", "--device", "cpu")
    assert json.loads((out2 / "config.json").read_text())["d_model"] == 8  # no flag: the file's value


@pytest.mark.parametrize("text, needles", [
    ("d_modle = 8\n", ["d_modle", "unknown option", "did you mean 'd_model'"]),
    ("data = 'elsewhere'\n", ["unknown option 'data'"]),
    ("epochs = 'five'\n", ["epochs = 'five' must be an integer"]),
    ("dropout = true\n", ["dropout = True must be a number"]),
    ("dual_positions = 1\n", ["dual_positions = 1 must be true or false"]),
    ("warmup_steps = 'soon'\n", ["warmup_steps = 'soon' must be a number of steps (0: none) or auto"]),
    ("d_model = [\n", ["is not valid TOML"]),
    ("[model]\nd_model = 8\n", ["unknown option 'model'"]),
])
def test_a_bad_file_is_one_error_line_naming_the_file_and_the_key(pipe, tmp_path, text, needles):
    conf = write(tmp_path / "bad.toml", text)
    result = invoke("train", "-d", pipe.data, "--codes", pipe.codes, "-o", tmp_path / "gen", "--config", conf)
    assert_refused(result, 2, str(conf), *needles, output=tmp_path / "gen")


def test_a_value_out_of_range_in_a_file_names_its_flag(pipe, tmp_path):
    conf = write(tmp_path / "c.toml", "epochs = 0\n")
    result = invoke("collab", "-d", pipe.data, "-o", tmp_path / "e", "--config", conf)
    assert_refused(result, 2, "--epochs must be at least 1", output=tmp_path / "e")
    result = invoke("quantize", "--embeddings", pipe.emb_text, "-o", tmp_path / "q", "--config",
                    write(tmp_path / "q.toml", "modality = 'text'\nepochs = 3\n"))
    assert_refused(result, 2, "--epochs does not apply to --method rq-kmeans", output=tmp_path / "q")


def test_a_missing_file_is_refused(pipe, tmp_path):
    result = invoke("quantize", "--embeddings", pipe.emb_text, "-o", tmp_path / "q", "--config", tmp_path / "no.toml")
    assert_refused(result, 2, "no.toml: no such file", output=tmp_path / "q")


# ---- the recorded options reproduce the run ---------------------------------------------------------------------

def test_train_toml_reproduces_the_run_and_mscg_train_matches_the_cli(pipe, tmp_path):
    import mscg

    first = tmp_path / "first"
    ok("train", "-d", pipe.data, "--codes", pipe.codes, "-o", first, *TINY_GENERATOR, "--seed", "3", "--dropout", "0.1",
       "--samples", "prefix", "--modalities", "collab")
    again = tmp_path / "again"
    ok("train", "--config", first / "train.toml", "-d", pipe.data, "--codes", pipe.codes, "-o", again, "--seed", "3")
    assert digest(again / "model.safetensors") == digest(first / "model.safetensors")
    assert (again / "train.toml").read_text() == (first / "train.toml").read_text()
    recorded = tomllib.loads((first / "train.toml").read_text())
    assert recorded["modalities"] == ["collab"] and "window_stride" not in recorded  # prefix samples: no windows
    other = tmp_path / "other"
    ok("train", "--config", first / "train.toml", "-d", pipe.data, "--codes", pipe.codes, "-o", other, "--seed", "4")
    assert digest(other / "model.safetensors") != digest(first / "model.safetensors")
    assert tomllib.loads((other / "train.toml").read_text())["seed"] == 4

    events = []
    result = mscg.train(pipe.data, pipe.codes, tmp_path / "api", d_model=16, n_heads=2, n_layers=1, d_ff=32, epochs=1,
                        batch_size=64, max_history=5, valid_users=10, beam_size=10, device="cpu", seed=3, dropout=0.1,
                        samples="prefix", modalities="collab", on_event=events.append)
    assert digest(tmp_path / "api" / "model.safetensors") == digest(first / "model.safetensors")
    assert result.best_epoch == 1 and result.valid
    assert {"start", "step", "epoch"} <= {e.kind for e in events}
    from_file = mscg.train(pipe.data, pipe.codes, tmp_path / "api_file", config_file=first / "train.toml", seed=3)
    assert digest(tmp_path / "api_file" / "model.safetensors") == digest(first / "model.safetensors")
    assert from_file.valid == result.valid


def test_collab_toml_is_in_both_folders_and_reproduces_the_run(pipe, tmp_path):
    import mscg

    ok("collab", "-d", pipe.data, "-o", tmp_path / "emb", "--model-out", tmp_path / "model", *TINY_SASREC,
       "--seed", "2", "--negatives", "16")
    record = (tmp_path / "emb" / "collab.toml").read_text()
    assert (tmp_path / "model" / "collab.toml").read_text() == record
    assert tomllib.loads(record)["negatives"] == 16 and tomllib.loads(record)["pack"] is True  # resolved
    ok("collab", "--config", tmp_path / "emb" / "collab.toml", "-d", pipe.data, "-o", tmp_path / "again",
       "--device", "cpu")
    assert digest(tmp_path / "again" / "embeddings.safetensors") == digest(tmp_path / "emb" / "embeddings.safetensors")
    mscg.collab(pipe.data, tmp_path / "api", config_file=tmp_path / "emb" / "collab.toml", device="cpu")
    assert digest(tmp_path / "api" / "embeddings.safetensors") == digest(tmp_path / "emb" / "embeddings.safetensors")


def test_quantize_toml_reproduces_the_run(pipe, tmp_path):
    import mscg

    ok("quantize", "--method", "rq-vae", "--modality", "text", "--embeddings", pipe.emb_text, "-o", tmp_path / "q",
       "--n-levels", "2", "--codebook-size", "4", "--epochs", "2", "--seed", "5", "--device", "cpu")
    recorded = tomllib.loads((tmp_path / "q" / "quantize.toml").read_text())
    assert recorded["method"] == "rq-vae" and recorded["epochs"] == 2 and "backbone" not in recorded
    ok("quantize", "--config", tmp_path / "q" / "quantize.toml", "--embeddings", pipe.emb_text, "-o",
       tmp_path / "again", "--device", "cpu")
    assert digest(tmp_path / "again" / "model.safetensors") == digest(tmp_path / "q" / "model.safetensors")
    result = mscg.quantize(tmp_path / "api", embeddings=pipe.emb_text, method="rq-vae", modality="text", n_levels=2,
                           codebook_size="4", epochs=2, seed=5, device="cpu")
    assert digest(tmp_path / "api" / "model.safetensors") == digest(tmp_path / "q" / "model.safetensors")
    assert result.codebook_sizes == [4, 4]


def test_keywords_are_checked_as_a_file_is(pipe, tmp_path):
    import mscg
    from mscg.errors import UsageError

    with pytest.raises(UsageError, match="unknown option 'dmodel'; did you mean 'd_model'"):
        mscg.collab(pipe.data, tmp_path / "e", dmodel=8)
    with pytest.raises(UsageError, match="epochs = '2' must be an integer"):
        mscg.quantize(tmp_path / "q", embeddings=pipe.emb_text, modality="text", method="rq-vae", epochs="2")
    with pytest.raises(UsageError, match="--n-levels must be at least 1"):
        mscg.quantize(tmp_path / "q", embeddings=pipe.emb_text, modality="text", n_levels=0)
    assert not (tmp_path / "e").exists() and not (tmp_path / "q").exists()


# ---- the mechanism itself --------------------------------------------------------------------------------------

def test_ranges_read_as_the_old_messages():
    from mscg.configs import Option, range_text

    assert range_text(Option("", ge=1), integer=True) == "must be at least 1"
    assert range_text(Option("", ge=0), integer=True) == "must be 0 or more"
    assert range_text(Option("", gt=0), integer=False) == "must be a positive number"
    assert range_text(Option("", ge=0), integer=False) == "must be a number >= 0"
    assert range_text(Option("", ge=0, lt=1), integer=False) == "must be in [0, 1)"
    assert range_text(Option("", ge=0, le=2**32 - 1), integer=True) == "must be between 0 and 4294967295"


def test_the_recorded_file_reads_back_to_the_same_configs():
    from dataclasses import replace

    from mscg.commands.train import CONFIGS
    from mscg.configs import all_specs, build, read_toml, toml_text

    changed = {"config": replace(CONFIGS["config"], modalities=["text"], d_model=96, n_decoder_layers=3),
               "loop": replace(CONFIGS["loop"], warmup_steps=None, lr=3e-4, grad_clip=0.5),
               "options": replace(CONFIGS["options"], window_stride=7)}
    text = toml_text(list(changed.values()), "a header")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        values = read_toml(write(Path(tmp) / "t.toml", text), all_specs(CONFIGS))
    assert build(CONFIGS, values) == changed
