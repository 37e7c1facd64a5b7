"""The generator's config (`mscg train`'s defaults), free of torch: `mscg train --help` reads it without
importing torch. The model itself, and the notes on how mscg reads the paper, are in generator.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mscg.configs import check_fields, option
from mscg.errors import UsageError
from mscg.models.config import JsonConfig, check_attention
from mscg.models.vocabulary import BOS, PAD, Vocabulary

CONSTRAINTS = ("trie", "level", "off")
HISTORY_ENCODINGS = ("items", "tokens")
SAMPLES = ("prefix", "window")
TRAIN_TRIES = ("all", "trained")  # which items' codes the training loss's trie constraint covers


@dataclass
class GeneratorConfig(JsonConfig):
    """The generator's architecture; its defaults are `mscg train`'s. The vocabulary and the input
    modalities come from the codes artifact (`train` fills them in)."""

    vocabulary: dict[str, Any] = field(default_factory=dict)
    modalities: list[str] = option(default_factory=list, help="Input modalities, comma-separated (default: all in "
                                   "the codes).")  # in vocabulary order once `train` has chosen them
    decode_modality: str = option("collab", flag="--decode", help="Modality whose codes are generated: collab, text "
                                  "or image.")  # one the codes hold (train checks; its flag lists them)
    max_history: int = option(20, help="History items the encoder reads.", ge=1)
    d_model: int = option(128, help="Model width.", ge=1)
    n_layers: int = option(2, help="Encoder layers.", ge=1)
    n_decoder_layers: int | None = option(None, help="Decoder layers (default: --n-layers).", ge=1)
    n_heads: int = option(4, help="Attention heads.", ge=1)
    d_ff: int = option(512, help="Feed-forward width.", ge=1)
    dropout: float = option(0.2, help="Dropout rate.", ge=0, lt=1)
    dual_positions: bool = option(True, help="Add item-position and code-slot embeddings.")
    history_encoding: str = option("items", choices=HISTORY_ENCODINGS, help="items: one encoder position per history "
                                   "item (the sum of its code-token embeddings); tokens: one per code token (the "
                                   "paper's reading, ~8x the compute).")
    constraint: str = option("trie", choices=CONSTRAINTS, help="Constrained sequence learning: trie (softmax over "
                             "valid continuations), level, or off.")
    modality_mask_prob: float = option(0.1, flag="--mask-prob", help="Probability of masking a history item's "
                                       "modality in training.", ge=0, lt=1)
    samples: str = option("window", choices=SAMPLES, help="prefix: one training prefix per sample, a bidirectional "
                          "encoder (the paper's model); window: every target of a history window in one pass, a "
                          "causal encoder.")  # how it was trained, and so how its encoder attends (see NOTE)
    label_smoothing: float = option(0.0, help="Share of each target spread evenly over the tokens the constraint "
                                    "permits (0: plain cross-entropy).", ge=0, lt=1)
    # "all": the trie of every item (the paper); "trained": only items with training interactions, so an item
    # that training never meets (new, withheld) is not pushed down as a sibling of the targets
    train_trie: str = option("all", choices=TRAIN_TRIES, help="Items whose codes the trie constraint of the "
                             "training loss covers: all (the paper), or trained (those with training interactions: "
                             "an item training never meets, new or withheld, is then no negative, and stays "
                             "decodable).")
    # beyond the paper (LIGER-style): a dense head scoring every item by its content, trained with the codes'
    # loss; 0 = none, else the width of the content features it reads (`train --dense-content`)
    dense_content_dim: int = 0
    dense_loss_weight: float = option(1.0, help="Weight of the dense head's loss next to the codes' loss.", ge=0)
    dense_temperature: float = option(0.05, help="Temperature of the dense head's cosine scores.", gt=0)
    dense_negatives: int = option(4096, help="Items each step's dense softmax runs over (a uniform sample plus the "
                                  "batch's targets in larger catalogues).", ge=1)
    model_type: str = "mscg-generator"

    @property
    def decoder_layers(self) -> int:
        """n_decoder_layers, or as many as n_layers where it is unset (None)."""
        return self.n_decoder_layers if self.n_decoder_layers is not None else self.n_layers

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "n_decoder_layers": self.decoder_layers}

    def check(self) -> None:
        """The options, each refused with its flag named, before anything is read."""
        check_attention(self.d_model, self.n_heads, self.dropout)
        check_fields(self)
        if self.samples == "window" and self.history_encoding != "items":
            raise UsageError("--samples window reads one encoder position per item: use it with --history-encoding "
                             "items (or train --samples prefix)")

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> GeneratorConfig:
        if obj.get("extra") == {}:  # written (empty, never read) by mscg 0.1.0
            obj = {k: v for k, v in obj.items() if k != "extra"}
        # a model written before `samples` existed was trained per prefix (the default then)
        obj = {"samples": "prefix", **obj}
        return super().from_json(obj)

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary.from_json(self.vocabulary)

    def input_columns(self) -> list[int]:
        vocab = self.vocab
        return [c for m in vocab.modalities if m in self.modalities for c in vocab.columns_of(m)]

    def t5_kwargs(self) -> dict[str, Any]:
        """The arguments of mscg.models.t5.T5 for this architecture."""
        return {"vocab_size": self.vocab.size, "d_model": self.d_model, "d_kv": self.d_model // self.n_heads,
                "d_ff": self.d_ff, "n_layers": self.n_layers, "n_decoder_layers": self.decoder_layers,
                "n_heads": self.n_heads, "dropout": self.dropout,
                "max_distance": max(128, self.max_history * len(self.input_columns()))}

    def t5_config(self):
        """The same architecture as a transformers T5Config, for checks against transformers' T5 (tests,
        benchmarks); mscg itself never imports transformers for the generator."""
        from transformers import T5Config

        kw = self.t5_kwargs()
        return T5Config(
            vocab_size=kw["vocab_size"], d_model=kw["d_model"], d_kv=kw["d_kv"], d_ff=kw["d_ff"],
            num_layers=kw["n_layers"], num_decoder_layers=kw["n_decoder_layers"], num_heads=kw["n_heads"],
            dropout_rate=kw["dropout"], feed_forward_proj="relu", pad_token_id=PAD, decoder_start_token_id=BOS,
            eos_token_id=None, tie_word_embeddings=True, relative_attention_num_buckets=32,
            relative_attention_max_distance=kw["max_distance"],
        )
