"""Make the tiny Hugging Face–format text encoders and the PyTorch reference outputs the parity tests use.

Run once, by hand, in a throwaway environment with torch and transformers (never in CI; the tests read
only what this writes). The committed files were made with torch 2.13.0+cpu and transformers 5.24.0:

    python -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/refenv/bin/pip install transformers safetensors tokenizers numpy
    /tmp/refenv/bin/python tests/data/text_encoders/make_reference.py

For each family (bert, t5, clip) it makes a small tokenizer with the `tokenizers` library from a few dozen
sentences about coloured shapes (WordPiece like BERT's and a Unigram + Metaspace model like T5's
sentencepiece, both built from the corpus' words and pieces; a trained byte-level BPE like CLIP's), builds
a tiny randomly initialised model (width 32, 2 layers, 4 heads, MLP 64; BertModel, T5EncoderModel with gated GELU,
CLIPTextModelWithProjection with quick GELU and projection width 24), saves it with
`save_pretrained(..., safe_serialization=True)` next to its tokenizer in `tests/data/text_encoders/<family>/`,
and writes `reference.npz` there: the texts, the token ids and attention mask HF's tokenizer gives at
`max_length` 16 (padded, one text truncated), and the model's outputs for them in float32.

Every parameter is redrawn at a scale where each one matters (layer-norm gains around 1, biases around
0.1, attention logits of order 1: HF's own initialisation leaves gains at 1 and biases at 0, which would
hide a missing term), then rounded to float16 and stored as float16 to keep the files small; the
reference is computed from those same rounded values in float32.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
)

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_LENGTH = 16
SEED = 0

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
SHAPES = ["circle", "square", "triangle", "star", "hexagon", "diamond"]
SIZES = ["small", "large", "tiny", "big"]
PLACES = ["on the left", "on the right", "at the top", "at the bottom", "in the centre"]


def corpus() -> list[str]:
    """A few dozen short captions of coloured shapes (deterministic)."""
    rng = np.random.default_rng(SEED)
    lines = []
    for i in range(48):
        size, colour, shape, place = (rng.choice(SIZES), rng.choice(COLOURS), rng.choice(SHAPES), rng.choice(PLACES))
        other_colour, other_shape = rng.choice(COLOURS), rng.choice(SHAPES)
        if i % 3 == 0:
            lines.append(f"a {size} {colour} {shape} {place}.")
        elif i % 3 == 1:
            lines.append(f"A {colour} {shape} next to a {other_colour} {other_shape}, {place}!")
        else:
            lines.append(f"two {colour} {shape}s and one {size} {other_colour} {other_shape} {place}")
    return lines


TEXTS = [
    "a red circle",
    "A small blue triangle next to a green square!",
    # longer than 16 tokens in every family: truncated
    "three large purple hexagons, two tiny yellow stars and one orange diamond at the bottom of a white canvas",
    "Zebra octagon?",  # words the tokenizers never saw: unknown pieces, byte-level pieces
]


def wordpiece_tokenizer() -> Tokenizer:
    """BERT's WordPiece pipeline over the corpus' words, its letters, and "##" letters to continue a word.

    Built from the corpus rather than with `WordPieceTrainer`, whose vocabulary changes from run to run.
    """
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = {w for line in corpus() for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))}
    letters = sorted({c for w in words for c in w})
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = special + letters + ["##" + c for c in letters] + sorted(words - set(letters))
    tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    tok.add_special_tokens(special)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tok


def unigram_tokenizer() -> Tokenizer:
    """A Unigram model like T5's sentencepiece: "▁"-prefixed words and pieces scored by log frequency.

    Built from counts rather than with `UnigramTrainer`, which on a corpus this small prunes the
    vocabulary to single characters.
    """
    counts: dict[str, int] = {}
    for line in corpus():
        for word in line.replace(",", " ,").replace(".", " .").replace("!", " !").split():
            for piece in ["▁" + word, word[:-1], word[-1:], "▁"] + list(word):  # words, stems, letters
                if piece:
                    counts[piece] = counts.get(piece, 0) + 1
    total = sum(counts.values())
    pieces = sorted(counts, key=lambda p: (-counts[p], p))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]  # T5's ids 0, 1, 2
    vocab += [(p, float(np.log(counts[p] / total))) for p in pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return tok


CLIP_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def byte_bpe_tokenizer() -> Tokenizer:
    """Byte-level BPE with CLIP's normaliser, split pattern, "</w>" word ends and BOS/EOS processor."""
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix="", unk_token=None))
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  end_of_word_suffix="</w>", special_tokens=[])
    tok.train_from_iterator(corpus(), trainer)
    # The trainer numbers its alphabet in a different order on every run (its merges are the same):
    # renumber, the unmerged pieces sorted and then each merge's result in merge order.
    trained = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    merged = list(dict.fromkeys("".join(m) for m in merges))
    pieces = sorted(set(trained["vocab"]) - set(merged)) + merged
    tok.model = models.BPE({p: i for i, p in enumerate(pieces)}, merges, end_of_word_suffix="</w>",
                           continuing_subword_prefix="", unk_token=None)
    # Like CLIP's vocabulary: the start and end tokens come last, so the end token has the largest id.
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    bos_id, eos_id = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.RobertaProcessing(
        ("<|endoftext|>", eos_id), ("<|startoftext|>", bos_id), trim_offsets=False, add_prefix_space=False)
    return tok


@torch.no_grad()
def randomise(model: torch.nn.Module) -> None:
    """Redraw every parameter so that each one changes the output, then round it to float16 values."""
    gen = torch.Generator().manual_seed(SEED)
    for name, p in model.named_parameters():
        if p.ndim == 1 and ("norm" in name.lower() or name.endswith("LayerNorm.weight")) and name.endswith("weight"):
            new = 1.0 + 0.2 * torch.randn(p.shape, generator=gen)  # layer-norm gains
        elif p.ndim == 1:
            new = 0.1 * torch.randn(p.shape, generator=gen)  # biases
        elif "embed" in name or "relative_attention_bias" in name:
            new = torch.randn(p.shape, generator=gen)  # token, position and bias tables
        else:
            new = torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5  # nn.Linear [out, in]
        p.copy_(new.half().float())


def save_family(name: str, model: torch.nn.Module, tok: Tokenizer, special: dict, model_cls) -> tuple:
    """Save the model (float16) and tokenizer; reload both as HF would and return (model, hf_tokenizer)."""
    folder = os.path.join(HERE, name)
    shutil.rmtree(folder, ignore_errors=True)
    randomise(model)
    model.half().save_pretrained(folder, safe_serialization=True)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=MAX_LENGTH, **special)
    hf_tok.save_pretrained(folder)
    hf_tok = PreTrainedTokenizerFast.from_pretrained(folder)
    model = model_cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    return folder, model, hf_tok


def tokenize(hf_tok) -> dict:
    batch = hf_tok(TEXTS, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def write_reference(folder: str, batch: dict, **outputs) -> None:
    arrays = {"texts": np.array(TEXTS), "max_length": np.array(MAX_LENGTH),
              "input_ids": batch["input_ids"].numpy().astype(np.int32),
              "attention_mask": batch["attention_mask"].numpy().astype(bool)}
    arrays.update({k: v.detach().numpy().astype(np.float32) for k, v in outputs.items()})
    np.savez_compressed(os.path.join(folder, "reference.npz"), **arrays)
    print(folder, {k: v.shape for k, v in arrays.items()})


@torch.no_grad()
def make_bert() -> None:
    tok = wordpiece_tokenizer()
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32, hidden_act="gelu", layer_norm_eps=1e-12,
                        pad_token_id=tok.token_to_id("[PAD]"))
    special = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    folder, model, hf_tok = save_family("bert", BertModel(config), tok, special, BertModel)
    tok.model.save(folder)  # vocab.txt, for the tokenizer.json-less path
    with open(os.path.join(folder, "tokenizer_config.json")) as f:
        tok_config = json.load(f)
    tok_config["do_lower_case"] = True
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(tok_config, f, indent=2)
    # sentence-transformers' mean pooling, as in all-MiniLM-L6-v2
    os.makedirs(os.path.join(folder, "1_Pooling"))
    with open(os.path.join(folder, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
                   "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False}, f, indent=2)
    batch = tokenize(hf_tok)
    out = model(**batch, token_type_ids=torch.zeros_like(batch["input_ids"]))
    mask = batch["attention_mask"][..., None].float()
    mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # sentence-transformers' Pooling
    write_reference(folder, batch, last_hidden_state=out.last_hidden_state, pooled=mean,
                    pooler_output=out.pooler_output)


@torch.no_grad()
def make_t5() -> None:
    tok = unigram_tokenizer()
    config = T5Config(vocab_size=tok.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=16,
                      relative_attention_max_distance=12, layer_norm_epsilon=1e-6, tie_word_embeddings=False,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    special = dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    folder, model, hf_tok = save_family("t5", T5EncoderModel(config), tok, special, T5EncoderModel)
    batch = tokenize(hf_tok)
    out = model(**batch)
    write_reference(folder, batch, last_hidden_state=out.last_hidden_state)


@torch.no_grad()
def make_clip() -> None:
    tok = byte_bpe_tokenizer()
    bos_id, eos_id = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    config = CLIPTextConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32,
                            hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=24,
                            bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    # as openai's CLIP: the end token pads
    special = dict(bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                   unk_token="<|endoftext|>")
    folder, model, hf_tok = save_family("clip", CLIPTextModelWithProjection(config), tok, special,
                                        CLIPTextModelWithProjection)
    batch = tokenize(hf_tok)
    # No attention mask, as CLIP is used (and was trained): the causal mask alone keeps real tokens from
    # seeing the padding, and the padded positions' outputs are those of the padded sequence.
    text_out = model.text_model(input_ids=batch["input_ids"])
    projected = model(input_ids=batch["input_ids"]).text_embeds
    write_reference(folder, batch, last_hidden_state=text_out.last_hidden_state, pooled=text_out.pooler_output,
                    pooled_projected=projected)


if __name__ == "__main__":
    torch.manual_seed(SEED)
    make_bert()
    make_t5()
    make_clip()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(HERE) for f in fs)
    print(f"total size of {HERE}: {total / 1024:.0f} KiB")
