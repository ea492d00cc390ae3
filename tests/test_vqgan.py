"""Tests of the 2D VQGAN (mgt.tokenizers.vqgan) and the tokenizer training losses.

Large shapes (256 px, the default 54.5 M-parameter model) are checked abstractly with eval_shape;
everything computed uses tiny models.
"""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mgt.tokenizers import Tokenizer, TrainableTokenizer, make_tokenizer
from mgt.tokenizers import image_losses as L
from mgt.tokenizers.vqgan import VQGAN, VQGANConfig, from_official_tree, to_official_tree
from mgt.tokenizers.vqgan_layers import (
    ResBlock,
    avg_pool_2x2_same,
    swish,
    upsample_nearest_2x,
    upsample_nearest_2x_conv,
)

# shared/ lies beside the repository (in CI too); the absolute path is the development machine's copy
TREE_FILE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "maskgit_official_param_tree.txt"
_FALLBACK_TREE_FILE = pathlib.Path("/work/shared/reference/maskgit_official_param_tree.txt")

TINY = dict(base_channels=16, channel_multipliers=(1, 2, 2), num_res_blocks=1, embedding_dim=16,
            codebook_size=64, num_groups=4)


@pytest.fixture(scope="module")
def tiny_model():
    return VQGAN(rngs=nnx.Rngs(0), **TINY)


@pytest.fixture(scope="module")
def digits16():
    """16 sklearn digits, upsampled 8 → 16 px, grey → 3 channels, float32 in [0, 1]: [16, 16, 16, 3]."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:16].astype(np.float32) / 16.0
    images = images.repeat(2, axis=1).repeat(2, axis=2)
    return jnp.asarray(np.repeat(images[..., None], 3, axis=-1))


# ---- architecture --------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 128, 256])
@pytest.mark.parametrize("mults,factor", [((1, 2, 2), 4), ((1, 1, 2, 2), 8), ((1, 1, 2, 2, 4), 16)])
def test_encode_decode_shapes_abstract(size, mults, factor):
    abstract = nnx.eval_shape(lambda: VQGAN(base_channels=8, channel_multipliers=mults, num_res_blocks=1,
                                            embedding_dim=8, codebook_size=32, num_groups=4, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    assert abstract.downsample_factor == factor
    images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    tokens = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).encode(x), state, images)
    assert tokens.shape == (2, size // factor, size // factor) and tokens.dtype == jnp.int32
    recon = jax.eval_shape(lambda s, t: nnx.merge(graphdef, s).decode(t), state, tokens)
    assert recon.shape == (2, size, size, 3) and recon.dtype == jnp.float32
    spec = abstract.token_spec((size, size, 3))
    assert spec.grid == (size // factor, size // factor) and spec.codebook_size == 32


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    abstract = nnx.eval_shape(lambda: VQGAN(rngs=nnx.Rngs(0), dtype="bfloat16", **TINY))
    assert {v.dtype for v in jax.tree.leaves(nnx.state(abstract, nnx.Param))} == {jnp.dtype(jnp.float32)}
    graphdef, state = nnx.split(abstract)
    images = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
    recon, losses, _ = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).training_losses(x), state, images)
    assert recon.dtype == jnp.float32 and losses["reconstruction"].dtype == jnp.float32
    latents = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).encoder(x.astype(jnp.bfloat16)), state, images)
    assert latents.dtype == jnp.bfloat16


def _avg_pool_reference(x):
    b, h, w, c = x.shape
    out = np.zeros((b, -(-h // 2), -(-w // 2), c), np.float64)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(1, 2))  # in-image cells only
    return out


def test_avg_pool_tf_same_on_odd_sizes():
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    got = np.asarray(avg_pool_2x2_same(jnp.asarray(x)))
    assert got.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(got, _avg_pool_reference(x), rtol=1e-5, atol=1e-6)
    # the bottom-right corner holds one image cell: its own value, not value / 4
    np.testing.assert_allclose(got[:, -1, -1], x[:, -1, -1], rtol=1e-6)


def test_upsample_conv_as_four_2x2_convs_equals_upsample_then_conv():
    """The decoder's fused nearest-x2 + 3x3 conv: same values and gradients as the plain form, odd sizes too."""
    conv = nnx.Conv(3, 5, kernel_size=(3, 3), padding="SAME", rngs=nnx.Rngs(0))
    conv.bias[...] = jnp.arange(5.0)
    x = jax.random.normal(jax.random.key(2), (2, 3, 5, 3))
    plain = conv(upsample_nearest_2x(x))
    fused = upsample_nearest_2x_conv(conv, x)
    assert fused.shape == (2, 6, 10, 5)
    np.testing.assert_allclose(np.asarray(fused), np.asarray(plain), rtol=1e-5, atol=1e-5)
    grads = [jax.grad(lambda x, f=f: jnp.sum(f(x) ** 2))(x)
             for f in (lambda x: conv(upsample_nearest_2x(x)), lambda x: upsample_nearest_2x_conv(conv, x))]
    np.testing.assert_allclose(np.asarray(grads[1]), np.asarray(grads[0]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="3x3 'SAME'"):
        upsample_nearest_2x_conv(nnx.Conv(3, 5, kernel_size=(1, 1), rngs=nnx.Rngs(0)), x)


def test_resblock_shortcut_applies_to_output():
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 4))
    block = ResBlock(4, 8, num_groups=2, rngs=nnx.Rngs(0))
    assert block.shortcut.kernel.shape == (1, 1, 8, 8)
    out = block.conv_1(swish(block.norm_1(block.conv_0(swish(block.norm_0(x))))))
    np.testing.assert_allclose(block(x), out + block.shortcut(out), rtol=1e-5, atol=1e-5)
    same = ResBlock(4, 4, num_groups=2, rngs=nnx.Rngs(0))
    assert same.shortcut is None
    out = same.conv_1(swish(same.norm_1(same.conv_0(swish(same.norm_0(x))))))
    np.testing.assert_allclose(same(x), out + x, rtol=1e-5, atol=1e-5)


# ---- the official parameter tree -----------------------------------------------------------------
def _official_tokenizer_tree() -> dict[str, tuple[int, ...]]:
    path = TREE_FILE if TREE_FILE.exists() else _FALLBACK_TREE_FILE
    if not path.exists():
        pytest.skip(f"reference file {TREE_FILE} not available")
    lines = path.read_text().splitlines()
    start = lines.index(next(text for text in lines if text.startswith("## tokenizer 256")))
    tree = {}
    for line in lines[start + 1:]:
        if not line.startswith("params/"):
            break
        m = re.fullmatch(r"params/(\S+) \(([\d, ]*)\) float32", line)
        assert m, line
        tree[m.group(1)] = tuple(int(d) for d in m.group(2).replace(" ", "").split(",") if d)
    return tree


def _flat_shapes(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat_shapes(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = tuple(v.shape)
    return out


def test_default_model_matches_official_tree():
    official = _official_tokenizer_tree()
    assert len(official) == 168
    abstract = nnx.eval_shape(lambda: VQGAN(rngs=nnx.Rngs(0)))
    tree = to_official_tree(abstract)
    assert set(tree) == {"params"}
    ours = _flat_shapes(tree["params"])
    assert sorted(set(ours) ^ set(official)) == []
    assert {k: v for k, v in ours.items() if official[k] != v} == {}
    assert sum(int(np.prod(s)) for s in ours.values()) == 54_515_587
    assert abstract.token_spec((256, 256, 3)).grid == (16, 16)


def test_official_round_trip_and_key_errors(tiny_model):
    tree = jax.tree.map(np.asarray, to_official_tree(tiny_model))
    p = tree["params"]
    assert p["encoder"]["ResBlock_1"]["Conv_2"]["kernel"].shape == (1, 1, 32, 32)  # channel change 16 → 32
    assert set(p["decoder"]) >= {"Conv_0", "Conv_1", "Conv_2", "Conv_3", "GroupNorm_0"}
    assert p["decoder"]["Conv_3"]["kernel"].shape == (3, 3, 16, 3)  # the output conv follows 2 upsample convs
    other = VQGAN(rngs=nnx.Rngs(1), **TINY)
    nnx.update(other, from_official_tree(tree, other))
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(tiny_model, nnx.Param)),
                                 nnx.to_flat_state(nnx.state(other, nnx.Param))):
        np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(path))
    # without the top 'params' key too
    assert len(nnx.to_flat_state(from_official_tree(p, other))) == len(_flat_shapes(p))

    broken = jax.tree.map(lambda a: a, p)
    del broken["encoder"]["ResBlock_0"]["Conv_0"]
    broken["encoder"]["Extra_0"] = {"kernel": np.zeros(3)}
    broken["quantizer"]["codebook"] = np.zeros((7, 16), np.float32)
    with pytest.raises(ValueError) as e:
        from_official_tree(broken, other)
    msg = str(e.value)
    assert "missing" in msg and "encoder/ResBlock_0/Conv_0/kernel" in msg
    assert "unexpected" in msg and "encoder/Extra_0/kernel" in msg
    assert "mis-shaped" in msg and "quantizer/codebook" in msg


# ---- protocol, validation ------------------------------------------------------------------------
def test_protocol_registry_and_validation(tiny_model):
    built = make_tokenizer("vqgan", rngs=nnx.Rngs(0), **TINY)
    assert isinstance(built, VQGAN) and isinstance(built, Tokenizer) and isinstance(built, TrainableTokenizer)
    assert (built.codebook_size, built.num_levels, built.downsample_factor) == (64, 1, 4)
    assert VQGAN(VQGANConfig(**TINY), rngs=nnx.Rngs(0)).config == built.config
    hash(nnx.graphdef(built))  # static config must be hashable (jit caches on the graphdef)
    with_options = VQGAN(rngs=nnx.Rngs(0), quantizer_options={"kmeans_init": True}, **TINY)
    assert with_options.quantizer.kmeans_init and hash(with_options.config)
    with pytest.raises(ValueError, match="images must be \\[batch, H, W, 3\\]"):
        tiny_model.encode(jnp.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="images must be \\[batch, H, W, 3\\]"):
        tiny_model.encode(jnp.zeros((1, 16, 16, 1)))
    with pytest.raises(ValueError, match="multiples of the downsampling factor 4"):
        tiny_model.encode(jnp.zeros((1, 18, 16, 3)))
    with pytest.raises(ValueError, match="input_shape"):
        tiny_model.token_spec((30, 32, 3))
    with pytest.raises(ValueError, match="tokens must be \\[batch, height, width\\]"):
        tiny_model.decode(jnp.zeros((1, 16), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        tiny_model.decode(jnp.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="outside \\[0, 64\\)"):
        tiny_model.decode(jnp.full((1, 4, 4), 64, jnp.int32))
    with pytest.raises(ValueError, match="unknown VQGAN option"):
        VQGAN(base_chanels=8)
    with pytest.raises(ValueError, match="num_groups"):
        VQGAN(rngs=nnx.Rngs(0), **{**TINY, "num_groups": 5})


# ---- training ------------------------------------------------------------------------------------
def test_reconstruction_loss_falls_on_digits(digits16):
    model = VQGAN(rngs=nnx.Rngs(0), **TINY)
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, batch):
        def loss_fn(model):
            _, losses, _ = model.training_losses(batch)
            return sum(losses.values()), losses["reconstruction"]

        (_, recon), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return recon

    recon_losses = [float(train_step(model, optimizer, digits16)) for _ in range(20)]
    assert all(np.isfinite(recon_losses))
    assert np.mean(recon_losses[-3:]) < 0.3 * recon_losses[0], recon_losses
    assert recon_losses[-1] < recon_losses[5], recon_losses  # still falling after the first fit

    tokens = model.encode(digits16[:2])
    assert tokens.shape == (2, 4, 4) and tokens.dtype == jnp.int32
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 64
    recon = model.decode(tokens)
    assert recon.shape == (2, 16, 16, 3) and recon.dtype == jnp.float32


# ---- losses --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def discriminator():
    return L.StyleGANDiscriminator(16, base_channels=8, channel_multipliers=(1, 2), use_minibatch_std=True,
                                   minibatch_std_group=2, rngs=nnx.Rngs(0))


def test_discriminator_output_shape(discriminator, digits16):
    logits = discriminator(digits16[:4])
    assert logits.shape == (4,) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    with pytest.raises(ValueError, match="images must be"):
        discriminator(jnp.zeros((4, 32, 32, 3)))
    assert L.blur_downsample(jnp.ones((1, 7, 8, 2))).shape == (1, 4, 4, 2)
    np.testing.assert_allclose(L.blur_downsample(jnp.ones((1, 8, 8, 1)))[0, 1:3, 1:3, 0], 1.0, rtol=1e-6)
    x = jax.random.normal(jax.random.key(0), (4, 2, 2, 3))
    with_std = L.minibatch_stddev(x, 2)
    assert with_std.shape == (4, 2, 2, 4)
    expected = np.sqrt(np.var(np.asarray(x).reshape(2, 2, 2, 2, 3), axis=0) + 1e-8).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(with_std[:, 0, 0, -1], np.tile(expected, 2), rtol=1e-5)


def test_r1_penalty(discriminator, digits16):
    x = digits16[:4]
    assert float(L.r1_penalty(lambda images: jnp.full((images.shape[0],), 3.0), x)) == 0.0
    w = jax.random.normal(jax.random.key(2), x.shape[1:])
    linear = lambda images: jnp.sum(images * w, axis=(1, 2, 3))
    np.testing.assert_allclose(L.r1_penalty(linear, x), jnp.sum(w * w), rtol=1e-5)
    assert float(L.r1_penalty(discriminator, x)) > 0.0


def test_gan_losses_lecam_ema_schedule():
    zeros = jnp.zeros((3,))
    np.testing.assert_allclose(L.generator_loss(zeros), np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(L.discriminator_loss(zeros, zeros), 2 * np.log(2.0), rtol=1e-6)
    assert float(L.discriminator_loss(jnp.full(3, 10.0), jnp.full(3, -10.0))) < 1e-3

    ema = L.LecamEMA.create(decay=0.5).update(jnp.array([2.0, 4.0]), jnp.array([-2.0]))
    np.testing.assert_allclose([ema.real, ema.fake], [1.5, -1.0])
    reg = L.lecam_regularizer(jnp.array([0.0]), jnp.array([1.0]), ema)
    np.testing.assert_allclose(reg, 1.0 ** 2 + 0.5 ** 2)  # relu(0 - (-1))² + relu(1.5 - 1)²

    ema_params = {"w": jnp.zeros(2), "step": jnp.array(1)}
    from mgt.training.state import ema_update

    new = ema_update(ema_params, {"w": jnp.ones(2), "step": jnp.array(5)}, decay=0.9)
    np.testing.assert_allclose(new["w"], 0.1, rtol=1e-6)
    assert int(new["step"]) == 5
    assert [float(L.adversarial_weight_schedule(s, 10)) for s in (0, 9, 10, 11)] == [0.0, 0.0, 1.0, 1.0]
    cfg = L.TokenizerLossConfig()
    assert (cfg.adversarial_weight, cfg.r1_weight, cfg.perceptual_weight, cfg.ema_decay) == (0.1, 10.0, 0.1, 0.999)


def test_perceptual_loss(tmp_path):
    off = L.PerceptualLoss()
    assert not off.enabled
    with pytest.raises(ValueError, match="no feature network"):
        off(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="no perceptual weights file"):
        L.make_perceptual_loss(None, 0.1)
    assert float(L.make_perceptual_loss(None, 0.0)(jnp.zeros((1, 8, 8, 3)), jnp.ones((1, 8, 8, 3)))) == 0.0

    rng = np.random.default_rng(0)
    path = tmp_path / "tiny_vgg.npz"
    np.savez(path, kernel_0=rng.normal(size=(3, 3, 3, 4)).astype(np.float32), bias_0=np.zeros(4, np.float32),
             kernel_1=rng.normal(size=(3, 3, 4, 8)).astype(np.float32), bias_1=np.zeros(8, np.float32),
             pool_after=np.array([0]))
    loss = L.make_perceptual_loss(path, 0.5)
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    y = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    d = float(loss(x, y))
    assert d > 0 and d == pytest.approx(float(loss(y, x)), rel=1e-5)
    full = L.PerceptualLoss(path)
    assert full.enabled and full.feature_layers == (0, 1)
    np.testing.assert_allclose(jax.jit(full.apply)(full.params, x, y), d / 0.5, rtol=1e-5)
    np.savez(tmp_path / "bad.npz", kernel_0=np.zeros((3, 3, 3, 4), np.float32))
    with pytest.raises(ValueError, match="bias_0"):
        L.PerceptualLoss(tmp_path / "bad.npz")


def test_position_norm_makes_tokens_local_with_the_same_parameters():
    """norm="position": a latent depends on its receptive field alone (GroupNorm's image-wide statistics
    reach every latent); both norms have the same parameter tree; a bad name is a one-line error."""
    x = jnp.zeros((2, 64, 64, 3)).at[0, :4, :4].set(1.0)  # a bright corner in the first image only
    far = {}
    for norm in ("group", "position"):
        model = VQGAN(**TINY, norm=norm, rngs=nnx.Rngs(0))
        z = model.encode_latents(x)  # [2, 16, 16, 16]
        far[norm] = float(jnp.abs(z[0, 10:, 10:] - z[1, 10:, 10:]).max())  # 40 px and more from the corner
    assert far["position"] == 0.0 and far["group"] > 1e-3
    shapes = lambda m: jax.tree.map(jnp.shape, nnx.state(m, nnx.Param))  # noqa: E731
    assert shapes(VQGAN(**TINY, norm="position", rngs=nnx.Rngs(0))) == shapes(VQGAN(**TINY, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="VQGANConfig.norm must be one of"):
        VQGANConfig(norm="batch")
