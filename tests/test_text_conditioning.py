"""Text conditioning without training: the three context conditionings (cross-attention, in-context
prefix, pooled adaLN) over a given sequence or over ids embedded by the model's own encoder, the null
condition, negative conditions in guidance, the vocabularies and the `TextConditioner` with a frozen
encoder named by import path."""

from __future__ import annotations

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ml_collections import config_dict

from mgt.condition import Condition
from mgt.transformer import MaskedTransformer, TransformerConfig

MASK = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], bool)


class FakeEncoder:
    """A frozen encoder for the tests: each byte's one-hot-ish vector, mean pooled (registered by path)."""

    width = 8

    def __init__(self, max_length: int = 6, path: str | None = None):
        self.max_length = max_length

    def encode(self, texts):
        from mgt.text.base import TextEncoding

        emb = np.zeros((len(texts), self.max_length, self.width), np.float32)
        mask = np.zeros((len(texts), self.max_length), bool)
        for i, t in enumerate(texts):
            for j, ch in enumerate(t.encode()[: self.max_length]):
                emb[i, j, ch % self.width] = 1.0
                mask[i, j] = True
        return TextEncoding(emb, mask, emb.sum(1) / np.maximum(mask.sum(1, keepdims=True), 1))


def _model(conditioning, vocab=0):
    cfg = TransformerConfig(grid=(3, 3), codebook_size=8, conditioning=conditioning, null_condition=True,
                            context_dim=16, context_len=6, context_vocab_size=vocab, context_layers=1,
                            num_layers=1, hidden_dim=16, num_heads=2, mlp_dim=32)
    model = MaskedTransformer(cfg, rngs=nnx.Rngs(0))
    for block_mod in ([model.blocks.modulation] if conditioning == "pooled_adaln" else []):
        # adaLN-zero starts as the identity: perturb it so that the condition matters
        block_mod[...] = 0.3 * jax.random.normal(jax.random.key(3), block_mod.shape)
    return model


@pytest.mark.parametrize("conditioning,vocab", [("cross_attention", 40), ("prefix", 0), ("pooled_adaln", 40)])
def test_context_conditionings_read_real_positions_only(conditioning, vocab):
    """Each mechanism (over given embeddings or over ids the model embeds) reads the real positions,
    never the padding, and takes the null condition where dropped."""
    model = _model(conditioning, vocab)
    tokens = model.spec.masked(2)
    if vocab:
        ids = np.array([[3, 4, 5, 0, 0, 0], [7, 8, 0, 0, 0, 0]], np.int32)
        given = dict(context_ids=ids)
        padded = dict(context_ids=ids + 9 * ~MASK)  # other ids at the padding positions
        other = dict(context_ids=np.where(MASK, ids + 1, ids))
    else:
        context = np.asarray(jax.random.normal(jax.random.key(1), (2, 6, 16)))
        given, padded = dict(context=context), dict(context=np.where(MASK[..., None], context, 50.0))
        other = dict(context=context + 1.0)
    run = lambda **kw: np.asarray(model(tokens, context_mask=MASK, **kw))
    base = run(**given)
    assert base.shape == (2, 3, 3, 8)
    np.testing.assert_allclose(run(**padded), base, atol=1e-6)  # padding is never read
    assert np.abs(run(**other) - base).max() > 1e-4  # the real positions are
    dropped = run(**given, drop_condition=jnp.array([True, False]))
    assert np.abs(dropped[0] - base[0]).max() > 1e-4 and np.allclose(dropped[1], base[1], atol=1e-6)
    model.check_inputs(np.asarray(tokens), context_mask=MASK, **given)
    with pytest.raises(ValueError, match="context"):
        model.check_inputs(np.asarray(tokens), context_mask=MASK)


def test_rope_context_encoder_sees_relative_positions_only():
    """Rotary positions: a query–key score depends on the positions' difference alone; the encoder
    with `positions="rope"` has no position table, still tells word order apart, and a bad name is an
    error naming the field."""
    from mgt.context_encoder import ContextEncoder
    from mgt.layers import rotary

    q, k = (jax.random.normal(jax.random.key(i), (1, 1, 2, 8)) for i in (0, 1))
    score = lambda i, j: np.asarray(jnp.sum(rotary(q, jnp.array([i])) * rotary(k, jnp.array([j])), -1))
    np.testing.assert_allclose(score(7, 5), score(3, 1), atol=1e-5)
    assert np.abs(score(3, 1) - score(1, 3)).max() > 1e-3
    encoder = ContextEncoder(20, 6, 16, num_layers=1, positions="rope", rngs=nnx.Rngs(0))
    assert encoder.position_embeddings is None
    out = np.asarray(encoder(jnp.array([[3, 4, 5, 0], [5, 4, 3, 0]])))
    assert out.shape == (2, 4, 16) and np.abs(out[0, 1] - out[1, 1]).max() > 1e-3  # order matters
    with pytest.raises(ValueError, match="positions"):
        ContextEncoder(20, 6, 16, positions="sinusoid", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="context_position_encoding"):
        TransformerConfig(grid=(2, 2), codebook_size=4, conditioning="cross_attention", context_dim=8, context_len=4,
                          context_vocab_size=10, context_position_encoding="alibi")


def test_context_config_errors_name_the_field():
    with pytest.raises(ValueError, match="context_len"):
        TransformerConfig(grid=(2, 2), codebook_size=4, conditioning="prefix", context_dim=8)
    with pytest.raises(ValueError, match="block_style"):
        TransformerConfig(grid=(2, 2), codebook_size=4, conditioning="pooled_adaln", context_dim=8,
                          block_style="maskgit")
    with pytest.raises(ValueError, match="context_vocab_size"):
        TransformerConfig(grid=(2, 2), codebook_size=4, conditioning="class_token", num_classes=2,
                          context_vocab_size=10, context_len=4)
    model = _model("prefix", 40)
    with pytest.raises(ValueError, match="context_ids"):
        model.check_inputs(np.asarray(model.spec.masked(1)), context_ids=np.full((1, 9), 3))  # longer than 6
    with pytest.raises(ValueError, match=r"\[0, 40\)"):
        model.check_inputs(np.asarray(model.spec.masked(1)), context_ids=np.full((1, 4), 40))


def test_negative_condition_replaces_the_null_condition_in_guidance():
    from mgt.decoding import guided_logits
    from mgt.sampling import model_inputs

    model = _model("cross_attention", 40)
    ids = np.array([[3, 4, 5, 0, 0, 0], [7, 8, 0, 0, 0, 0]], np.int32)
    cond = Condition(context_ids=ids, context_mask=MASK)
    neg = Condition(context_ids=ids[::-1].copy(), context_mask=MASK[::-1].copy())
    tokens = model.spec.masked(2)
    fn, _ = model_inputs(model, condition=cond, negative=neg, guidance_scale=2.0)
    guided = np.asarray(guided_logits(fn, tokens, 2.0))
    l_c = np.asarray(model(tokens, context_ids=ids, context_mask=MASK))
    l_n = np.asarray(model(tokens, context_ids=neg.context_ids, context_mask=neg.context_mask))
    np.testing.assert_allclose(guided, l_c + 2.0 * (l_c - l_n), atol=1e-4)
    # decoding embeds the ids once, before its steps: the same logits
    once = fn.for_decoding()
    assert once.condition.context_ids is None and once.negative.context is not None
    np.testing.assert_allclose(np.asarray(guided_logits(once, tokens, 2.0)), guided, atol=1e-5)
    with pytest.raises(ValueError, match="guidance"):
        model_inputs(model, condition=cond, negative=neg)


def test_vocabularies_pad_truncate_once_and_persist(tmp_path):
    from mgt.text.vocabulary import make_vocabulary

    b = make_vocabulary("bytes", max_length=4)
    ids, mask = b.encode(["ab", ""])
    assert ids.tolist() == [[98, 99, 0, 0], [0, 0, 0, 0]] and mask.sum() == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b.encode(["abcdefgh"])
        b.encode(["abcdefgh"])
    assert len([w for w in caught if "truncated" in str(w.message)]) == 1
    path = str(tmp_path / "v.json")
    captions = ["a red circle", "a large blue square to the left of a small yellow triangle", "a green triangle"] * 5
    v = make_vocabulary("bpe", max_length=12, size=300, path=path)
    with pytest.raises(ValueError, match="not been fitted"):
        v.encode(["a red circle"])
    v.fit(captions)
    ids, mask = v.encode(["A Red circle", "a red circle"])
    assert os.path.exists(path) and (ids[0] == ids[1]).all() and 0 < mask[0].sum() <= 5  # lower-cased words
    again = make_vocabulary("bpe", max_length=12, size=300, path=path)
    assert again.fitted and (again.encode(["a green triangle"])[0] == v.encode(["a green triangle"])[0]).all()
    with pytest.raises(ValueError, match="vocabulary"):
        make_vocabulary("words", max_length=4)


def test_conditioner_with_a_frozen_encoder_by_import_path():
    from mgt.text.conditioner import TextConditioner
    from mgt.tokens import TokenSpec
    from mgt.training.builders import transformer_config

    cfg = config_dict.ConfigDict({"encoder": f"{os.path.abspath(__file__)}:FakeEncoder", "path": None,
                                  "max_length": 6})
    text = TextConditioner(cfg)
    cond = text.condition(["abc", "hello world"])
    assert cond.context.shape == (2, 6, 8) and cond.context_mask.sum(1).tolist() == [3, 6]
    assert text.model_fields() == dict(context_dim=8, context_len=6, context_vocab_size=0)
    with pytest.raises(ValueError, match="prompts"):
        text.check_prompts([], "prompts")
    from mgt.config import base_config

    c = base_config()
    c.text.encoder, c.text.max_length = cfg.encoder, 6
    c.model.conditioning = "class_token"
    with pytest.raises(ValueError, match="context conditioning"):
        transformer_config(c, TokenSpec((2, 2), 4), text)
    c.model.conditioning = "prefix"
    model_cfg = transformer_config(c, TokenSpec((2, 2), 4), text)
    assert (model_cfg.context_dim, model_cfg.context_len, model_cfg.context_vocab_size) == (8, 6, 0)
    with pytest.raises(ValueError, match="config.text.encoder"):
        TextConditioner(config_dict.ConfigDict({"encoder": "no_such_encoder", "max_length": 4})).condition(["a"])


def test_every_modality_keeps_captions_in_its_batches():
    """A source with captions conditions a text model of any modality: the input transforms keep "text"."""
    from mgt.modalities.audio.task import AudioToFloat
    from mgt.modalities.image.preprocess import ToFloat
    from mgt.modalities.video.task import VideoToFloat

    for transform, record in ((ToFloat(), {"image": np.zeros((4, 4, 3), np.uint8)}),
                              (AudioToFloat(8), {"audio": np.zeros(8, np.float32)}),
                              (VideoToFloat((2, 4, 4, 3)), {"video": np.zeros((2, 4, 4, 3), np.uint8)})):
        assert transform({**record, "text": "a red circle"})["text"] == "a red circle"
        assert "text" not in transform(record)


def test_prompt_grids_have_one_titled_row_per_prompt():
    from mgt.modalities.image.task import _prompt_rows
    from mgt.modalities.image.writer import make_image_grid

    prompts = np.asarray(["a red circle", "a large blue square to the left of a small yellow triangle"] * 3)
    order, titles, per = _prompt_rows(prompts)
    assert per == 3 and titles == list(dict.fromkeys(prompts.tolist()))
    assert (prompts[order] == np.repeat(titles, 3)).all()
    grid = make_image_grid(np.zeros((6, 8, 8, 3)), ncols=per, row_titles=titles)
    assert grid.shape[1] > 3 * 8 + 4 * 2  # widened so that the long title is read whole
