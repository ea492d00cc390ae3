"""The masked Transformer: shapes on any grid, conditioning, guidance, sharding, and learning."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mgt import masking
from mgt.decoding import guided_logits
from mgt.sampling import model_logits_fn, sample
from mgt.transformer import MaskedTransformer, TransformerConfig

TINY = dict(num_layers=1, hidden_dim=32, num_heads=4, mlp_dim=64)


@pytest.mark.parametrize("kw", [
    dict(grid=(12,), codebook_size=16),
    dict(grid=(4, 4), codebook_size=16, block_style="maskgit", conditioning="class_token", num_classes=10),
    dict(grid=(2, 3, 4), codebook_size=16, position_embedding="factorized"),
    dict(grid=(6,), codebook_size=8, num_levels=3, conditioning="adaln", num_classes=3),
    dict(grid=(3, 3), codebook_size=16, num_levels=2, conditioning="cross_attention", context_dim=8, qk_norm=True),
    dict(grid=(2, 3, 4), codebook_size=16, rope=True, code_digits=(4, 4), conditioning="adaln", num_classes=2),
], ids=["1d", "2d-maskgit", "3d-factorized", "levels-adaln", "levels-cross", "3d-rope-digits-adaln"])
def test_output_shapes(kw):
    cfg = TransformerConfig(**TINY, **kw)
    model = MaskedTransformer(cfg, rngs=nnx.Rngs(0))
    tokens = cfg.spec.masked(2)
    out = model(tokens, labels=jnp.array([0, 1]), context=jnp.ones((2, 5, 8)))
    assert out.shape == cfg.spec.batch_shape(2) + (cfg.codebook_size,)
    assert out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())


def test_maskgit_full_vocabulary_head_and_official_size():
    cfg = TransformerConfig(grid=(2, 2), codebook_size=8, num_classes=3, block_style="maskgit",
                            conditioning="class_token", **TINY)
    model = MaskedTransformer(cfg, rngs=nnx.Rngs(0))
    assert cfg.spec.vocab_size == 8 + 3 + 1 and cfg.spec.mask_id == 11
    seq = jnp.full((1, 4, 1), cfg.spec.mask_id)
    full = model.sequence_logits(seq, prefix_ids=jnp.array([8 + 2]))
    assert full.shape == (1, 5, 1, 12)
    official = nnx.eval_shape(lambda: MaskedTransformer(TransformerConfig.maskgit_imagenet(256), rngs=nnx.Rngs(0)))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(official, nnx.Param))) == 172_457_193


@pytest.fixture(scope="module")
def conditional_model():
    cfg = TransformerConfig(grid=(4, 4), codebook_size=16, num_classes=5, conditioning="class_token",
                            null_condition=True, block_style="maskgit", **TINY)
    return MaskedTransformer(cfg, rngs=nnx.Rngs(1))


def test_decoding_over_per_layer_weights_equals_the_scanned_layers():
    """Decoding runs the layers over per-layer weights (`layer_states`), training scans the stack:
    same logits, same samples; a pipeline's cache of those weights follows new weights."""
    import dataclasses

    from mgt.sampling import LayerWeightsCache

    cfg = TransformerConfig(grid=(4, 4), codebook_size=16, num_classes=5, conditioning="class_token",
                            block_style="maskgit", num_layers=2, hidden_dim=32, num_heads=4, mlp_dim=64)
    model = MaskedTransformer(cfg, rngs=nnx.Rngs(3))
    tokens = jnp.asarray(np.random.RandomState(1).randint(0, 16, (2, 4, 4)), jnp.int32)
    labels = jnp.array([1, 4])
    layers = model.layer_states()
    assert len(layers) == 2
    np.testing.assert_allclose(np.asarray(model(tokens, labels=labels, layers=layers)),
                               np.asarray(model(tokens, labels=labels)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="holds 1 layers' weights; the model has 2"):
        model(tokens, labels=labels, layers=layers[:1])
    scanned = nnx.clone(model)
    scanned.config = dataclasses.replace(cfg, decode_layers="scan")
    # the decoding loop asks its logits_fn for its loop layout once: per-layer weights, or none (scan)
    assert len(model_logits_fn(model, labels=labels).for_decoding().layers) == 2
    assert model_logits_fn(scanned, labels=labels).for_decoding().layers is None

    cache = LayerWeightsCache()
    first = cache.get(model)
    assert cache.get(model) is first  # same weights: reused
    assert cache.get(scanned) is None  # a scanning model needs none
    nnx.update(model, jax.tree.map(lambda a: a + 1.0, nnx.state(model, nnx.Param)))
    again = cache.get(model)
    assert again is not first
    np.testing.assert_allclose(np.asarray(jax.tree.leaves(again[0])[0]), np.asarray(jax.tree.leaves(first[0])[0]) + 1.0)
    with pytest.raises(ValueError, match="decode_layers"):
        dataclasses.replace(cfg, decode_layers="unroled")


def test_guidance_scale_zero_equals_conditional_logits(conditional_model):
    model = conditional_model
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, 16, (3, 4, 4)), jnp.int32)
    labels = jnp.array([0, 3, 4])
    fn = model_logits_fn(model, labels=labels)
    cond = model(tokens, labels=labels)
    np.testing.assert_allclose(guided_logits(fn, tokens, 0.0), cond, rtol=1e-5, atol=1e-5)
    uncond = model(tokens, labels=labels, drop_condition=jnp.ones(3, bool))
    assert not np.allclose(uncond, cond)
    np.testing.assert_allclose(guided_logits(fn, tokens, 2.0), cond + 2.0 * (cond - uncond), rtol=1e-4, atol=1e-4)


def test_sample_with_guidance_and_bad_inputs(conditional_model):
    model = conditional_model
    out = sample(model, jax.random.key(0), labels=[1, 2], num_steps=4, guidance_scale=1.5)
    assert out.shape == (2, 4, 4) and int(out.min()) >= 0 and int(out.max()) < 16
    with pytest.raises(ValueError, match="labels hold values outside"):
        sample(model, jax.random.key(0), labels=[7], num_steps=4)
    with pytest.raises(ValueError, match=r"tokens has shape \(1, 5, 5\)"):
        sample(model, jax.random.key(0), labels=[1], tokens=np.zeros((1, 5, 5), np.int32))
    with pytest.raises(ValueError, match="outside"):
        sample(model, jax.random.key(0), labels=[1], tokens=np.full((1, 4, 4), 17, np.int32))


def test_tiny_model_loss_falls_on_a_fixed_batch():
    cfg = TransformerConfig(grid=(4, 4), codebook_size=8, num_classes=2, conditioning="class_token",
                            block_style="modern", **TINY)
    model = MaskedTransformer(cfg, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    # tokens determined by the class and the position: learnable from the condition alone
    labels = jnp.asarray([0, 1] * 4, jnp.int32)
    tokens = ((jnp.arange(16).reshape(1, 4, 4) + 3 * labels[:, None, None]) % 8).astype(jnp.int32)

    @nnx.jit
    def step(model, optimizer, key):
        mask, loss_mask = masking.make_training_mask(key, cfg.spec, 8)
        inputs = masking.apply_mask(tokens, mask, cfg.spec.mask_id)

        def loss_fn(model):
            return masking.masked_cross_entropy(model(inputs, labels=labels), tokens, loss_mask)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, jax.random.key(i % 4))) for i in range(40)]
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4]), losses


SHARDED_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from mgt import sharding
    from mgt.transformer import MaskedTransformer, TransformerConfig
    assert jax.device_count() == 8
    cfg = TransformerConfig(grid=(4, 4), codebook_size=16, num_classes=10, conditioning="class_token",
                            block_style="maskgit", num_layers=2, hidden_dim=32, num_heads=4, mlp_dim=64)
    make = lambda: MaskedTransformer(cfg, rngs=nnx.Rngs(0))
    tokens = np.random.RandomState(0).randint(0, 16, (8, 4, 4)).astype(np.int32)
    labels = np.arange(8, dtype=np.int32)
    ref = np.asarray(make()(jnp.asarray(tokens), labels=labels))
    mesh = sharding.make_mesh(data=2, fsdp=4)
    model = sharding.create_sharded(make, mesh)
    kernel = nnx.state(model)["blocks"]["mlp"]["intermediate_output"]["kernel"][...]
    assert "fsdp" in str(kernel.sharding.spec), kernel.sharding
    batch = sharding.shard_batch({"t": tokens, "l": labels}, mesh)
    with jax.set_mesh(mesh):
        out = nnx.jit(lambda m, t, l: m(t, labels=l))(model, batch["t"], batch["l"])
    print("MAXDIFF", float(np.abs(np.asarray(out) - ref).max()))
""")


@pytest.mark.multidevice
def test_sharded_forward_on_8_devices_equals_single_device():
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
    res = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    diff = float(res.stdout.split("MAXDIFF")[1])
    assert diff < 1e-5


def test_model_called_from_a_plain_lambda_inside_decode(conditional_model):
    """A user's `lambda t: model(t, labels=...)` works in the decoding engine (model built outside jit)."""
    from mgt.decoding import decode

    model = conditional_model
    labels = np.array([1, 2])
    out = decode(lambda t: model(t, labels=labels), model.spec.masked(2), jax.random.key(0),
                 mask_id=model.spec.mask_id, num_steps=3)
    assert out.shape == (2, 4, 4) and int(out.max()) < 16


def test_code_digits_share_what_is_learnt_about_each_digit():
    """With code_digits, a code's embedding and logit add one term per digit (mixed radix, FSQ's order):
    with the per-code parts zeroed, codes decompose exactly into their digits' parts."""
    from types import SimpleNamespace

    from mgt.tokenizers.quantizers.fsq import FiniteScalarQuantizer
    from mgt.training.builders import check_code_digits
    from mgt.transformer import digit_onehot

    np.testing.assert_array_equal(digit_onehot((2, 3)), np.array(
        [[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1], [1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]]))
    cfg = TransformerConfig(grid=(2, 2), codebook_size=6, code_digits=(2, 3), **TINY)
    model = MaskedTransformer(cfg, rngs=nnx.Rngs(0))
    model.word_embeddings[...] = jnp.zeros_like(model.word_embeddings[...])
    model.output_kernel[...] = jnp.zeros_like(model.output_kernel[...])
    table = model.token_table()[0]  # codes (d0, d1) = (i % 2, i // 2)
    np.testing.assert_allclose(table[0] + table[3], table[1] + table[2], atol=1e-6)  # (0,0)+(1,1) = (1,0)+(0,1)
    assert float(jnp.abs(table[0] - table[1]).max()) > 0
    logits = model(jnp.array([[[0, 3], [5, cfg.spec.mask_id]]]))[0].reshape(4, 6)
    np.testing.assert_allclose(logits[:, 0] + logits[:, 3], logits[:, 1] + logits[:, 2], atol=1e-5)
    np.testing.assert_allclose(logits[:, 2] + logits[:, 5], logits[:, 3] + logits[:, 4], atol=1e-5)

    with pytest.raises(ValueError, match="code_digits=\\(2, 4\\).*codebook_size=6"):
        TransformerConfig(grid=(2, 2), codebook_size=6, code_digits=(2, 4))
    fsq = SimpleNamespace(quantizer=FiniteScalarQuantizer((3, 2)))  # FSQ's index order must be the model's
    q = fsq.quantizer
    codes = np.asarray(q.codes_from_indices(jnp.arange(6)))  # [6, 2]: channel 0 is the fastest digit
    assert len(set(codes[:3, 0])) == 3 and len(set(codes[:3, 1])) == 1 and codes[3, 0] == codes[0, 0] != codes[1, 0]
    with pytest.raises(ValueError, match="code_digits=\\(2, 3\\).*digits \\(3, 2\\)"):
        check_code_digits(cfg, fsq)
    check_code_digits(TransformerConfig(grid=(2, 2), codebook_size=6, code_digits=(3, 2)), fsq)


def test_input_patch_head_regresses_the_block_under_each_cell():
    """`input_patches` cuts an input into the blocks its cells stand for (row-major, channels last); the
    head's patches come with unchanged logits, shaped like the grid."""
    from mgt.training.transformer_stage import input_patch_dim, input_patches

    x = np.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3)  # [n, H, W, C] on a (2, 3) grid: 2 × 2 × 3 blocks
    patches = input_patches(x, (2, 3))
    assert patches.shape == (2, 2, 3, 12) and input_patch_dim((4, 6, 3), (2, 3)) == 12
    np.testing.assert_array_equal(patches[1, 1, 2], x[1, 2:4, 4:6].reshape(-1))
    np.testing.assert_array_equal(input_patches(np.arange(12).reshape(1, 12), (3,))[0, 1], [4, 5, 6, 7])  # audio
    assert input_patch_dim((8, 32, 32, 1), (4, 4, 4)) == 128 and input_patch_dim((9, 32, 32, 1), (5, 8, 8)) == 0

    cfg = TransformerConfig(grid=(2, 3), codebook_size=8, num_levels=2, patch_dim=12, **TINY)
    model = MaskedTransformer(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 2, 3, 2), 0, 8)
    logits, out = model(tokens, with_patches=True)
    assert out.shape == (2, 2, 3, 12) and out.dtype == jnp.float32
    np.testing.assert_allclose(logits, model(tokens), atol=1e-6)
    with pytest.raises(ValueError, match="with_patches=True needs a model with an input-patch head"):
        MaskedTransformer(TransformerConfig(grid=(2, 3), codebook_size=8, **TINY), rngs=nnx.Rngs(0))(
            tokens[..., 0], with_patches=True)
    with pytest.raises(ValueError, match="patch_dim=12: the input-patch head needs block_style='modern'"):
        TransformerConfig(grid=(2, 3), codebook_size=8, block_style="maskgit", patch_dim=12)

    # recycling: starts as the plain model (zero kernel); once trained, the second pass reads the first's
    # patches; in training the second half of the batch gets none, and the kernel gets gradients
    recycled = MaskedTransformer(dataclasses.replace(cfg, recycle_patches=True), rngs=nnx.Rngs(0))
    np.testing.assert_allclose(recycled(tokens), logits, atol=1e-6)
    recycled.recycle_kernel[...] = jnp.full_like(recycled.recycle_kernel[...], 0.1)
    assert float(jnp.abs(recycled(tokens) - logits).max()) > 1e-3
    trained = recycled(tokens, deterministic=False, dropout_rng=jax.random.key(3))
    assert float(jnp.abs(trained[0] - logits[0]).max()) > 1e-3
    np.testing.assert_allclose(trained[1], logits[1], atol=1e-5)
    grads = nnx.grad(lambda m: m(tokens, with_patches=True, deterministic=False,
                                 dropout_rng=jax.random.key(3))[1].sum())(recycled)
    assert float(jnp.abs(grads["recycle_kernel"][...]).sum()) > 0
    with pytest.raises(ValueError, match="recycle_patches=True .* needs patch_dim > 0"):
        TransformerConfig(grid=(2, 3), codebook_size=8, recycle_patches=True)

    # sketch guidance: l + s · (l − l_plain) where guidance's unconditional rows (drop_condition) keep l
    sketched = recycled(tokens)
    plain = model(tokens)  # the same weights without the recycle kernel: the first pass
    drop = jnp.array([False, True])
    guided = recycled(tokens, sketch_guidance=0.5, drop_condition=drop)
    np.testing.assert_allclose(guided[0], sketched[0] + 0.5 * (sketched[0] - plain[0]), atol=1e-4)
    np.testing.assert_allclose(guided[1], sketched[1], atol=1e-6)
    np.testing.assert_allclose(recycled(tokens, sketch_guidance=0.0), sketched, atol=1e-6)
    with pytest.raises(ValueError, match=r"sketch_guidance=0.5 needs a model that recycles its sketch"):
        model(tokens, sketch_guidance=0.5)
    with pytest.raises(ValueError, match=r"sketch_guidance=0.5 needs .* at inference"):
        recycled(tokens, sketch_guidance=0.5, deterministic=False, dropout_rng=jax.random.key(3))
    from mgt.sampling import model_logits_fn

    fn = model_logits_fn(recycled, sketch_guidance=0.5)
    np.testing.assert_allclose(fn(tokens), recycled(tokens, sketch_guidance=0.5), atol=1e-6)
    with pytest.raises(ValueError, match=r"sketch_guidance=0.5 needs a model that recycles .*: set it to 0"):
        model_logits_fn(model, sketch_guidance=0.5)

    # recycle_codes: the second pass also reads the first pass's code probabilities at masked (cell, level)
    # positions through a zero table: no effect at the start, none where nothing is masked, trained
    selfcond = MaskedTransformer(dataclasses.replace(cfg, recycle_patches=True, recycle_codes=True), rngs=nnx.Rngs(0))
    assert selfcond.recycle_code_table.shape == (2, 8, cfg.hidden_dim) and not selfcond.recycle_code_table[...].any()
    holes = tokens.at[0, 0, :, 1].set(cfg.spec.mask_id)  # some masked codes in example 0
    np.testing.assert_allclose(selfcond(holes), model(holes), atol=1e-6)
    selfcond.recycle_code_table[...] = jax.random.normal(jax.random.key(4), selfcond.recycle_code_table.shape)
    np.testing.assert_allclose(selfcond(tokens), logits, atol=1e-6)  # nothing masked: nothing read
    changed = jnp.abs(selfcond(holes) - model(holes)).max(axis=(1, 2, 3, 4))
    assert float(changed[0]) > 1e-3 and float(changed[1]) < 1e-6
    grads = nnx.grad(lambda m: m(holes, with_patches=True, deterministic=False,
                                 dropout_rng=jax.random.key(3))[0][0].sum())(selfcond)
    assert float(jnp.abs(grads["recycle_code_table"][...]).sum()) > 0
    with pytest.raises(ValueError, match="recycle_codes=True .* needs recycle_patches=True"):
        TransformerConfig(grid=(2, 3), codebook_size=8, patch_dim=12, recycle_codes=True)


def test_relative_bias_index_and_model():
    from mgt.ar import ARTransformer
    from mgt.layers import relative_offset_index, relative_table_rows

    grid = (2, 3, 4)
    rows = relative_table_rows(grid)
    assert rows == 3 * 5 * 7 + 1
    index = relative_offset_index(grid, 25)  # one prefix row, then the 24 cells
    assert index.shape == (25, 25) and (index[0] == rows - 1).all() and (index[:, 0] == rows - 1).all()
    cells = index[1:, 1:]
    center = (rows - 1) // 2  # offset (0, 0, 0)
    assert (np.diag(cells) == center).all() and (cells + cells.T == 2 * center).all()
    # cell (0, 0, 0) → (1, 1, 2) and (0, 1, 1) → (1, 2, 3) share an offset; (0, 0, 1) → (1, 1, 2) does not
    flat = lambda t, r, c: 1 + np.ravel_multi_index((t, r, c), grid)
    assert index[flat(0, 0, 0), flat(1, 1, 2)] == index[flat(0, 1, 1), flat(1, 2, 3)]
    assert index[flat(0, 0, 1), flat(1, 1, 2)] != index[flat(0, 0, 0), flat(1, 1, 2)]
    assert len(np.unique(cells)) == rows - 1

    # (not adaLN: its blocks start as the identity)
    cfg = TransformerConfig(grid=grid, codebook_size=16, relative_bias=True, rope=True,
                            tasks=("generation", "frame_prediction"), **TINY)
    model = MaskedTransformer(cfg, rngs=nnx.Rngs(0))
    assert model.blocks.relative_bias.shape == (1, 4, rows)  # [layers, heads, rows]
    assert not model.blocks.relative_bias[...].any()  # zero at the start
    tokens = jax.random.randint(jax.random.key(1), (2,) + grid, 0, 17)
    before = model(tokens, tasks=jnp.array([0, 1]))
    model.blocks.relative_bias[...] = jax.random.normal(jax.random.key(2), (1, 4, rows))
    after = model(tokens, tasks=jnp.array([0, 1]))
    assert float(jnp.abs(after - before).max()) > 1e-3
    with pytest.raises(ValueError, match="relative_bias=True needs block_style='modern'"):
        TransformerConfig(grid=(2, 2), codebook_size=8, relative_bias=True, block_style="maskgit")
    with pytest.raises(ValueError, match="relative_bias=True is for masked models"):
        ARTransformer(TransformerConfig(grid=(2, 2), codebook_size=8, relative_bias=True, **TINY), rngs=nnx.Rngs(0))


def test_grid_rope_scores_depend_on_grid_offsets_only():
    from mgt.ar import ARTransformer
    from mgt.layers import rotary_grid

    q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 10))  # 5 channel pairs over 3 axes: 2, 2, 1

    def score(p, r):
        return float((rotary_grid(q[None], jnp.array([p])) * rotary_grid(k[None], jnp.array([r]))).sum())

    assert score((1, 2, 3), (0, 1, 1)) == pytest.approx(score((3, 5, 4), (2, 4, 2)), abs=1e-5)
    assert score((1, 2, 3), (0, 1, 1)) != pytest.approx(score((1, 2, 3), (0, 1, 2)), abs=1e-3)
    with pytest.raises(ValueError, match="rope=True needs block_style='modern'"):
        TransformerConfig(grid=(2, 2), codebook_size=8, rope=True, block_style="maskgit")
    with pytest.raises(ValueError, match="head size 2 has fewer channel pairs than the grid's 2 axes"):
        TransformerConfig(grid=(2, 2), codebook_size=8, rope=True, hidden_dim=8, num_heads=4)
    with pytest.raises(ValueError, match="rope=True is for masked models"):
        ARTransformer(TransformerConfig(grid=(2, 2), codebook_size=8, rope=True, **TINY), rngs=nnx.Rngs(0))
