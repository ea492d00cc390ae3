"""Vocabularies of the jointly trained text encoder: strings → int32 ids `[B, L]` with a mask.

  bytes  the UTF-8 bytes of the text, id = byte + 1 (257 ids; nothing to fit, any language)
  bpe    a byte-level BPE vocabulary (NFKC, lower case) built with the Hugging Face `tokenizers` library
         from the training captions (`fit`), saved as JSON in the workdir so a fresh `mgt sample` reads it

Id 0 is padding in both; every batch is padded (or truncated, with one warning) to `max_length`.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

VOCABULARIES = ("bytes", "bpe")
PAD_ID = 0


class _Truncation:
    """Warns once per vocabulary when a text is longer than `max_length` tokens."""

    def __init__(self):
        self.warned = False

    def __call__(self, lengths, max_length, what):
        longest = max(lengths, default=0)
        if longest > max_length and not self.warned:
            self.warned = True
            warnings.warn(f"a text is {longest} {what} long; texts are truncated to max_length={max_length} "
                          "(config.text.max_length)", stacklevel=3)


class ByteVocabulary:
    """UTF-8 bytes as ids 1..256 (0: padding)."""

    kind = "bytes"

    def __init__(self, max_length: int):
        self.max_length = int(max_length)
        self.size = 257
        self._truncated = _Truncation()

    @property
    def fitted(self) -> bool:
        return True

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`texts` → (ids int32 `[B, max_length]`, mask bool `[B, max_length]`)."""
        rows = [np.frombuffer(t.encode("utf-8"), np.uint8).astype(np.int32) + 1 for t in texts]
        self._truncated([len(r) for r in rows], self.max_length, "bytes")
        return _pad(rows, self.max_length)


class BpeVocabulary:
    """A byte-level BPE vocabulary of at most `size` ids fitted to the training captions."""

    kind = "bpe"

    def __init__(self, max_length: int, size: int, path: str | None = None):
        self.max_length, self.size, self.path = int(max_length), int(size), path
        self._tokenizer = None
        self._truncated = _Truncation()
        if path and os.path.exists(path):
            self._load(path)

    @property
    def fitted(self) -> bool:
        return self._tokenizer is not None

    def _load(self, path):
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(path)
        except Exception as e:  # the tokenizers library raises its own exception types
            raise ValueError(f"the text vocabulary {path} cannot be read ({e}); delete it to fit it again") from None

    def fit(self, texts: list[str], *, save: bool = True) -> None:
        """Build the vocabulary from `texts` (deterministic) and save it at `path` (when set and `save`)."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=self.size, special_tokens=["<pad>"], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(sorted(set(texts)), trainer=trainer)
        if tokenizer.get_vocab_size() > self.size:
            raise ValueError(f"config.text.vocab_size={self.size} is smaller than the byte alphabet (256 + 1)")
        self._tokenizer = tokenizer
        if self.path and save:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            tmp = self.path + ".tmp"
            tokenizer.save(tmp)
            os.replace(tmp, self.path)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self._tokenizer is None:
            where = f" (expected {self.path})" if self.path else ""
            raise ValueError(f"the BPE text vocabulary has not been fitted: train the transformer stage first{where}")
        rows = [np.asarray(e.ids, np.int32) for e in self._tokenizer.encode_batch(list(texts))]
        self._truncated([len(r) for r in rows], self.max_length, "tokens")
        return _pad(rows, self.max_length)


def _pad(rows, length) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(rows), length), PAD_ID, np.int32)
    for i, r in enumerate(rows):
        ids[i, : min(len(r), length)] = r[:length]
    return ids, ids != PAD_ID


def make_vocabulary(kind: str, *, max_length: int, size: int = 512, path: str | None = None):
    if kind == "bytes":
        return ByteVocabulary(max_length)
    if kind == "bpe":
        return BpeVocabulary(max_length, size, path)
    raise ValueError(f"config.text.vocabulary={kind!r}; expected one of {VOCABULARIES}")
