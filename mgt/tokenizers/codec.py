"""A DAC / SoundStream-style convolutional audio codec with residual VQ (registered as "codec").

Audio is mono float32 `[B, S]` in [-1, 1]; tokens are int32 `[B, F, K]` (`[B, F]` when K == 1) with
F = S / hop, hop = prod(strides), K residual levels of V codes each. Any prefix of the levels decodes
(`decode(tokens[..., :k])`): fewer levels, coarser audio. The defaults are DAC's 44.1 kHz model
(descript-audio-codec `conf/final/44khz.yml`: encoder width 64, strides (2, 4, 8, 8) → hop 512,
decoder width 1536, 9 codebooks of 1024 codes looked up in 8 L2-normalised dimensions, quantizer
dropout 0.5); its 16 kHz model is `strides=(2, 4, 5, 8), num_levels=12, sample_rate=16000`. A CPU-sized
codec is e.g. `AudioCodec(channels=16, decoder_channels=64, strides=(2, 4, 5, 8), num_levels=4,
codebook_size=256, sample_rate=16000, rngs=nnx.Rngs(0))`.

`causal=True` pads every convolution on the left only, so decoded sample t depends on tokens of
frames ≤ t / hop and token j on samples < (j + 1)·hop: appending audio never changes earlier tokens,
and both directions stream chunk by chunk (`init_decode_state` / `decode_chunk` / `decode_stream`,
`init_encode_state` / `encode_chunk` / `encode_stream`) with the whole-signal result (to float rounding).

Where it departs from DAC (all in the quantizer library's residual VQ): the codes' in / out projections
are plain linear maps (DAC: weight-normed 1×1 convolutions); with `l2_normalize` the commitment and
codebook losses and the output use the unit-length lookup vectors (ViT-VQGAN; DAC normalises only for the
nearest-code search); quantizer dropout draws per example (DAC: the first `int(p·B)` examples of the
batch), and every level's losses count, also for levels dropped from the output.

Training terms beyond the waveform L1 and the quantizer's (multi-scale mel and STFT losses, the
multi-period / multi-band discriminators) come from `training_objective`
(`mgt.tokenizers.audio_losses`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgt.profiling import scoped
from mgt.tokenizers.base import register_tokenizer
from mgt.tokenizers.codec_layers import ACTIVATIONS, Decoder, Encoder
from mgt.tokenizers.quantizers import ResidualVectorQuantizer
from mgt.tokenizers.vqgan import make_config, reconstruction_losses
from mgt.tokens import TokenSpec, check_token_values

__all__ = ["AudioCodecConfig", "AudioCodec"]


@dataclasses.dataclass(frozen=True)
class AudioCodecConfig:
    """Sizes and loss weights of an audio codec. Defaults: DAC 44.1 kHz.

    Attributes:
      sample_rate: Hz of the audio the codec is meant for (used by `frame_rate` and the objective).
      channels: encoder width before the first downsampling (doubled at each); DAC's `encoder_dim`.
      decoder_channels: decoder width before the first upsampling (halved at each); DAC's `decoder_dim`.
        Must be divisible by 2**len(strides).
      strides: encoder downsampling factors; the decoder uses them reversed. hop = their product.
      latent_dim: D, the latent size; None → `channels · 2**len(strides)` (DAC's default).
      dilations: of the residual units in every block.
      kernel_size: of the residual units' and the first / last convolutions (odd).
      activation: "snake" (DAC) or "elu" (SoundStream / EnCodec).
      weight_norm: weight-normalised convolution kernels (DAC).
      causal: left-only padding everywhere (streamable; SoundStream's causal mode).
      num_levels: K, residual VQ levels.
      codebook_size: V, codes per level.
      codebook_dim: lookup dimension of the factorised, L2-normalised codes (DAC: 8).
      quantizer_dropout: probability per example of training only the first n ~ U{1..K} levels.
      commitment_cost, codebook_cost: VQ loss weights per level (DAC: 0.25, 1.0).
      reconstruction_loss, reconstruction_weight: waveform "l1" (default) or "l2", and its weight.
      dtype: compute dtype of encoder and decoder; parameters and the quantizer stay float32.
      quantizer_options: extra keyword arguments of every `VectorQuantizer` level (e.g.
        `{"kmeans_init": True, "dead_code_threshold": 0.1}`).
    """

    sample_rate: int = 44100
    channels: int = 64
    decoder_channels: int = 1536
    strides: tuple[int, ...] = (2, 4, 8, 8)
    latent_dim: int | None = None
    dilations: tuple[int, ...] = (1, 3, 9)
    kernel_size: int = 7
    activation: str = "snake"
    weight_norm: bool = True
    causal: bool = False
    num_levels: int = 9
    codebook_size: int = 1024
    codebook_dim: int = 8
    quantizer_dropout: float = 0.5
    commitment_cost: float = 0.25
    codebook_cost: float = 1.0
    reconstruction_loss: str = "l1"
    reconstruction_weight: float = 1.0
    dtype: str = "float32"
    quantizer_options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        for name in ("strides", "dilations"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        # sorted (name, value) pairs keep the config, and so the module's graphdef, hashable
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(self.quantizer_options).items()}
        object.__setattr__(self, "quantizer_options", tuple(sorted(options.items())))
        if not self.strides or min(self.strides) < 1:
            raise ValueError(f"AudioCodecConfig.strides must be a non-empty tuple of ints >= 1, got {self.strides}")
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"AudioCodecConfig.dilations must be a non-empty tuple of ints >= 1, got {self.dilations}")
        for name in ("sample_rate", "channels", "decoder_channels", "kernel_size", "num_levels", "codebook_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"AudioCodecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.codebook_size < 2:
            raise ValueError(f"AudioCodecConfig.codebook_size must be >= 2, got {self.codebook_size}")
        if self.latent_dim is not None and self.latent_dim < 1:
            raise ValueError(f"AudioCodecConfig.latent_dim must be >= 1 or None, got {self.latent_dim}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"AudioCodecConfig.kernel_size must be odd (centred 'same' padding), "
                             f"got {self.kernel_size}")
        up = 2 ** len(self.strides)
        if self.decoder_channels % up:
            raise ValueError(f"AudioCodecConfig.decoder_channels={self.decoder_channels} must be divisible by "
                             f"2**len(strides) = {up} (halved at every upsampling)")
        if not 0.0 <= self.quantizer_dropout <= 1.0:
            raise ValueError(f"AudioCodecConfig.quantizer_dropout must be in [0, 1], got {self.quantizer_dropout}")
        for name, value, allowed in (("activation", self.activation, ACTIVATIONS),
                                     ("reconstruction_loss", self.reconstruction_loss, ("l1", "l2"))):
            if value not in allowed:
                raise ValueError(f"AudioCodecConfig.{name} must be one of {list(allowed)}, got {value!r}")
        if jnp.dtype(self.dtype) not in (jnp.float32, jnp.bfloat16, jnp.float16):
            raise ValueError(f"AudioCodecConfig.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.strides))

    @property
    def latent_size(self) -> int:
        """D: `latent_dim`, or DAC's default `channels · 2**len(strides)`."""
        return self.latent_dim if self.latent_dim is not None else self.channels * 2 ** len(self.strides)


@register_tokenizer("codec")
class AudioCodec(nnx.Module):
    """`encoder` (1D CNN) → `quantizer` (residual VQ) → `decoder` (1D CNN, tanh). Build with an
    `AudioCodecConfig`, a mapping, keyword overrides, or both: `AudioCodec(channels=16, rngs=nnx.Rngs(0))`."""

    def __init__(self, config: AudioCodecConfig | Mapping[str, Any] | None = None, *,
                 rngs: nnx.Rngs | None = None, **overrides):
        config = make_config(AudioCodecConfig, config, overrides, "AudioCodec")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        sizes = dict(latent_dim=config.latent_size, dilations=config.dilations, kernel_size=config.kernel_size,
                     activation=config.activation, causal=config.causal, weight_norm=config.weight_norm,
                     dtype=jnp.dtype(config.dtype), rngs=rngs)
        self.encoder = Encoder(channels=config.channels, strides=config.strides, **sizes)
        try:
            self.quantizer = ResidualVectorQuantizer(
                config.num_levels, config.codebook_size, config.latent_size, rngs=rngs,
                quantizer_dropout=config.quantizer_dropout, lookup_dim=config.codebook_dim, l2_normalize=True,
                commitment_cost=config.commitment_cost, codebook_cost=config.codebook_cost,
                **dict(config.quantizer_options))
        except TypeError as e:
            raise ValueError(f"AudioCodecConfig.quantizer_options {dict(config.quantizer_options)} do not fit "
                             f"VectorQuantizer: {e}") from None
        self.decoder = Decoder(channels=config.decoder_channels, strides=config.strides[::-1], **sizes)
        self.codebook_size = config.codebook_size
        self.num_levels = config.num_levels

    # ---- sizes ---------------------------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        """Samples per token frame: prod(strides)."""
        return self.config.hop_length

    def frame_rate(self, sample_rate: float | None = None) -> float:
        """Token frames per second at `sample_rate` (default: the config's), e.g. 44100 / 512 ≈ 86.1."""
        return float(sample_rate if sample_rate is not None else self.config.sample_rate) / self.hop_length

    # ---- protocol ------------------------------------------------------------------------------
    def token_spec(self, input_shape: tuple[int, ...]) -> TokenSpec:
        """`(S,)` → `TokenSpec(grid=(S / hop,), codebook_size=V, num_levels=K)`."""
        shape = tuple(input_shape)
        if len(shape) != 1:
            raise ValueError(f"input_shape must be (num_samples,) for mono audio, got {shape}")
        self._check_audio_shape((1,) + shape, "input_shape")
        return TokenSpec(grid=(shape[0] // self.hop_length,), codebook_size=self.codebook_size,
                         num_levels=self.num_levels)

    def encode(self, audio):
        """float32 `[B, S]` in [-1, 1] (S a multiple of the hop) → int32 tokens `[B, S / hop, K]`
        (`[B, S / hop]` when K == 1)."""
        return self._level_layout(self.quantizer.encode(self.encode_latents(audio)).astype(jnp.int32))

    def decode(self, tokens):
        """int32 tokens `[B, F, k]`, 1 <= k <= K (the first k levels; `[B, F]` is one level) with codes in
        [0, V) → float32 audio `[B, F · hop]` in (-1, 1)."""
        codes = self.quantizer.decode(self._check_tokens(tokens))
        return self.decode_codes(codes)

    # ---- continuous parts ----------------------------------------------------------------------
    @scoped("codec_encoder")
    def encode_latents(self, audio):
        """float32 `[B, S]` → float32 latents `[B, S / hop, D]`."""
        self._check_audio_shape(jnp.shape(audio), "audio")
        x = jnp.asarray(audio).astype(jnp.dtype(self.config.dtype))[..., None]
        return self.encoder(x).astype(jnp.float32)

    @scoped("codec_decoder")
    def decode_codes(self, codes):
        """Code vectors `[B, F, D]` (e.g. `quantizer.decode(tokens)`) → float32 audio `[B, F · hop]`."""
        self._check_codes(codes)
        x = self.decoder(jnp.asarray(codes).astype(jnp.dtype(self.config.dtype)))
        return x[..., 0].astype(jnp.float32)

    def __call__(self, audio, *, train: bool = False, rng=None):
        """`[B, S]` → (reconstruction float32 `[B, S]`, QuantizerOutput with indices `[B, F, K]`).

        In training, quantizer dropout needs `rng`; without one, every level is used (a deterministic
        training pass) instead of raising."""
        z = self.encode_latents(audio)
        # without a key the training pass is deterministic: every level kept
        q = self.quantizer(z, train=train, rng=rng, dropout=rng is not None)
        return self.decode_codes(q.quantized), q

    def training_losses(self, x, *, rng=None):
        """Training-mode forward pass; `rng` drives quantizer dropout (and k-means / dead-code sampling).

        Returns `(reconstruction [B, S] float32, losses, metrics)`: `losses` holds the weighted waveform
        `reconstruction` term (L1 by default) and the quantizer's weighted terms summed over levels
        (`quantizer/commitment`, `quantizer/codebook`); `metrics` holds `mse` and the per-level
        `quantizer/perplexity_k`, `quantizer/usage_k`.
        """
        return reconstruction_losses(self, x, rng=rng)

    @classmethod
    def training_objective(cls, train_config, input_shape, seed: int):
        """The audio objective (mel / STFT losses, discriminators) of `mgt.tokenizers.audio_losses`."""
        from mgt.tokenizers.audio_losses import AudioCodecObjective

        return AudioCodecObjective(train_config, input_shape, seed)

    # ---- streaming -----------------------------------------------------------------------------
    def init_decode_state(self, batch_size: int):
        """The decoder's stream state before the first chunk: a pytree of zeros (causal codecs only)."""
        self._check_streamable("decode")
        return self.decoder.init_state(int(batch_size))

    def decode_chunk(self, state, tokens):
        """Decode the next `f` token frames `[B, f, k]` after `state` → `(state, audio [B, f · hop])`.

        Concatenating the chunks' audio gives `decode` of the concatenated tokens (to float rounding)."""
        self._check_streamable("decode")
        codes = self.quantizer.decode(self._check_tokens(tokens))
        self._check_codes(codes)
        state, x = self.decoder.step(state, codes.astype(jnp.dtype(self.config.dtype)))
        return state, x[..., 0].astype(jnp.float32)

    def decode_stream(self, token_chunks: Iterable) -> Iterator[np.ndarray]:
        """Decode an iterable of token chunks `[B, f_i, k]` one by one (compiled once per chunk shape)
        → an iterator of float32 numpy audio chunks `[B, f_i · hop]`."""
        self._check_streamable("decode")
        return self._stream("decode", token_chunks, self._check_tokens)

    def init_encode_state(self, batch_size: int):
        """The encoder's stream state before the first chunk (causal codecs only)."""
        self._check_streamable("encode")
        return self.encoder.init_state(int(batch_size))

    def encode_chunk(self, state, audio):
        """Encode the next samples `[B, n · hop]` after `state` → `(state, tokens [B, n, K])`; the chunks'
        tokens equal `encode` of the concatenated audio (up to float rounding at exact code ties)."""
        self._check_streamable("encode")
        self._check_audio_shape(jnp.shape(audio), "audio")
        x = jnp.asarray(audio).astype(jnp.dtype(self.config.dtype))[..., None]
        state, z = self.encoder.step(state, x)
        return state, self._level_layout(self.quantizer.encode(z.astype(jnp.float32)).astype(jnp.int32))

    def encode_stream(self, audio_chunks: Iterable) -> Iterator[np.ndarray]:
        """Encode an iterable of audio chunks `[B, n_i · hop]` one by one (compiled once per chunk shape)
        → an iterator of int32 numpy token chunks `[B, n_i, K]`."""
        self._check_streamable("encode")
        return self._stream("encode", audio_chunks, jnp.asarray)

    def _stream(self, what: str, chunks: Iterable, prepare) -> Iterator[np.ndarray]:
        # The module's state is an argument of one jitted function shared by every call (no retrace per step).
        graphdef, variables = nnx.split(self)
        init, step = getattr(self, f"init_{what}_state"), f"{what}_chunk"
        state = None
        for chunk in chunks:
            chunk = prepare(chunk)
            if state is None:
                state = init(chunk.shape[0])
            state, out = _compiled_step(graphdef, step, variables, state, chunk)
            yield np.asarray(out)

    # ---- checks --------------------------------------------------------------------------------
    def _level_layout(self, tokens):
        return tokens[..., 0] if self.num_levels == 1 else tokens

    def _check_tokens(self, tokens):
        """`[B, F, k]` or `[B, F]` integer tokens → `[B, F, k]`, or a ValueError naming what is wrong."""
        shape = tuple(jnp.shape(tokens))
        if len(shape) == 2:
            tokens, shape = jnp.asarray(tokens)[..., None], shape + (1,)
        if len(shape) != 3 or not 1 <= shape[-1] <= self.num_levels:
            raise ValueError(f"tokens must be [batch, frames, levels] with 1..{self.num_levels} levels "
                             f"(or [batch, frames]), got shape {shape}")
        if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
            raise ValueError(f"tokens must be an integer array, got dtype {jnp.result_type(tokens)}")
        check_token_values(tokens, self.codebook_size, None, "tokens")  # concrete values only
        return tokens

    def _check_codes(self, codes):
        shape, d = tuple(jnp.shape(codes)), self.config.latent_size
        if len(shape) != 3 or shape[-1] != d:
            raise ValueError(f"codes must be [batch, frames, {d}], got shape {shape}")

    def _check_audio_shape(self, shape, name):
        shape, hop = tuple(shape), self.hop_length
        if len(shape) != 2:
            raise ValueError(f"{name} must be mono audio [batch, samples], got shape {shape}")
        if shape[1] < hop or shape[1] % hop:
            raise ValueError(f"{name} has {shape[1]} samples (shape {shape}); expected a positive multiple "
                             f"of the hop length {hop} = prod(strides={self.config.strides})")

    def _check_streamable(self, what: str):
        if not self.config.causal:
            raise ValueError(f"streaming {what} needs a causal codec (AudioCodecConfig.causal=True); this one "
                             "pads both sides, so a chunk's output depends on the next chunk")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _compiled_step(graphdef, method, params, state, inputs):
    return getattr(nnx.merge(graphdef, params, copy=True), method)(state, inputs)
