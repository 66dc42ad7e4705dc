"""Squeezeformer blocks (Kim et al., 2022) without time downsampling.

Each block is post-LN with a learnable per-channel scale and bias in front of
every module:
  x = LN(x + MHSA(s*x+b)); x = LN(x + FF(s*x+b));
  x = LN(x + Conv(s*x+b)); x = LN(x + FF(s*x+b)).
Attention uses Transformer-XL relative positions (projected sinusoids and the
u / v content and position biases) like the reference; with them an encoder of
6 blocks at width 128 has the paper's 1.329M parameters (rotary embeddings
would miss it by 7.5%).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

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


def relative_shift(x):
  """[..., T, 2T-1] scores per relative position -> [..., T, T] per key.

  Out[i, j] = x[i, (T-1) - i + j], the score of relative position i - j when
  the last axis runs over positions T-1 ... -(T-1). Pad-and-reshape instead of
  a gather: it is a pure relayout.
  """
  *lead, t, p = x.shape
  x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])
  x = x.reshape(*lead, p + 1, t)[..., 1:, :]
  return x.reshape(*lead, t, p)[..., :t]


class RelativeSelfAttention(nn.Module):
  """Multi-head self-attention with Transformer-XL relative positions.

  Padded keys get no weight; padded query rows get all-zero weights, so a
  fully padded sequence yields zeros rather than NaN.
  """
  num_heads: int
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    _, t, d = x.shape
    h = self.num_heads
    dh = d // h
    heads = functools.partial(nn.DenseGeneral, (h, dh))
    q = heads(name='query')(x)
    k = heads(name='key')(x)
    v = heads(name='value')(x)
    # Position projection without bias, as Transformer-XL.
    pos = heads(use_bias=False, name='pos')(
        jnp.asarray(relative_sinusoids(t, d), x.dtype))
    u_bias = self.param('u_bias', nn.initializers.xavier_uniform(), (h, dh))
    v_bias = self.param('v_bias', nn.initializers.xavier_uniform(), (h, dh))

    content = jnp.einsum('bqhd,bkhd->bhqk', q + u_bias, k)
    position = relative_shift(jnp.einsum('bqhd,phd->bhqp', q + v_bias, pos))
    scores = (content + position) / np.sqrt(dh).astype(x.dtype)
    pair = mask[:, None, :, None] & mask[:, None, None, :]
    scores = jnp.where(pair, scores, jnp.finfo(scores.dtype).min)
    # No dropout on the [B, H, T, T] weights: its random bits cost more than
    # the attention itself on CPU; the output dropout below regularises.
    weights = nn.softmax(scores, axis=-1) * pair
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v)
    out = nn.DenseGeneral(d, axis=(-2, -1), name='out')(out)
    return nn.Dropout(self.dropout)(out, deterministic=not train)


class FeedForward(nn.Module):
  """Expansion-1 feed-forward: d -> d, Swish, dropout, d -> d, dropout."""
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x, *, train: bool):
    d = x.shape[-1]
    x = nn.swish(nn.Dense(d, name='in')(x))
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    x = nn.Dense(d, name='out')(x)
    return nn.Dropout(self.dropout)(x, deterministic=not train)


class DepthwiseConv1D(nn.Module):
  """'same' depthwise conv over time as a sum of shifted, scaled copies.

  XLA's CPU grouped convolution is slow (and slower still in the backward
  pass); K fused multiply-adds of shifted slices are 2-3x faster and equal to
  nn.Conv(feature_group_count=d) with the same [K, 1, d] kernel.
  """
  kernel_size: int

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (self.kernel_size, 1, d))
    left = (self.kernel_size - 1) // 2
    t = x.shape[1]
    xp = jnp.pad(x, ((0, 0), (left, self.kernel_size - 1 - left), (0, 0)))
    return sum(xp[:, i:i + t] * kernel[i, 0] for i in range(self.kernel_size))


class ConvModule(nn.Module):
  """Pointwise d->2d, GLU, depthwise conv, masked BN, Swish, pointwise d->d."""
  kernel_size: int = 51
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    d = x.shape[-1]
    x = nn.glu(nn.Dense(2 * d, name='pointwise_in')(x), axis=-1)
    # Padded frames must not leak into the valid frames' conv windows.
    x = jnp.where(mask[..., None], x, 0.0)
    x = DepthwiseConv1D(self.kernel_size, name='depthwise')(x)
    x = nn.swish(MaskedBatchNorm(name='bn')(x, mask, train=train))
    x = nn.Dense(d, name='pointwise_out')(x)
    return nn.Dropout(self.dropout)(x, deterministic=not train)


class ScaleBias(nn.Module):
  """Learnable per-channel affine map, Squeezeformer's pre-module scaling."""

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (d,))
    bias = self.param('bias', nn.initializers.zeros, (d,))
    return x * scale + bias


class SqueezeformerBlock(nn.Module):
  """One post-LN Squeezeformer block: MHSA, FF, Conv, FF."""
  num_heads: int = 4
  kernel_size: int = 51
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    norm = functools.partial(nn.LayerNorm, epsilon=LAYER_NORM_EPS)
    y = ScaleBias(name='scale_0')(x)
    y = RelativeSelfAttention(self.num_heads, self.dropout, name='mhsa')(
        y, mask, train=train)
    x = norm(name='ln_0')(x + y)
    y = ScaleBias(name='scale_1')(x)
    x = norm(name='ln_1')(x + FeedForward(self.dropout, name='ff1')(
        y, train=train))
    y = ScaleBias(name='scale_2')(x)
    y = ConvModule(self.kernel_size, self.dropout, name='conv')(
        y, mask, train=train)
    x = norm(name='ln_2')(x + y)
    y = ScaleBias(name='scale_3')(x)
    x = norm(name='ln_3')(x + FeedForward(self.dropout, name='ff2')(
        y, train=train))
    return x


class Squeezeformer(nn.Module):
  """A stack of Squeezeformer blocks over [B, T, d] with a [B, T] frame mask.

  Shared by the tokenizer's encoder and decoder and the continuous baselines.
  """
  num_blocks: int = 6
  num_heads: int = 4
  kernel_size: int = 51
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    for i in range(self.num_blocks):
      x = SqueezeformerBlock(self.num_heads, self.kernel_size, self.dropout,
                             name=f'block_{i}')(x, mask, train=train)
    return x
