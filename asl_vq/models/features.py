"""Landmark feature extractor, its mirrored output head, and masked BatchNorm.

The extractor treats a [B, T, 42, 2] landmark sequence as a 2-channel image
over (time, landmark): Conv2d 2->32 with stride (1, 2) halves the landmarks to
21, then each frame's 32 x 21 features are flattened and projected to the model
width. The output head undoes it: width -> 672 -> [21, 32] -> transposed conv
to [42, 2] -> BatchNorm -> a linear map of the 84 coordinates.

The BatchNorm after each (transposed) conv is timm's `BatchNormAct2d`
(BatchNorm then SiLU) in the reference as written, but the reference trains
and tokenizes after `torch.nn.SyncBatchNorm.convert_sync_batchnorm`, which
rebuilds it as a plain BatchNorm and never calls the SiLU (timm issue #1254):
`conv_bn_activation` 'none' is the model as the authors trained it, 'silu'
the modules as written.

BatchNorm momentum is per layer as in the reference (discrete_asl): the stem
BNs (after the encoder's 672 -> width projection, before the decoder's
width -> 672 one) keep 5% of the old running value per step (PyTorch momentum
0.95), the BN after each (transposed) conv keeps 90% (PyTorch 0.1).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from asl_vq import errors

NUM_POINTS = 42
CONV_FEATURES = 32
# Flax momentum (weight of the old running value) of the reference's BNs:
# PyTorch momentum 0.95 for the two stem BNs, PyTorch's default 0.1 for the
# conv BNs (feature extractor, output head, Squeezeformer conv modules).
STEM_BN_MOMENTUM = 0.05
CONV_BN_MOMENTUM = 0.9
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
    momentum: Flax convention, the weight of the OLD running value (PyTorch's
      momentum is the weight of the new batch: Flax = 1 - PyTorch). No
      default: the reference uses 0.05 for the stem BNs and 0.9 elsewhere
      (STEM_BN_MOMENTUM, CONV_BN_MOMENTUM).
    epsilon: added to the variance, as PyTorch's default.

  In training, when the collection 'batch_moments' is mutable, the batch's
  own mean and variance are also recorded there (sown, under this layer's
  path), so that `asl_vq.eval_point.recompute_batch_stats` can average them over
  many batches into population statistics.
  """

  momentum: float
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    features = x.shape[-1]
    ra_mean = self.variable(
        'batch_stats', 'mean', jnp.zeros, (features,), jnp.float32
    )
    ra_var = self.variable(
        'batch_stats', 'var', jnp.ones, (features,), jnp.float32
    )
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
        self.sow('batch_moments', 'mean', mean)
        self.sow('batch_moments', 'var', var)
        keep = self.momentum
        ra_mean.value = keep * ra_mean.value + (1 - keep) * mean
        ra_var.value = keep * ra_var.value + (1 - keep) * var
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (x - mean) * (scale * jnp.reciprocal(jnp.sqrt(var + self.epsilon)))
    return (y + bias).astype(x.dtype)


CONV_BN_ACTIVATIONS = ('none', 'silu')


def conv_bn_activation(name: str):
  """The function applied after the conv BNs: 'none' or 'silu'.

  Raises:
    ValueError: another name.
  """
  if name not in CONV_BN_ACTIVATIONS:
    raise errors.UserError(
        f'conv_bn_activation must be one of '
        f"{', '.join(CONV_BN_ACTIVATIONS)}, not {name!r}"
    )
  return nn.silu if name == 'silu' else (lambda x: x)


def _frame_mask(mask, ndim):
  return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


class _Kernel(nn.Module):
  """The variables of an nn.ConvTranspose(use_bias=False) of the same name.

  Same name, shape [3, 3, F, C] and initialiser, so parameters and
  checkpoints are those of the Flax layer; the convolution itself is done by
  hand below.
  """

  shape: tuple[int, ...]

  @nn.compact
  def __call__(self):
    return self.param('kernel', nn.initializers.lecun_normal(), self.shape)


def landmark_conv_transpose(x, kernel):
  """The output head's transposed conv: [B, T, P, F] -> [B, T, 2P, C].

  kernel: [3 (time), 3 (landmark), F, C]. Equals nn.ConvTranspose(C, (3, 3),
  strides=(1, 2), padding=_CONV_T_PADDING, use_bias=False), i.e. PyTorch's
  ConvTranspose2d(padding=1, output_padding=(0, 1)) with weight W
  [F, C, kh, kw] when kernel = W.transpose(2, 3, 0, 1)[::-1, ::-1] (Flax's
  transposed conv does not flip the kernel, PyTorch's does): output
  landmark 2p sees input p through kernel column 1, output 2p + 1 sees p
  through column 0 and p + 1 through column 2. One [F] x [3 * 3 * C] matmul,
  then shifts of its small output (XLA's CPU transposed convolution is slow).
  """
  b, t, p, _ = x.shape
  c = kernel.shape[-1]
  u = jnp.einsum('btpf,ijfc->btpijc', x, kernel)  # [B, T, P, 3, 3, C]
  u = jnp.pad(u, ((0, 0), (1, 1)) + ((0, 0),) * 4)
  u = sum(u[:, i : i + t, :, i] for i in range(3))  # [B, T, P, 3 (landmark), C]
  even = u[:, :, :, 1]
  odd = u[:, :, :, 0] + jnp.pad(
      u[:, :, 1:, 2], ((0, 0), (0, 0), (0, 1), (0, 0))
  )
  return jnp.stack([even, odd], axis=3).reshape(b, t, 2 * p, c)


class FeatureExtractor(nn.Module):
  """[B, T, 42, 2] float32 landmarks -> [B, T, dim] features of `dtype`.

  Conv2d 2 -> 32 (stride (1, 2)) -> BN (-> `activation`, see the module
  docstring) -> flatten 672 -> Dense 672 -> dim (no bias) -> BN. `dtype` is
  the compute dtype; parameters and BN statistics stay float32.
  """

  dim: int = 128
  dtype: Any = jnp.float32
  activation: str = 'none'

  @nn.compact
  def __call__(self, inputs, mask, *, train: bool):
    # Zeroing padded frames keeps them out of the valid frames' conv windows.
    x = jnp.where(_frame_mask(mask, inputs.ndim), inputs, 0.0)
    # (An einsum over 3 x 3 x 2 patches was no faster than XLA's conv here.)
    x = nn.Conv(
        CONV_FEATURES,
        (3, 3),
        strides=(1, 2),
        padding=_CONV_PADDING,
        use_bias=False,
        dtype=self.dtype,
        name='conv',
    )(x)
    x = conv_bn_activation(self.activation)(
        MaskedBatchNorm(CONV_BN_MOMENTUM, name='conv_bn')(x, mask, train=train)
    )
    x = x.reshape(x.shape[:2] + (-1,))
    x = nn.Dense(self.dim, use_bias=False, dtype=self.dtype, name='proj')(x)
    return MaskedBatchNorm(STEM_BN_MOMENTUM, name='proj_bn')(
        x, mask, train=train
    )


class OutputHead(nn.Module):
  """[B, T, dim] decoder states -> [B, T, 42, 2] landmarks (mirror of above).

  As the reference's transposed feature extractor: stem BN -> padded frames
  zeroed -> Dense dim -> 672 (no bias) -> [21, 32] -> transposed conv 32 -> 2
  (no bias) -> BN (-> `activation`) over the 2 channels -> flatten 84 (index
  landmark * 2 + channel) -> Dense 84 -> 84 (no bias) -> [42, 2]. 93,908
  parameters at dim 128. Computed in `dtype`; the landmarks are returned in
  float32.
  """

  dtype: Any = jnp.float32
  activation: str = 'none'

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    x = MaskedBatchNorm(STEM_BN_MOMENTUM, name='bn')(x, mask, train=train)
    x = jnp.where(_frame_mask(mask, x.ndim), x, 0.0)
    x = nn.Dense(
        CONV_FEATURES * NUM_POINTS // 2,
        use_bias=False,
        dtype=self.dtype,
        name='proj',
    )(x)
    x = x.reshape(x.shape[:2] + (NUM_POINTS // 2, CONV_FEATURES))
    kernel = _Kernel((3, 3, CONV_FEATURES, 2), name='conv_t')()
    x = landmark_conv_transpose(x, kernel.astype(x.dtype))
    x = conv_bn_activation(self.activation)(
        MaskedBatchNorm(CONV_BN_MOMENTUM, name='conv_bn')(x, mask, train=train)
    )
    x = nn.Dense(2 * NUM_POINTS, use_bias=False, dtype=self.dtype, name='out')(
        x.reshape(x.shape[:2] + (2 * NUM_POINTS,))
    )
    return x.reshape(x.shape[:2] + (NUM_POINTS, 2)).astype(jnp.float32)
