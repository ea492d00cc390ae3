"""Small stride-1 convolutions as matrix multiplications over gathered taps (im2col), on a CPU.

XLA's CPU convolutions are slow at the sizes of mgt's CPU tokenizers: a 3×3×3 convolution of
`[8, 4, 8, 8, 32]` → 32 channels runs at about 35 GFLOP/s, forward, input gradient and kernel gradient
alike (9.3 ms for the three), and the video main job's 3D tokenizer spends its training step in them.
Here each pass is one matmul: the forward multiplies the taps of every position, gathered into
`[..., taps · C_in]`, by the kernel as `[taps · C_in, C_out]`; the input gradient does the same with the
output gradient and the flipped, transposed kernel (a stride-1 convolution's transpose is a
convolution); the kernel gradient multiplies the forward's gathered taps by the output gradient
(3.2 ms for the three). A custom VJP keeps the backward pass from scattering gradients slice by slice.
A batch whose gathered taps exceed `BLOCK_GATHER_BYTES` runs in blocks of examples (`lax.map`), so that
each block's taps stay in the CPU's cache: the main job's tokenizer encodes 64 clips at a time 2.3× as
fast (1,489 against 656 clips/s; blocks of 8 clips, 7 MB of taps each).

`conv_general_dilated` takes `jax.lax.conv_general_dilated`'s arguments (it is passed to
`nnx.Conv(conv_general_dilated=...)`, so parameters and checkpoints are unchanged) and falls back to
it off the CPU (cuDNN / TPU convolutions are the fast path there), for strides, dilations or groups,
for an explicit `precision`, for layouts other than channels-last, for padding wider than the kernel,
and when the gathered taps would exceed `MAX_GATHER_BYTES`.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp

MAX_GATHER_BYTES = 64 * 2**20  # the gathered taps of one call; above this the XLA convolution runs
# the gathered taps of one block of examples (a power-of-two count, at least one): larger blocks fall out of the
# cache (encoding 64 clips: 1,489 clips/s in blocks of 8, 976 in blocks of 16, 656 in one)
BLOCK_GATHER_BYTES = 8 * 2**20


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`jax.lax.conv_general_dilated`, as matmuls over gathered taps when it applies (module docstring).

    lhs `[B, *spatial, C_in]`, rhs `[*window, C_in, C_out]` (channels last, as `nnx.Conv` lays them
    out); padding a sequence of `(low, high)` pairs or "SAME" / "VALID". Returns `[B, *out, C_out]`.
    """
    nd = lhs.ndim - 2
    window = tuple(rhs.shape[:nd])
    spec = (0, nd + 1) + tuple(range(1, nd + 1))
    channels_last = jax.lax.ConvDimensionNumbers(lhs_spec=spec, rhs_spec=(nd + 1, nd) + tuple(range(nd)),
                                                 out_spec=spec)
    if isinstance(padding, str) and padding in ("SAME", "VALID"):
        padding = [((k - 1) // 2, k // 2) if padding == "SAME" else (0, 0) for k in window]
    ones = (1,) * nd
    usable = (jax.default_backend() == "cpu" and feature_group_count == 1 and tuple(window_strides) == ones
              and tuple(lhs_dilation or ones) == ones and tuple(rhs_dilation or ones) == ones
              and dimension_numbers == channels_last and not isinstance(padding, str) and precision is None
              and kwargs.get("out_sharding") is None and kwargs.get("preferred_element_type") is None)
    if usable:
        padding = tuple((int(lo), int(hi)) for lo, hi in padding)
        usable = all(0 <= p <= k - 1 for (lo, hi), k in zip(padding, window) for p in (lo, hi))
    if usable:
        out = [s + lo + hi - k + 1 for s, (lo, hi), k in zip(lhs.shape[1:-1], padding, window)]
        gathered = lhs.shape[0] * math.prod(out) * math.prod(window) * lhs.shape[-1] * lhs.dtype.itemsize
        usable = min(out) >= 1 and gathered <= MAX_GATHER_BYTES
    if not usable:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                            feature_group_count=feature_group_count, precision=precision, **kwargs)
    kernel = rhs.astype(lhs.dtype)
    batch = lhs.shape[0]
    block = 2 ** max(0, int(math.log2(max(1, BLOCK_GATHER_BYTES * batch // gathered))))
    if batch <= block:
        return _conv(lhs, kernel, padding)
    # examples in blocks (the last padded with zeros): each block's taps gathered and multiplied in turn
    blocks = -(-batch // block)
    xs = jnp.pad(lhs, [(0, blocks * block - batch)] + [(0, 0)] * (lhs.ndim - 1))
    ys = jax.lax.map(lambda x: _conv(x, kernel, padding), xs.reshape((blocks, block) + lhs.shape[1:]))
    return ys.reshape((blocks * block,) + ys.shape[2:])[:batch]


def _taps(x, window, padding):
    """`[B, *S, C]` → `[B, *out, taps · C]`: every position's window, taps in row-major window order."""
    x = jnp.pad(x, [(0, 0)] + list(padding) + [(0, 0)])
    out = [s - k + 1 for s, k in zip(x.shape[1:-1], window)]
    return jnp.concatenate([x[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(offset, out))]
                            for offset in itertools.product(*(range(k) for k in window))], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, kernel, padding):
    return _forward(x, kernel, padding)[0]


def _forward(x, kernel, padding):
    window = kernel.shape[:-2]
    taps = _taps(x, window, padding)
    return taps @ kernel.reshape(-1, kernel.shape[-1]), (taps, kernel)


def _backward(padding, residuals, dy):
    taps, kernel = residuals
    window, nd = kernel.shape[:-2], kernel.ndim - 2
    # the transpose of a stride-1 convolution: the flipped kernel, channels swapped, padding mirrored
    flipped = jnp.flip(kernel, tuple(range(nd))).swapaxes(-1, -2)
    mirrored = [(k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(padding, window)]
    dx = _taps(dy, window, mirrored) @ flipped.reshape(-1, flipped.shape[-1])
    dkernel = taps.reshape(-1, taps.shape[-1]).T @ dy.reshape(-1, dy.shape[-1])
    return dx, dkernel.reshape(kernel.shape)


_conv.defvjp(_forward, _backward)
