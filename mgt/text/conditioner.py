"""`TextConditioner`: the config's `text` section — strings in, a `mgt.Condition` out.

It is the one place where text meets the engine, for any modality: a task with `config.text.encoder`
set gives its batches' captions (`"text"`) to it, and `mgt sample --prompt` / `pipe.generate(prompts=)`
go through it. The engine only ever sees the arrays it returns.

  config.text.encoder   "trainable": a small encoder trained with the transformer (`mgt.context_encoder`)
                        over a `bytes` or `bpe` vocabulary (`config.text.vocabulary`); or a frozen
                        encoder by name ("minilm", "bert", "t5", "clip", `mgt.text.registered_encoders()`)
                        or import path, read from the Hugging Face folder `config.text.path`
  config.text.max_length  L: token positions per text (longer texts are truncated with one warning)

Frozen encoders give `Condition(context float32 [B, L, D], context_mask bool [B, L])`; the trainable one
gives `Condition(context_ids int32 [B, L], context_mask)` and the model embeds the ids.
"""

from __future__ import annotations

import os

import numpy as np

from mgt.condition import Condition
from mgt.text.vocabulary import make_vocabulary

TRAINABLE = "trainable"
VOCABULARY_FILE = "text_vocabulary.json"


class TextConditioner:
    """See the module docstring. `workdir`: where a fitted vocabulary is kept (`use_workdir`)."""

    def __init__(self, text_config, workdir: str | None = None):
        self.config = text_config
        self.name = str(text_config.encoder)
        self.max_length = int(text_config.get("max_length", 32))
        if self.max_length < 1:
            raise ValueError(f"config.text.max_length={self.max_length}; expected >= 1")
        self.trainable = self.name == TRAINABLE
        self._encoder = None
        self.vocabulary = None
        if self.trainable:
            self.vocabulary = make_vocabulary(str(text_config.get("vocabulary", "bytes")), max_length=self.max_length,
                                              size=int(text_config.get("vocab_size", 512)))
        if workdir:
            self.use_workdir(workdir)

    def use_workdir(self, workdir: str) -> None:
        """Keep (and read) a fitted vocabulary in `workdir/transformer/`."""
        if self.vocabulary is not None and self.vocabulary.kind == "bpe":
            self.vocabulary = make_vocabulary("bpe", max_length=self.max_length, size=self.vocabulary.size,
                                              path=os.path.join(workdir, "transformer", VOCABULARY_FILE))

    # ---- the model's side ---------------------------------------------------------------------------
    @property
    def encoder(self):
        """The frozen encoder (built on first use)."""
        if self.trainable:
            raise ValueError("the trainable text encoder lives in the model (mgt.context_encoder)")
        if self._encoder is None:
            from mgt.text.base import make_encoder

            kwargs = {"max_length": self.max_length}
            if self.config.get("path", None):
                kwargs["path"] = str(self.config.path)
            try:
                self._encoder = make_encoder(self.name, **kwargs)
            except ValueError as e:
                raise ValueError(f"config.text.encoder={self.name!r}: {e}") from None
            except TypeError as e:  # e.g. no folder given to an encoder that reads one
                missing = "; set config.text.path (a Hugging Face folder)" if "path" not in kwargs else ""
                raise ValueError(f"config.text.encoder={self.name!r}: {e}{missing}") from None
        return self._encoder

    def model_fields(self) -> dict:
        """`TransformerConfig` fields this text input fixes: context width and length (and the
        trainable encoder's vocabulary and depth)."""
        if self.trainable:
            return dict(context_dim=int(self.config.get("width", 128)), context_len=self.max_length,
                        context_vocab_size=self.vocabulary.size, context_layers=int(self.config.get("layers", 2)),
                        context_position_encoding=str(self.config.get("positions", "learned")))
        return dict(context_dim=int(self.encoder.width), context_len=self.max_length, context_vocab_size=0)

    # ---- strings → condition ------------------------------------------------------------------------
    @property
    def needs_fit(self) -> bool:
        return self.vocabulary is not None and not self.vocabulary.fitted

    def fit(self, texts: list[str], *, save: bool = True) -> None:
        """Fit the vocabulary to the training captions (BPE; a no-op otherwise); `save` writes it."""
        if self.needs_fit:
            self.vocabulary.fit(list(texts), save=save)

    def check_prompts(self, prompts, argument: str = "prompts") -> list[str]:
        """A non-empty list of strings (one string is a list of one); ValueError naming `argument`."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts) if prompts is not None else []
        if not prompts:
            raise ValueError(f"{argument}: expected at least one prompt, got none")
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise ValueError(f"{argument}: expected strings, got {type(bad[0]).__name__}")
        return prompts

    def arrays(self, texts: list[str], *, batch_size: int = 256, progress: bool = False) -> dict[str, np.ndarray]:
        """The condition arrays of `texts` under their batch keys (`context` or `context_ids`, and
        `context_mask`), encoded in batches of `batch_size` (a progress bar with `progress`)."""
        texts = list(texts)
        if self.trainable:
            ids, mask = self.vocabulary.encode(texts)
            return {"context_ids": ids, "context_mask": mask}
        chunks = range(0, len(texts), batch_size)
        if progress and len(texts) > batch_size:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=f"[transformer] encoding captions with {self.name}", unit="batch")
        context, masks = [], []
        for start in chunks:
            out = self.encoder.encode(texts[start:start + batch_size])
            context.append(np.asarray(out.embeddings, np.float32))
            masks.append(np.asarray(out.mask, bool))
        width = int(self.encoder.width)
        return {"context": np.concatenate(context) if context else np.zeros((0, self.max_length, width), np.float32),
                "context_mask": np.concatenate(masks) if masks else np.zeros((0, self.max_length), bool)}

    def condition(self, texts: list[str]) -> Condition:
        """`Condition` of `texts` (see the module docstring)."""
        return Condition.from_batch(self.arrays(texts))

    def fingerprint(self) -> dict:
        """What makes cached text conditions stale when it changes."""
        out = self.config.to_dict() if hasattr(self.config, "to_dict") else dict(self.config)
        if not self.trainable and out.get("path"):
            weights = os.path.join(str(out["path"]), "model.safetensors")
            out["weights_bytes"] = os.path.getsize(weights) if os.path.exists(weights) else None
        return out
