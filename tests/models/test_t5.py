"""mscg's own T5 (mscg/models/t5.py) is transformers' T5ForConditionalGeneration as the generator configures
it: the same state-dict keys and initial weights for a seed, files written from transformers' T5 load into
it, and its passes compute what transformers' forward computes (encoder, decoder, logits, padding masks)."""

import sys

import pytest
import torch
from safetensors.torch import load_model, save_model

from mscg.models.generator import Generator, GeneratorConfig
from mscg.models.t5 import T5
from tests.conftest import REPO
from tests.models.test_generator import make_model

sys.path.insert(0, str(REPO))
from benchmarks._common import quiet_transformers, transformers_t5


def config_with(**changes) -> GeneratorConfig:
    return GeneratorConfig.from_json({**make_model()[0].config.to_json(), **changes})


@pytest.mark.parametrize("changes", [{}, {"n_decoder_layers": 3, "dropout": 0.1}, {"n_layers": 1, "d_ff": 48}])
def test_a_seed_gives_transformers_keys_and_initial_weights(changes):
    from transformers import T5ForConditionalGeneration

    quiet_transformers()
    config = config_with(**changes)
    torch.manual_seed(7)
    ours = T5(**config.t5_kwargs())
    after_ours = torch.rand(4)  # the same number of draws was taken
    torch.manual_seed(7)
    theirs = T5ForConditionalGeneration(config.t5_config())
    after_theirs = torch.rand(4)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(after_ours, after_theirs)
    tied = {k for k, v in a.items() if v.data_ptr() == ours.shared.weight.data_ptr()}
    assert tied == {"shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    assert "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in a
    assert "decoder.block.0.layer.1.EncDecAttention.q.weight" in a
    assert not any("block.1.layer.0.SelfAttention.relative_attention_bias" in k for k in a)


def test_a_file_written_from_transformers_t5_loads_unchanged(tmp_path):
    from transformers import T5ForConditionalGeneration

    quiet_transformers()
    config = config_with()
    theirs = T5ForConditionalGeneration(config.t5_config())
    save_model(theirs, str(tmp_path / "model.safetensors"))  # stores the tied embedding under one name
    torch.manual_seed(1)
    ours = T5(**config.t5_kwargs())
    missing, unexpected = load_model(ours, str(tmp_path / "model.safetensors"))
    assert not missing and not unexpected
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    assert ours.lm_head.weight is ours.shared.weight


@pytest.mark.parametrize("training", [False, True])
def test_the_passes_compute_transformers_forward(training):
    """Encoder states, decoder states and logits with left padding, in eval mode and with dropout."""
    quiet_transformers()
    model = Generator(config_with(dropout=0.1 if training else 0.0)).train(training)
    hf = transformers_t5(model)
    t5 = model.t5
    x = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :2] = 0
    mask[2, :5] = 0
    dec = torch.randint(2, t5.shared.num_embeddings, (3, 4), generator=torch.Generator().manual_seed(2))

    def same(a, b):  # padded query rows are not compared: nothing reads them
        return all(torch.allclose(a[i, ~pad], b[i, ~pad], atol=1e-6, rtol=0) for i, pad in enumerate(mask == 0))

    torch.manual_seed(3)
    expected = hf.encoder(inputs_embeds=x, attention_mask=mask).last_hidden_state
    torch.manual_seed(3)
    states = t5.encode(x, mask.bool()[:, None, :].expand(3, 7, 7))
    assert same(states, expected)
    torch.manual_seed(4)
    expected_dec = hf.decoder(input_ids=dec, encoder_hidden_states=expected,
                              encoder_attention_mask=mask).last_hidden_state
    torch.manual_seed(4)
    assert torch.allclose(t5.decode(dec, expected, torch.arange(3), mask.bool()), expected_dec, atol=1e-6, rtol=0)
    rows = torch.tensor([2, 0, 2])  # sequences may read any user's states, in any order
    if not training:
        assert torch.allclose(t5.decode(dec[rows], expected, rows, mask.bool()[rows]), expected_dec[rows],
                              atol=1e-6, rtol=0)
    torch.manual_seed(5)
    logits = hf(inputs_embeds=x, attention_mask=mask, decoder_input_ids=dec).logits
    torch.manual_seed(5)
    assert torch.allclose(t5(x, mask, dec), logits, atol=1e-5, rtol=0)
    assert model.output_scale == 32 ** -0.5


def test_relative_position_bias_is_shared_from_the_first_block():
    t5 = T5(**config_with().t5_kwargs())
    for stack in (t5.encoder, t5.decoder):
        attention = [b.layer[0].SelfAttention for b in stack.block]
        assert [a.has_relative_attention_bias for a in attention] == [True] + [False] * (len(attention) - 1)
    enc = t5.encoder.block[0].layer[0].SelfAttention.compute_bias(3, 3)
    dec = t5.decoder.block[0].layer[0].SelfAttention.compute_bias(3, 3)
    assert enc.shape == dec.shape == (1, 2, 3, 3)
    assert torch.equal(dec[0, :, 0, 1], dec[0, :, 0, 0])  # the decoder's buckets: a later key is at distance 0
    assert not torch.equal(enc[0, :, 0, 1], enc[0, :, 0, 0])  # the encoder's: both directions count
    step = t5.decoder.block[0].layer[0].SelfAttention.compute_bias(1, 3, past_seen_tokens=2)
    assert torch.equal(step[0, :, 0], dec[0, :, 2])  # an incremental step sees what the full pass sees
