"""Squeezeformer blocks (Kim et al., 2022) without time downsampling.

Each block is post-LN with a learnable per-channel scale and bias in front of
every module:
  x = LN(x + MHSA(s*x+b)); x = LN(x + FF(s*x+b));
  x = LN(x + Conv(s*x+b)); x = LN(x + FF(s*x+b)).
Attention uses Transformer-XL relative positions (projected sinusoids and the
u / v content and position biases) like the reference; with them an encoder of
6 blocks at width 128 has the paper's 1.329M parameters (rotary embeddings
would miss it by 7.5%).

Dropout defaults to 0.0 everywhere, as the reference builds its encoder and
decoder; the rate is an option. The conv module's BatchNorm keeps 90% of its
old running value per step (PyTorch momentum 0.1), as the reference.

`dtype` is the compute dtype (float32, or bfloat16 on accelerators):
parameters stay float32 and are cast where they are used; the softmax, the
FFT convolution and the normalisation statistics run in float32.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from asl_vq.models.features import CONV_BN_MOMENTUM
from asl_vq.models.features import MaskedBatchNorm

# PyTorch's default; Flax's is 1e-6.
LAYER_NORM_EPS = 1e-5


def relative_sinusoids(length: int, dim: int) -> np.ndarray:
  """Sinusoids of the relative positions length-1, ..., -(length-1)."""
  pos = np.arange(length - 1, -length, -1, dtype=np.float32)[:, None]
  inv_freq = 1.0 / (10000.0 ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
  angles = pos * inv_freq
  pe = np.zeros((2 * length - 1, dim), np.float32)
  pe[:, 0::2] = np.sin(angles)
  pe[:, 1::2] = np.cos(angles)
  return pe


def absolute_sinusoids(length: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
  """sin and cos of position * inv_freq, [length, dim // 2] each (float64)."""
  pos = np.arange(length, dtype=np.float64)[:, None]
  inv_freq = 1.0 / (10000.0 ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
  return np.sin(pos * inv_freq), np.cos(pos * inv_freq)


def _relative_attention(q, k, v, mask, u_bias, v_bias, w_pos, window=0):
  """The attention of `RelativeSelfAttention` from its projections.

  q, k, v: [B, T, H, dh]; mask: [B, T] bool; u_bias, v_bias: [H, dh];
  w_pos: [d, H, dh], the 'pos' kernel with its rows ordered as the even
  (sin) then the odd (cos) sinusoid channels; window: > 0 attends only to
  keys at most `window` frames away. Returns [B, T, H, dh] in q's dtype,
  zero on padded query frames.
  """
  t, dh = q.shape[1], q.shape[3]
  # A Python float is weakly typed: the scaled queries, and with them the
  # score dots, stay in q's dtype (an np.float64 would promote bf16 to f32).
  scale = float(dh) ** -0.5
  content = jnp.einsum('bqhd,bkhd->bhqk', (q + u_bias) * scale, k)
  coef = jnp.einsum('bqhe,che->bhqc', (q + v_bias) * scale, w_pos)
  a, b = jnp.split(coef, 2, axis=-1)
  sin, cos = (
      jnp.asarray(s, q.dtype) for s in absolute_sinusoids(t, w_pos.shape[0])
  )
  query_pos = jnp.concatenate([a * sin + b * cos, b * sin - a * cos], -1)
  key_pos = jnp.concatenate([cos, sin], -1)
  position = jnp.einsum('bhqc,kc->bhqk', query_pos, key_pos)
  # Padded keys: their exp underflows to exactly 0. Padded queries: zeroed
  # on the [B, T, H, dh] output rather than on the [B, H, T, T] weights
  # (the same values; a multiply fused into the weights' dot is slow).
  keys = mask[:, None, None, :]
  if window > 0:
    offset = np.arange(t)[:, None] - np.arange(t)[None, :]
    keys = keys & (np.abs(offset) <= window)
  scores = jnp.where(keys, content + position, jnp.finfo(content.dtype).min)
  # No dropout on the [B, H, T, T] weights: its random bits cost more than
  # the attention itself on CPU; the module's output dropout regularises.
  weights = nn.softmax(scores.astype(jnp.float32), axis=-1)
  # Head-major v and output: a dot over [B, H] batches of row-major
  # matrices (2x faster than reading v as [B, T, H, dh]).
  out = jnp.einsum(
      'bhqk,bhkd->bhqd', weights.astype(q.dtype), v.transpose(0, 2, 1, 3)
  )
  return out.transpose(0, 2, 1, 3) * mask[:, :, None, None]


def attention_passes(batch: int, sequences_per_pass: int, devices: int) -> int:
  """How many passes `RelativeSelfAttention` splits a batch of `batch` into.

  Each pass takes `sequences_per_pass` sequences of every device's share
  (batch / devices when it divides, else the whole batch), or one sequence
  when that does not divide the share, so that a batch sharded over
  `devices` keeps each device's sequences on it and the loop runs over an
  unsharded axis. Returns 1 (one pass over the whole batch) when
  `sequences_per_pass` <= 0 or the batch is empty.
  """
  if sequences_per_pass <= 0 or batch == 0:
    return 1
  local = batch // devices if batch % devices == 0 else batch
  if local % sequences_per_pass == 0:
    return local // sequences_per_pass
  return local


class RelativeSelfAttention(nn.Module):
  """Multi-head self-attention with Transformer-XL relative positions.

  score[i, j] = (q_i + u) . k_j + (q_i + v) . W_pos r_{i-j}, with r the
  sinusoids of `relative_sinusoids` and W_pos the 'pos' projection.

  The position term is computed without the [T, 2T-1] scores and their
  relative shift (memory-bound, and most of the attention's cost on CPU):
  with A_i = W_pos^T (q_i + v) split into the sin / cos coefficients a, b of
  each frequency w, the angle-difference identities give
    sum_w a sin((i-j)w) + b cos((i-j)w)
      = sum_w (a sin iw + b cos iw) cos jw + (b sin iw - a cos iw) sin jw,
  one [B*T*H, d] x [d, T] matmul against constant sinusoids. It equals the
  shifted form to float rounding (tests/test_tokenizer.py checks it).

  `sequences_per_pass` > 0 computes the [B, H, T, T] scores and softmax a
  few sequences at a time in a loop (`attention_passes`, over the share of
  each of the `devices` the batch is split over), recomputing them in the
  backward pass (`jax.checkpoint`) instead of keeping them: each pass's
  scores stay in cache, where the whole batch's (13.5 MB at 22 x 196,
  33.5 MB at 32 x 256) go through memory several times. The values are the
  same to float rounding. 0 (the default) is one pass. The caller chooses
  for the devices it runs on (`asl_vq.sharding.attention_layout`: 2 on a
  single CPU device, else 0); the module never asks JAX. On a 2-core CPU,
  2 against 0 (`python -m asl_vq.bench`, alternating runs, paper model):
  training 1.06x at 22 x 196 and 1.14x at 32 x 256, encoding 0.96x and
  1.17x.

  Padded keys get no weight; padded query rows output zeros, so a fully
  padded sequence yields zeros rather than NaN. `window` > 0 gives no
  weight to keys more than `window` frames away either (0: every frame, as
  the reference), so that a frame's output does not depend on far context.

  x: [B, T, d] of `dtype`; mask: [B, T] bool -> [B, T, d] of `dtype`.
  """

  num_heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  sequences_per_pass: int = 0
  window: int = 0
  devices: int = 1

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    batch, _, d = x.shape
    h = self.num_heads
    dh = d // h
    heads = functools.partial(nn.DenseGeneral, (h, dh), dtype=self.dtype)
    q = heads(name='query')(x)
    k = heads(name='key')(x)
    v = heads(name='value')(x)
    # Position projection without bias, as Transformer-XL: its [d, h, dh]
    # kernel (read through the module so that its name, shape and init stay
    # those of DenseGeneral; the identity product is exact).
    w_pos = heads(
        use_bias=False, precision=jax.lax.Precision.HIGHEST, name='pos'
    )(jnp.eye(d, dtype=self.dtype))
    # Sin / cos coefficients per frequency: even / odd sinusoid channels.
    w_pos = jnp.concatenate([w_pos[0::2], w_pos[1::2]], axis=0)
    u_bias = self.param('u_bias', nn.initializers.xavier_uniform(), (h, dh))
    v_bias = self.param('v_bias', nn.initializers.xavier_uniform(), (h, dh))
    u_bias, v_bias = u_bias.astype(self.dtype), v_bias.astype(self.dtype)

    passes = attention_passes(batch, self.sequences_per_pass, self.devices)
    attend = lambda q, k, v, mask: _relative_attention(
        q, k, v, mask, u_bias, v_bias, w_pos, self.window
    )
    if passes == 1:
      out = attend(q, k, v, mask)
    else:
      # Pass j takes sequences j, j + passes, ...: a device's contiguous
      # share of the batch stays on it, and the loop axis is unsharded.
      split = lambda z: jnp.swapaxes(
          z.reshape(batch // passes, passes, *z.shape[1:]), 0, 1
      )
      out = jax.lax.map(
          jax.checkpoint(lambda a: attend(*a)),
          tuple(split(z) for z in (q, k, v, mask)),
      )
      out = jnp.swapaxes(out, 0, 1).reshape(batch, *out.shape[2:])
    out = nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, name='out')(out)
    return nn.Dropout(self.dropout)(out, deterministic=not train)


class FeedForward(nn.Module):
  """Expansion-1 feed-forward: d -> d, Swish, dropout, d -> d, dropout."""

  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    d = x.shape[-1]
    x = nn.swish(nn.Dense(d, dtype=self.dtype, name='in')(x))
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    x = nn.Dense(d, dtype=self.dtype, name='out')(x)
    return nn.Dropout(self.dropout)(x, deterministic=not train)


def _fft_size(n: int) -> int:
  """Smallest even 2^a 3^b 5^c >= n (fast sizes for the real FFT)."""
  while True:
    m = n
    for f in (2, 3, 5):
      while m % f == 0:
        m //= f
    if m == 1 and n % 2 == 0:
      return n
    n += 1


class DepthwiseConv1D(nn.Module):
  """'same' depthwise conv over time, computed by FFT.

  Equal (to float rounding) to nn.Conv(feature_group_count=d) with the same
  [K, 1, d] kernel and PyTorch's symmetric 'same' padding. XLA's CPU grouped
  convolution is slow, and K shifted multiply-adds cost K passes over the
  activations in each direction (the kernel gradient is K separate
  reductions); the real FFT does the forward and both gradients in a few
  passes, 5-8x faster at K = 51. The FFT runs in float32 whatever x's
  dtype; the output has x's dtype.
  """

  kernel_size: int

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    k = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, 1, d))
    left = (k - 1) // 2
    t = x.shape[1]
    # y[t] = sum_i x[t + i - left] kernel[i]: the linear convolution of x with
    # the reversed kernel, read from offset k - 1 - left. A circular length
    # n >= t + max(left, k - 1 - left) keeps wrapped terms out of that window.
    n = _fft_size(t + max(left, k - 1 - left))
    spectrum = jnp.fft.rfft(x.astype(jnp.float32), n=n, axis=1) * jnp.fft.rfft(
        kernel[::-1, 0], n=n, axis=0
    )
    y = jnp.fft.irfft(spectrum, n=n, axis=1)
    return y[:, k - 1 - left : k - 1 - left + t].astype(x.dtype)


class ConvModule(nn.Module):
  """Pointwise d->2d, GLU, depthwise conv, masked BN, Swish, pointwise d->d."""

  kernel_size: int = 51
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    d = x.shape[-1]
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    x = nn.glu(dense(2 * d, name='pointwise_in')(x), axis=-1)
    # Padded frames must not leak into the valid frames' conv windows.
    x = jnp.where(mask[..., None], x, 0.0)
    x = DepthwiseConv1D(self.kernel_size, name='depthwise')(x)
    x = nn.swish(
        MaskedBatchNorm(CONV_BN_MOMENTUM, name='bn')(x, mask, train=train)
    )
    x = dense(d, name='pointwise_out')(x)
    return nn.Dropout(self.dropout)(x, deterministic=not train)


class ScaleBias(nn.Module):
  """Learnable per-channel affine map, Squeezeformer's pre-module scaling.

  Float32 parameters, computed in x's dtype.
  """

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (d,))
    bias = self.param('bias', nn.initializers.zeros, (d,))
    return x * scale.astype(x.dtype) + bias.astype(x.dtype)


class _BlockFields(nn.Module, kw_only=True):
  """A Squeezeformer block's hyperparameters, the block's and the stack's,
  by keyword only (`attention_window`, `sequences_per_pass` and `devices` as
  `RelativeSelfAttention`'s `window`, `sequences_per_pass` and `devices`)."""

  num_heads: int = 4
  kernel_size: int = 51
  dropout: float = 0.0
  dtype: Any = jnp.float32
  attention_window: int = 0
  sequences_per_pass: int = 0
  devices: int = 1

  def block_fields(self) -> dict[str, Any]:
    return {
        f.name: getattr(self, f.name)
        for f in dataclasses.fields(_BlockFields)
        if f.name not in ('parent', 'name')
    }


class SqueezeformerBlock(_BlockFields, kw_only=True):
  """One post-LN Squeezeformer block: MHSA, FF, Conv, FF."""

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    norm = functools.partial(
        nn.LayerNorm, epsilon=LAYER_NORM_EPS, dtype=self.dtype
    )
    y = ScaleBias(name='scale_0')(x)
    y = RelativeSelfAttention(
        self.num_heads,
        self.dropout,
        self.dtype,
        sequences_per_pass=self.sequences_per_pass,
        window=self.attention_window,
        devices=self.devices,
        name='mhsa',
    )(y, mask, train=train)
    x = norm(name='ln_0')(x + y)
    y = ScaleBias(name='scale_1')(x)
    x = norm(name='ln_1')(
        x + FeedForward(self.dropout, self.dtype, name='ff1')(y, train=train)
    )
    y = ScaleBias(name='scale_2')(x)
    y = ConvModule(self.kernel_size, self.dropout, self.dtype, name='conv')(
        y, mask, train=train
    )
    x = norm(name='ln_2')(x + y)
    y = ScaleBias(name='scale_3')(x)
    x = norm(name='ln_3')(
        x + FeedForward(self.dropout, self.dtype, name='ff2')(y, train=train)
    )
    return x


class Squeezeformer(_BlockFields, kw_only=True):
  """A stack of `num_blocks` Squeezeformer blocks over [B, T, d] with a
  [B, T] frame mask; its other fields are each block's.

  Shared by the tokenizer's encoder and decoder and the continuous baselines.
  Returns [B, T, d] of `dtype` (the compute dtype). `attention_window`:
  `RelativeSelfAttention`'s `window` (0: every frame); `sequences_per_pass`
  and `devices`: its passes (0: one; the caller's choice for its devices,
  `asl_vq.sharding.attention_layout`).
  """

  num_blocks: int = 6

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    for i in range(self.num_blocks):
      x = SqueezeformerBlock(**self.block_fields(), name=f'block_{i}')(
          x, mask, train=train
      )
    return x
