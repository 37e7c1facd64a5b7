"""The generator's config (`mscg train`'s defaults), free of torch: `mscg train --help` reads it without
importing torch. The model itself, and the notes on how mscg reads the paper, are in generator.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mscg.models.config import JsonConfig
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
    modalities: list[str] = field(default_factory=list)  # input modalities, in vocabulary order
    decode_modality: str = "collab"
    max_history: int = 20
    d_model: int = 128
    n_layers: int = 2  # encoder layers
    n_decoder_layers: int | None = None  # None: as many as n_layers
    n_heads: int = 4
    d_ff: int = 512
    dropout: float = 0.2
    dual_positions: bool = True
    history_encoding: str = "items"  # "items": one encoder position per history item; "tokens": per code token
    constraint: str = "trie"  # one of CONSTRAINTS
    modality_mask_prob: float = 0.1
    samples: str = "window"  # one of SAMPLES: how it was trained, and so how its encoder attends (see NOTE)
    label_smoothing: float = 0.0  # training loss: this share of each target spread over the permitted tokens
    # "all": the trie of every item (the paper); "trained": only items with training interactions, so an item
    # that training never meets (new, withheld) is not pushed down as a sibling of the targets
    train_trie: str = "all"
    # beyond the paper (LIGER-style): a dense head scoring every item by its content, trained with the codes'
    # loss; 0 = none, else the width of the content features it reads (`train --dense-content`)
    dense_content_dim: int = 0
    dense_loss_weight: float = 1.0  # weight of the dense head's loss next to the codes' cross-entropy
    dense_temperature: float = 0.05  # softmax temperature of the head's cosine scores
    dense_negatives: int = 4096  # items each step's dense softmax runs over (all of them in smaller catalogues)
    model_type: str = "mscg-generator"

    def __post_init__(self) -> None:
        if self.n_decoder_layers is None:
            self.n_decoder_layers = self.n_layers

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
                "d_ff": self.d_ff, "n_layers": self.n_layers, "n_decoder_layers": self.n_decoder_layers,
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
