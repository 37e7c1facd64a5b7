"""mscg: multimodal generative recommendation (MSCGRec) as composable command-line stages.

In Python: `model = mscg.load("work/mscgrec")`, then `model.recommend(["50", "172"], k=10)` (see mscg.api).
The trained stages run as their commands do: `mscg.quantize(...)`, `mscg.collab(...)`, `mscg.train(...)`, each
option a keyword named as in the TOML file the stage records (d_model=64, epochs=10, seed=1), `config_file=` a
TOML file of options, `on_event=` a callback that gets every training event (mscg.training.loop.Event).
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(path, device: str = "auto", *, beam_size: int | None = None, codes=None, verify: bool = True):
    """The model in directory `path` (from `mscg train`, `mscg collab --model-out` or `mscg fuse`) as an
    `mscg.api.Model`, on `device` (auto, as in the CLI: the GPU when present; or cpu, cuda, cuda:N):
    `recommend(history_item_ids, k=10, exclude_history=True)` -> [(item_id, score), ...], best first, and
    `recommend_batch(histories, k=10)`. torch is imported here, not by `import mscg`."""
    from mscg.api import load as load_model

    return load_model(path, device, beam_size=beam_size, codes=codes, verify=verify)


def train(data, codes, output, **options):
    """`mscg train` in Python: train the generator on dataset folder `data` over the codes directory `codes` and
    write the model directory `output` (train.toml included); returns a `TrainResult` (best epoch, validation
    metrics, speed). `options`: any of train's options by name (GeneratorConfig, LoopConfig and TrainOptions
    fields, e.g. d_model=64, epochs=10, seed=1; the keys of train.toml), `config_file=` a TOML file of them (the
    keywords override it), `dense_content=[paths]`, `device=`, `force=`, `resume=`, `keep_checkpoint=`, and
    `on_event=` a callback for each training event. The defaults are the command's (mscg.commands.train.CONFIGS)."""
    from mscg.commands.train import train as run

    return run(data, codes, output, **options)


def collab(data, output, **options):
    """`mscg collab` in Python: train SASRec on dataset folder `data` and write its collab embeddings to `output`
    (and the model to `model_out=`); returns a `CollabResult`. `options`: any of collab's options by name
    (SASRecConfig, LoopConfig and CollabOptions fields, e.g. d_model=32, negatives=0, seed=1; the keys of
    collab.toml), `config_file=`, `init_embeddings=`, `device=`, `force=`, `resume=`, `keep_checkpoint=`, `on_event=`.
    The defaults are the command's (mscg.commands.collab.CONFIGS)."""
    from mscg.commands.collab import collab as run

    return run(data, output, **options)


def quantize(output, **options):
    """`mscg quantize` in Python: learn a quantizer and write it to `output`; returns a `QuantizeResult` (codebook
    sizes, usage, collision rate). `options`: any of quantize's options by name (QuantizeConfig fields, e.g.
    modality="text", method="rq-vae", n_levels=2, seed=1; the keys of quantize.toml), `embeddings=` (rq-kmeans,
    rq-vae) or `data=` (rq-dino), `config_file=`, `device=`, `force=`, `resume=`, `on_event=`. The defaults are the
    command's (mscg.commands.quantize.CONFIGS)."""
    from mscg.commands.quantize import quantize as run

    return run(output, **options)
