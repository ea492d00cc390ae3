"""Tests of mgt.pretrained.maskgit: loading the official MaskGIT checkpoint format.

Synthetic checkpoints are written in the official format (the official module names, random small
weights, `flax.serialization.to_bytes({"params": tree})`), loaded, and compared with independent
float64 numpy evaluations of the official forward passes written from the description in
shared/reference/maskgit_official.md. The full-size trees (from the reference parameter list) are
checked abstractly with ShapeDtypeStructs: nothing of that size is allocated.
"""

from __future__ import annotations

import math
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, serialization

from mgt.modalities.image.editing import class_edit
from mgt.pretrained import maskgit
from mgt.pretrained import maskgit_convert as convert
from mgt.sampling import model_logits_fn
from mgt.tokenizers.vqgan import VQGANConfig
from mgt.transformer import TransformerConfig

TREE_FILE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "maskgit_official_param_tree.txt"
_FALLBACK_TREE_FILE = pathlib.Path("/work/shared/reference/maskgit_official_param_tree.txt")

# the tiny synthetic models
LAYERS, HIDDEN, HEADS, MLP = 2, 32, 4, 64
CODES, CLASSES = 16, 10
VOCAB = CODES + CLASSES + 1  # mask id 26
GRID = 4
SEQ = 1 + GRID * GRID
BASE, MULTS, RES_BLOCKS, DIM = 32, (1, 1, 2), 1, 8  # downsampling factor 4: 16 px images
IMAGE = GRID * 2 ** (len(MULTS) - 1)


# ---- synthetic official trees --------------------------------------------------------------------
def _official_transformer_tree(rng: np.random.Generator) -> dict:
    """Random weights with the official module names and shapes (see the reference tree)."""
    normal = lambda *shape, scale=1.0: (scale * rng.standard_normal(shape)).astype(np.float32)
    ln = lambda: {"scale": 1.0 + normal(HIDDEN, scale=0.1), "bias": normal(HIDDEN, scale=0.1)}
    dense = lambda i, o: {"kernel": normal(i, o, scale=1 / math.sqrt(i)), "bias": normal(o, scale=0.1)}
    hd = HIDDEN // HEADS
    head = lambda: {"kernel": normal(HIDDEN, HEADS, hd, scale=1 / math.sqrt(HIDDEN)),
                    "bias": normal(HEADS, hd, scale=0.1)}
    tree = {
        "Embed_0": {"word_embeddings": {"embedding": normal(VOCAB, HIDDEN)},
                    "position_embeddings": {"embedding": normal(SEQ, HIDDEN, scale=0.5)},
                    "embeddings_ln": ln()},
        "MlmLayer_0": {"mlm_dense": dense(HIDDEN, HIDDEN), "mlm_ln": ln(),
                       "mlm_bias": {"bias": normal(VOCAB, scale=0.1)}},
    }
    for n in range(LAYERS):
        tree[f"TransformerLayer_{n}"] = {
            "Attention_0": {
                "self_attention": {"query": head(), "key": head(), "value": head(),
                                   "out": {"kernel": normal(HEADS, hd, HIDDEN, scale=1 / math.sqrt(HIDDEN)),
                                           "bias": normal(HIDDEN, scale=0.1)}},
                "attention_output_ln": ln()},
            "Mlp_0": {"intermediate_output": dense(HIDDEN, MLP), "layer_output": dense(MLP, HIDDEN),
                      "layer_output_ln": ln()},
        }
    return tree


def _official_vqgan_tree(rng: np.random.Generator) -> dict:
    """The official VQGAN layout: encoder Conv_0, ResBlock_n, GroupNorm_0, Conv_1; decoder Conv_0,
    ResBlock_n, Conv_1..Conv_{L-1} (upsampling), GroupNorm_0, Conv_L; quantizer codebook."""
    normal = lambda *shape, scale=1.0: (scale * rng.standard_normal(shape)).astype(np.float32)

    def conv(cin, cout, k, bias):
        p = {"kernel": normal(k, k, cin, cout, scale=1 / math.sqrt(k * k * cin))}
        if bias:
            p["bias"] = normal(cout, scale=0.1)
        return p

    gn = lambda c: {"scale": 1.0 + normal(c, scale=0.1), "bias": normal(c, scale=0.1)}

    def block(cin, cout):
        p = {"GroupNorm_0": gn(cin), "Conv_0": conv(cin, cout, 3, False), "GroupNorm_1": gn(cout),
             "Conv_1": conv(cout, cout, 3, False)}
        if cin != cout:
            p["Conv_2"] = conv(cout, cout, 1, False)
        return p

    enc, width, n = {"Conv_0": conv(3, BASE, 3, False)}, BASE, 0
    for m in MULTS + (MULTS[-1],):
        for _ in range(RES_BLOCKS):
            enc[f"ResBlock_{n}"], width, n = block(width, BASE * m), BASE * m, n + 1
    enc["GroupNorm_0"], enc["Conv_1"] = gn(width), conv(width, DIM, 1, True)
    dec, n, c = {"Conv_0": conv(DIM, width, 3, True)}, 0, 1
    for _ in range(RES_BLOCKS):
        dec[f"ResBlock_{n}"], n = block(width, width), n + 1
    for i in reversed(range(len(MULTS))):
        for _ in range(RES_BLOCKS):
            dec[f"ResBlock_{n}"], width, n = block(width, BASE * MULTS[i]), BASE * MULTS[i], n + 1
        if i > 0:
            dec[f"Conv_{c}"], c = conv(width, width, 3, True), c + 1
    dec["GroupNorm_0"], dec[f"Conv_{c}"] = gn(width), conv(width, 3, 3, True)
    return {"encoder": enc, "decoder": dec, "quantizer": {"codebook": normal(CODES, DIM)}}


def _write_official(path, tree):
    """Serialise exactly as the official code does."""
    path.write_bytes(serialization.to_bytes({"params": tree}))
    return path


# ---- independent float64 numpy references ----------------------------------------------------------
def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _np_layer_norm(x, p, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = np.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_gelu(x):  # the tanh approximation (jax.nn.gelu's default)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _np_dense(x, p):
    return x @ p["kernel"] + p["bias"]


def _np_official_logits(tree, ids):
    """The official BERT-style forward pass: float64 logits [B, L, vocab]."""
    t = _f64(tree)
    emb = t["Embed_0"]
    x = emb["word_embeddings"]["embedding"][ids] + emb["position_embeddings"]["embedding"][None, : ids.shape[1]]
    x = _np_layer_norm(x, emb["embeddings_ln"])
    n = 0
    while f"TransformerLayer_{n}" in t:
        att, mlp = t[f"TransformerLayer_{n}"]["Attention_0"], t[f"TransformerLayer_{n}"]["Mlp_0"]
        sa = att["self_attention"]
        q, k, v = (np.einsum("bld,dhk->blhk", x, sa[name]["kernel"]) + sa[name]["bias"]
                   for name in ("query", "key", "value"))
        scores = np.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(q.shape[-1])
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        y = np.einsum("bhqs,bshk->bqhk", weights, v)
        x = _np_layer_norm(x + np.einsum("bqhk,hkd->bqd", y, sa["out"]["kernel"]) + sa["out"]["bias"],
                           att["attention_output_ln"])
        h = _np_dense(_np_gelu(_np_dense(x, mlp["intermediate_output"])), mlp["layer_output"])
        x = _np_layer_norm(x + h, mlp["layer_output_ln"])
        n += 1
    mlm = t["MlmLayer_0"]
    h = _np_layer_norm(_np_gelu(_np_dense(x, mlm["mlm_dense"])), mlm["mlm_ln"])
    return h @ emb["word_embeddings"]["embedding"].T + mlm["mlm_bias"]["bias"]


def _np_conv(x, p, bias=True):  # 'SAME', stride 1, HWIO kernel
    kernel = p["kernel"]
    kh, kw = kernel.shape[:2]
    h, w = x.shape[1:3]
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = sum(np.einsum("bhwc,co->bhwo", xp[:, i:i + h, j:j + w], kernel[i, j]) for i in range(kh) for j in range(kw))
    return out + p["bias"] if bias and "bias" in p else out


def _np_group_norm(x, p, groups=32, eps=1e-6):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    g = (g - g.mean((1, 2, 4), keepdims=True)) / np.sqrt(g.var((1, 2, 4), keepdims=True) + eps)
    return g.reshape(x.shape) * p["scale"] + p["bias"]


def _np_swish(x):
    return x / (1.0 + np.exp(-x))


def _np_res_block(x, p):
    h = _np_conv(_np_swish(_np_group_norm(x, p["GroupNorm_0"])), p["Conv_0"])
    h = _np_conv(_np_swish(_np_group_norm(h, p["GroupNorm_1"])), p["Conv_1"])
    return h + _np_conv(h, p["Conv_2"]) if "Conv_2" in p else h + x  # the official shortcut quirk


def _np_encoder(tree, images):
    e = _f64(tree)["encoder"]
    x, n, levels = _np_conv(np.asarray(images, np.float64), e["Conv_0"]), 0, len(MULTS)
    for level in range(levels + 1):
        for _ in range(RES_BLOCKS):
            x, n = _np_res_block(x, e[f"ResBlock_{n}"]), n + 1
        if level < levels - 1:
            b, h, w, c = x.shape
            x = x.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4))
    return _np_conv(_np_swish(_np_group_norm(x, e["GroupNorm_0"])), e["Conv_1"])


def _np_decoder(tree, codes):
    d = _f64(tree)["decoder"]
    x, n, c = _np_conv(codes, d["Conv_0"]), 0, 1
    for _ in range(RES_BLOCKS):
        x, n = _np_res_block(x, d[f"ResBlock_{n}"]), n + 1
    for i in reversed(range(len(MULTS))):
        for _ in range(RES_BLOCKS):
            x, n = _np_res_block(x, d[f"ResBlock_{n}"]), n + 1
        if i > 0:
            x, c = _np_conv(x.repeat(2, axis=1).repeat(2, axis=2), d[f"Conv_{c}"]), c + 1
    return _np_conv(_np_swish(_np_group_norm(x, d["GroupNorm_0"])), d[f"Conv_{c}"])


def _assert_close(ours, reference, rtol=1e-5):
    """Relative error against the reference's scale: max |ours − ref| <= rtol · max |ref|."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape
    err = np.abs(ours - reference).max() / np.abs(reference).max()
    assert err < rtol, f"max relative error {err:.2e} >= {rtol:.0e}"


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(tokenizer tree, transformer tree, tokenizer file, transformer file)."""
    rng = np.random.default_rng(0)
    tokenizer_tree, transformer_tree = _official_vqgan_tree(rng), _official_transformer_tree(rng)
    root = tmp_path_factory.mktemp("maskgit")
    return (tokenizer_tree, transformer_tree, _write_official(root / "tokenizer_checkpoint", tokenizer_tree),
            _write_official(root / "maskgit_checkpoint", transformer_tree))


@pytest.fixture(scope="module")
def pipe(official):
    _, _, tokenizer_file, transformer_file = official
    return maskgit.load(tokenizer_file, transformer_file, num_classes=CLASSES)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(size=(2, IMAGE, IMAGE, 3)).astype(np.float32)


# ---- sizes -----------------------------------------------------------------------------------------
def test_sizes_inferred_from_the_files(pipe):
    c = pipe.transformer_config
    assert c == TransformerConfig(grid=(GRID, GRID), codebook_size=CODES, num_classes=CLASSES, num_layers=LAYERS,
                                  hidden_dim=HIDDEN, num_heads=HEADS, mlp_dim=MLP, block_style="maskgit",
                                  conditioning="class_token", dropout_rate=0.1, attention_dropout_rate=0.1)
    assert pipe.vqgan_config == VQGANConfig(base_channels=BASE, channel_multipliers=MULTS, num_res_blocks=RES_BLOCKS,
                                            embedding_dim=DIM, codebook_size=CODES)
    assert pipe.image_size == IMAGE and pipe.grid == (GRID, GRID)
    assert pipe.mask_id == VOCAB - 1 and pipe.vocab_size == VOCAB
    assert pipe.tokenizer.token_spec((IMAGE, IMAGE, 3)).grid == (GRID, GRID)


def _reference_trees() -> dict[str, dict]:
    """The reference file's trees as nested dicts of ShapeDtypeStructs; the transformer's
    TransformerLayer_0 is repeated for layers 0..23 as the file's header says."""
    path = TREE_FILE if TREE_FILE.exists() else _FALLBACK_TREE_FILE
    if not path.exists():
        pytest.skip(f"reference file {TREE_FILE} not available")
    trees, current = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = " ".join(line[3:].replace(":", " ").split()[:2])  # "transformer 256", "tokenizer 512", ...
            trees[current] = {}
        elif line.startswith("params/") and current:
            m = re.fullmatch(r"params/(\S+) \(([\d, ]*)\) float32", line)
            assert m, line
            shape = tuple(int(d) for d in m.group(2).replace(" ", "").split(",") if d)
            trees[current][tuple(m.group(1).split("/"))] = jax.ShapeDtypeStruct(shape, jnp.float32)
    for name, flat in trees.items():
        if name.startswith("transformer"):
            layer0 = {k: v for k, v in flat.items() if k[0] == "TransformerLayer_0"}
            for n in range(1, 24):
                flat.update({(f"TransformerLayer_{n}",) + k[1:]: v for k, v in layer0.items()})
    return {name: {"params": convert.nest_tree(flat)} for name, flat in trees.items()}


def _shapes(tree):
    return {k: tuple(v.shape) for k, v in convert.flatten_tree(tree["params"] if "params" in tree else tree).items()}


@pytest.mark.parametrize("size", [256, 512])
def test_full_size_official_trees_abstractly(size):
    trees = _reference_trees()
    transformer_tree, tokenizer_tree = trees[f"transformer {size}"], trees[f"tokenizer {size}"]
    assert len(_shapes(transformer_tree)) == 393

    config = convert.infer_transformer_config(transformer_tree)
    assert config == TransformerConfig.maskgit_imagenet(size)
    abstract = convert.abstract_transformer(config)
    state = convert.transformer_from_official_tree(transformer_tree, abstract)  # ShapeDtypeStructs in, out
    ours = {p: v.get_value() for p, v in nnx.to_flat_state(state)}
    target = {p: v.get_value() for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
    assert {p: v.shape for p, v in ours.items()} == {p: v.shape for p, v in target.items()}
    assert all(isinstance(v, jax.ShapeDtypeStruct) for v in ours.values())
    assert (ours[("word_embeddings",)].shape == (1, 2025, 768)
            and ours[("blocks", "self_attention", "query", "kernel")].shape == (24, 768, 16, 48))
    exported = _shapes(convert.transformer_to_official_tree(abstract))
    assert exported == _shapes(transformer_tree)
    assert sum(math.prod(s) for s in exported.values()) == {256: 172_457_193, 512: 173_047_017}[size]

    vq_config = convert.infer_vqgan_config(tokenizer_tree)
    assert vq_config == VQGANConfig()  # the official tokenizer's sizes are VQGANConfig's defaults
    vq_state = convert.vqgan_from_official_tree(tokenizer_tree, convert.abstract_vqgan(vq_config))
    assert sum(math.prod(v.get_value().shape) for _, v in nnx.to_flat_state(vq_state)) == 54_515_587

    # the whole loader path, abstractly: an abstract pipeline of the right sizes
    pipeline = maskgit.from_official_trees(tokenizer_tree, transformer_tree)
    assert pipeline.image_size == size and pipeline.mask_id == 2024 and pipeline.grid == (size // 16,) * 2


# ---- round trip ------------------------------------------------------------------------------------
def test_export_round_trip(pipe, official, tmp_path):
    tokenizer_tree, transformer_tree, _, _ = official
    exported_tokenizer, exported_transformer = pipe.official_trees()
    for exported, written in ((exported_tokenizer, tokenizer_tree), (exported_transformer, transformer_tree)):
        got, want = convert.flatten_tree(exported["params"]), convert.flatten_tree(written)
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg="/".join(key))
    pipe.save(tmp_path / "tok", tmp_path / "tr")
    for path, written in ((tmp_path / "tok", tokenizer_tree), (tmp_path / "tr", transformer_tree)):
        restored = serialization.msgpack_restore(path.read_bytes())  # readable as the official code reads it
        assert set(restored) == {"params"}
        jax.tree.map(np.testing.assert_array_equal, restored["params"], written)


# ---- parity with the official forward passes --------------------------------------------------------
def test_official_logits_match_numpy_reference(pipe, official):
    rng = np.random.default_rng(2)
    labels = np.array([0, 3, 9])
    codes = rng.integers(0, CODES, (3, GRID * GRID))
    codes[rng.uniform(size=codes.shape) < 0.4] = VOCAB - 1  # masked positions
    codes[1, :5] = -1  # the official config's mask id, wrapped to the last row
    ids = np.concatenate([CODES + labels[:, None], codes], 1).astype(np.int32)
    logits = pipe.official_logits(ids)
    assert logits.shape == (3, SEQ, VOCAB) and logits.dtype == jnp.float32
    reference = _np_official_logits(official[1], np.where(ids < 0, ids + VOCAB, ids))
    _assert_close(logits, reference)

    with pytest.raises(ValueError, match=r"input_ids must be an integer array \[batch, 17\]"):
        pipe.official_logits(ids[:, :5])
    with pytest.raises(ValueError, match="outside"):
        pipe.official_logits(np.full((1, SEQ), VOCAB, np.int32))


def test_tokenizer_matches_numpy_reference(pipe, official, images):
    tokenizer_tree = official[0]
    latents = pipe.tokenizer.encode_latents(images)
    reference_latents = _np_encoder(tokenizer_tree, images)
    _assert_close(latents, reference_latents)

    tokens = pipe.tokenizer.encode(images)
    assert tokens.shape == (2, GRID, GRID) and tokens.dtype == jnp.int32
    codebook = np.asarray(tokenizer_tree["quantizer"]["codebook"], np.float64)
    distances = np.square(np.asarray(latents, np.float64)[..., None, :] - codebook).sum(-1)
    np.testing.assert_array_equal(tokens, distances.argmin(-1))  # nearest code of the encoder's latent
    np.testing.assert_array_equal(tokens, np.square(reference_latents[..., None, :] - codebook).sum(-1).argmin(-1))

    as_uint8 = np.round(images * 255).astype(np.uint8)  # uint8 images are scaled to [0, 1]
    np.testing.assert_array_equal(pipe.tokenizer.encode(as_uint8), pipe.tokenizer.encode(as_uint8 / np.float32(255)))

    decoded = pipe.tokenizer.decode(tokens)
    assert decoded.shape == images.shape and decoded.dtype == jnp.float32
    _assert_close(decoded, _np_decoder(tokenizer_tree, codebook[np.asarray(tokens)]))


# ---- generation and editing ----------------------------------------------------------------------
def test_generate(pipe):
    key = jax.random.key(0)
    images, tokens = pipe.generate([1, 7], key, num_steps=4, return_tokens=True)
    assert images.shape == (2, IMAGE, IMAGE, 3) and images.dtype == jnp.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert tokens.shape == (2, GRID, GRID) and int(tokens.min()) >= 0 and int(tokens.max()) < CODES
    np.testing.assert_allclose(images, np.clip(pipe.tokenizer.decode(tokens), 0, 1), atol=1e-5)
    again = pipe.generate(np.array([1, 7]), key, num_steps=4)  # the same compiled function, same result
    np.testing.assert_array_equal(again, images)

    with pytest.raises(ValueError, match="no null class"):
        pipe.generate([1], key, guidance=2.0)
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
        pipe.generate([10], key)
    with pytest.raises(ValueError, match="unknown decoding option"):
        pipe.generate([1], key, steps=3)


def test_edit_keeps_far_pixels_and_equals_class_edit(pipe, images):
    key = jax.random.key(3)
    box = (0, 0, 4, 4)  # one token cell; grown by one cell: token rows/cols 0..1 = pixels 0..7
    result = pipe.edit(images, box, 5, key)
    assert result.image.shape == images.shape
    expected_mask = np.zeros((GRID, GRID), bool)
    expected_mask[:2, :2] = True
    np.testing.assert_array_equal(result.token_mask, np.broadcast_to(expected_mask, (2, GRID, GRID)))
    # at 16 px the official blur radius is 16/16 - 1 = 0: everything outside the masked cells is the input
    outside = ~np.kron(expected_mask, np.ones((4, 4), bool))
    np.testing.assert_array_equal(np.asarray(result.image)[:, outside], images[:, outside])
    np.testing.assert_array_equal(np.asarray(result.tokens)[:, ~expected_mask],
                                  np.asarray(pipe.tokenizer.encode(images))[:, ~expected_mask])

    # the same edit through mgt.modalities.image.editing.class_edit
    labels = jnp.full((2,), 5, jnp.int32)
    reference = class_edit(pipe.tokenizer, model_logits_fn(pipe.transformer, labels=labels), images, box, key,
                           mask_id=pipe.mask_id)
    np.testing.assert_array_equal(result.tokens, reference.tokens)
    np.testing.assert_allclose(result.image, reference.image, atol=1e-6)

    single = pipe.edit(images[0], box, 5, key)  # unbatched in, unbatched out
    assert single.image.shape == images.shape[1:] and single.tokens.shape == (GRID, GRID)
    with pytest.raises(ValueError, match="image must be"):
        pipe.edit(images[:, :8], box, 5, key)


# ---- errors --------------------------------------------------------------------------------------
def test_corrupted_and_truncated_files(official, tmp_path):
    _, _, tokenizer_file, transformer_file = official
    corrupted = tmp_path / "corrupted"
    corrupted.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated"
    data = transformer_file.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"transformer_path='.*corrupted' is not a Flax msgpack checkpoint"):
        maskgit.load(tokenizer_file, corrupted, num_classes=CLASSES)
    with pytest.raises(ValueError, match=r"tokenizer_path='.*truncated' is not a Flax msgpack checkpoint"):
        maskgit.load(truncated, transformer_file, num_classes=CLASSES)
    with pytest.raises(FileNotFoundError, match="tokenizer_path="):
        maskgit.load(tmp_path / "absent", transformer_file)


def test_missing_unexpected_and_misshaped_keys_are_listed(official, tmp_path):
    tokenizer_tree, transformer_tree, tokenizer_file, _ = official
    broken = jax.tree.map(lambda a: a, transformer_tree)
    del broken["TransformerLayer_1"]["Mlp_0"]["layer_output"]["bias"]
    broken["TransformerLayer_0"]["Attention_0"]["extra"] = {"kernel": np.zeros((3,), np.float32)}
    broken["MlmLayer_0"]["mlm_bias"]["bias"] = np.zeros((5,), np.float32)
    path = _write_official(tmp_path / "broken", broken)
    with pytest.raises(ValueError) as e:
        maskgit.load(tokenizer_file, path, num_classes=CLASSES)
    msg = str(e.value)
    assert "transformer_path=" in msg and "broken" in msg
    assert "missing (1): ['TransformerLayer_1/Mlp_0/layer_output/bias']" in msg
    assert "unexpected (1): ['TransformerLayer_0/Attention_0/extra/kernel']" in msg
    assert "mis-shaped (1): ['MlmLayer_0/mlm_bias/bias: got (5,), expected (27,)']" in msg

    broken_tok = jax.tree.map(lambda a: a, tokenizer_tree)
    del broken_tok["decoder"]["ResBlock_2"]["Conv_2"]
    broken_tok["encoder"]["GroupNorm_0"]["scale"] = np.zeros((7,), np.float32)
    with pytest.raises(ValueError) as e:
        maskgit.from_official_trees(broken_tok, transformer_tree, num_classes=CLASSES)
    msg = str(e.value)
    assert "missing (1): ['decoder/ResBlock_2/Conv_2/kernel']" in msg
    assert "mis-shaped (1): ['encoder/GroupNorm_0/scale: got (7,), expected (64,)']" in msg

    with pytest.raises(ValueError, match=r"num_groups=5 does not divide the channel widths \[32, 64\]"):
        maskgit.from_official_trees(tokenizer_tree, transformer_tree, num_classes=CLASSES, num_groups=5)
    # without num_classes the tokenizer's codebook splits the vocabulary: 27 rows = 16 codes + 10 classes + mask
    inferred = maskgit.from_official_trees(tokenizer_tree, transformer_tree)
    assert (inferred.transformer_config.num_classes, inferred.transformer_config.codebook_size) == (CLASSES, CODES)
    with pytest.raises(ValueError, match=r"vocabulary of 27 rows does not split as .*num_classes=1000"):
        maskgit.from_official_trees(tokenizer_tree, transformer_tree, num_classes=1000)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['heads'\]"):
        maskgit.from_official_trees(tokenizer_tree, transformer_tree, heads=4)
    with pytest.raises(ValueError, match="block_style='modern': the official MaskGIT transformer has"):
        maskgit.from_official_trees(tokenizer_tree, transformer_tree, num_classes=CLASSES, block_style="modern")


def test_convert_to_workdir_then_sample_and_finetune(official, tmp_path, capsys):
    from PIL import Image

    from mgt import cli
    from mgt.training import load_config, train

    _, _, tokenizer_file, transformer_file = official
    wd = str(tmp_path / "converted")
    assert cli.main(["convert", "maskgit", "--tokenizer", str(tokenizer_file), "--transformer",
                     str(transformer_file), "--num-classes", str(CLASSES), "--workdir", wd]) == 0
    out = str(tmp_path / "s.npz")
    assert cli.main(["sample", "--workdir", wd, "--labels", "9", "--num", "2", "--steps", "2", "--out", out]) == 0
    data = np.load(out)
    assert data["images"].shape == (2, IMAGE, IMAGE, 3) and data["labels"].tolist() == [9, 9]
    assert cli.main(["sample", "--workdir", wd, "--guidance", "1.5", "--labels", "1", "--out", out]) == 1
    assert "null condition" in capsys.readouterr().err
    # fine-tune the converted transformer for two steps on a folder of images
    folder = tmp_path / "images" / "cats"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    config = load_config(wd)
    config.data.path = str(tmp_path / "images")
    config.data.num_workers = 0
    config.transformer_train.batch_size = 4
    config.transformer_train.steps = 2
    config.log_every = config.checkpoint_every = 1
    config.sample_every = 0
    state = train(config, wd, stage="transformer", quiet=True)["transformer"]
    assert int(state["step"]) == 2
    assert sorted(os.listdir(os.path.join(wd, "transformer", "checkpoints")))[-1] == "2"
