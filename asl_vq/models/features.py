"""Landmark feature extractor, its mirrored output head, and masked BatchNorm.

The extractor treats a [B, T, 42, 2] landmark sequence as a 2-channel image
over (time, landmark): Conv2d 2->32 with stride (1, 2) halves the landmarks to
21, then each frame's 32 x 21 features are flattened and projected to the model
width. The output head undoes it: width -> 672 -> [21, 32] -> transposed conv
back to [42, 2].
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

NUM_POINTS = 42
CONV_FEATURES = 32
# PyTorch's Conv2d(padding=1) over (time, landmark); Flax's 'SAME' would pad
# the strided landmark axis asymmetrically.
_CONV_PADDING = ((1, 1), (1, 1))
# ConvTranspose2d(padding=1, output_padding=(0, 1)) in PyTorch's terms: with
# k = 3 Flax pads the dilated input by (k - 1 - p, k - 1 - p + output_padding).
_CONV_T_PADDING = ((1, 1), (1, 2))


class MaskedBatchNorm(nn.Module):
  """BatchNorm whose statistics come from the valid frames only.

  Padded frames would otherwise drag the batch mean towards their values.
  Inputs are [B, T, ..., C] with a [B, T] mask; statistics reduce over every
  axis but the last. A plain sum over the batch axis is already the global sum
  when the batch is sharded under jit, so no collectives are needed.

  Attributes:
    momentum: Flax convention (weight of the old running value). The reference
      uses PyTorch momentum 0.95, which is Flax momentum 0.05.
    epsilon: added to the variance, as PyTorch's default.
  """
  momentum: float = 0.05
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    features = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,),
                            jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,),
                           jnp.float32)
    scale = self.param('scale', nn.initializers.ones, (features,))
    bias = self.param('bias', nn.initializers.zeros, (features,))

    if train:
      m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
      m = jnp.broadcast_to(m, x.shape[:-1] + (1,)).astype(jnp.float32)
      axes = tuple(range(x.ndim - 1))
      count = jnp.maximum(m.sum(axes), 1.0)
      x32 = jnp.where(m > 0, x.astype(jnp.float32), 0.0)
      mean = x32.sum(axes) / count
      var = (jnp.square(x32 - mean) * m).sum(axes) / count
      if not self.is_initializing():
        keep = self.momentum
        ra_mean.value = keep * ra_mean.value + (1 - keep) * mean
        ra_var.value = keep * ra_var.value + (1 - keep) * var
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (x - mean) * (scale * jnp.reciprocal(jnp.sqrt(var + self.epsilon)))
    return (y + bias).astype(x.dtype)


def _frame_mask(mask, ndim):
  return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


class _Kernel(nn.Module):
  """The variables of an nn.ConvTranspose of the same name.

  Same names, shapes and initialisers, so parameters and checkpoints are
  those of the Flax layer; the convolution itself is done by hand below.
  """
  shape: tuple[int, ...]
  use_bias: bool = False

  @nn.compact
  def __call__(self):
    kernel = self.param('kernel', nn.initializers.lecun_normal(), self.shape)
    if not self.use_bias:
      return kernel, None
    return kernel, self.param('bias', nn.initializers.zeros, self.shape[-1:])


def landmark_conv_transpose(x, kernel, bias):
  """The output head's transposed conv: [B, T, P, F] -> [B, T, 2P, C].

  Equals nn.ConvTranspose(C, (3, 3), strides=(1, 2), padding=_CONV_T_PADDING)
  (PyTorch's ConvTranspose2d(padding=1, output_padding=(0, 1))): output
  landmark 2p sees input p through kernel column 1, output 2p + 1 sees p
  through column 0 and p + 1 through column 2. One [F] x [3 * 3 * C] matmul,
  then shifts of its small output (XLA's CPU transposed convolution is slow).
  """
  b, t, p, _ = x.shape
  c = kernel.shape[-1]
  u = jnp.einsum('btpf,ijfc->btpijc', x, kernel)  # [B, T, P, 3, 3, C]
  u = jnp.pad(u, ((0, 0), (1, 1)) + ((0, 0),) * 4)
  u = sum(u[:, i:i + t, :, i] for i in range(3))  # [B, T, P, 3 (landmark), C]
  even = u[:, :, :, 1]
  odd = u[:, :, :, 0] + jnp.pad(u[:, :, 1:, 2], ((0, 0), (0, 0), (0, 1),
                                                  (0, 0)))
  y = jnp.stack([even, odd], axis=3).reshape(b, t, 2 * p, c)
  return y + bias


class FeatureExtractor(nn.Module):
  """[B, T, 42, 2] landmarks -> [B, T, dim] frame features."""
  dim: int = 128

  @nn.compact
  def __call__(self, inputs, mask, *, train: bool):
    # Zeroing padded frames keeps them out of the valid frames' conv windows.
    x = jnp.where(_frame_mask(mask, inputs.ndim), inputs, 0.0)
    # (An einsum over 3 x 3 x 2 patches was no faster than XLA's conv here.)
    x = nn.Conv(CONV_FEATURES, (3, 3), strides=(1, 2), padding=_CONV_PADDING,
                use_bias=False, name='conv')(x)
    x = nn.silu(MaskedBatchNorm(name='conv_bn')(x, mask, train=train))
    x = x.reshape(x.shape[:2] + (-1,))
    x = nn.Dense(self.dim, use_bias=False, name='proj')(x)
    return MaskedBatchNorm(name='proj_bn')(x, mask, train=train)


class OutputHead(nn.Module):
  """[B, T, dim] decoder states -> [B, T, 42, 2] landmarks (mirror of above)."""

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    x = MaskedBatchNorm(name='bn')(x, mask, train=train)
    x = nn.Dense(CONV_FEATURES * NUM_POINTS // 2, name='proj')(x)
    x = x.reshape(x.shape[:2] + (NUM_POINTS // 2, CONV_FEATURES))
    x = jnp.where(_frame_mask(mask, x.ndim), x, 0.0)
    kernel, bias = _Kernel((3, 3, CONV_FEATURES, 2), use_bias=True,
                           name='conv_t')()
    return landmark_conv_transpose(x, kernel.astype(x.dtype),
                                   bias.astype(x.dtype))
