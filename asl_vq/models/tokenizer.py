"""The tokenizer: feature extractor + Squeezeformer -> RVQ -> (CTC head) and
mirrored Squeezeformer decoder -> landmarks.

Variables: 'params', 'batch_stats' (masked BatchNorm) and 'vq' (codebooks and
their EMA state). Init with rngs {'params'} (plus 'dropout' when train=True;
`init_variables` as training does); a training apply needs
mutable=['batch_stats', 'vq'] and rngs {'dropout', 'vq'} (`training_loss`
is the training step's); evaluation needs neither and updates nothing.

`TokenizerConfig.from_config` is the one mapping of a run config
(configs/tokenizer.py) to the model, for training and for inference alike.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asl_vq import errors
from asl_vq import losses
from asl_vq import vocab
from asl_vq.models.features import FeatureExtractor, OutputHead
from asl_vq.models.rvq import ResidualVQ, RVQConfig
from asl_vq.models.squeezeformer import Squeezeformer


@dataclasses.dataclass(frozen=True)
class TokenizerConfig(RVQConfig):
  """Hyperparameters; the defaults are the paper's proposed model.

  The RVQ's (num_quantizers, codebook_size, vq_decay, vq_eps, kmeans_iters,
  dead_threshold, commit_grad, revival) are `RVQConfig`'s, inherited: this
  config is the RVQ's too. `from_config` fills the fields from the run
  config's `model` block by name (one the block lacks keeps its default,
  e.g. vq_eps); sequences_per_pass and batch_devices are no run-config
  fields.

  dropout: every Squeezeformer dropout (0.0 in the reference).
  conv_bn_activation: after the BN that follows the feature extractor's conv
    and the output head's transposed conv: 'none' (the reference as trained
    and tokenized, after `convert_sync_batchnorm`) or 'silu' (its modules
    as written); see `asl_vq.models.features`.
  attention_window: frames each side a frame attends to in the encoder and
    decoder; 0: every frame (the reference). See `RelativeSelfAttention`.
  commit_grad: 'first' (reference) or 'all', see ResidualVQ.
  revival: 'batch' or 'reference', see ResidualVQ.
  dtype: the compute dtype, 'float32' (the reference) or 'bfloat16'.
    Parameters, BN statistics, the codebooks and their EMA stay float32, and
    the nearest-code search, the softmax, the FFT convolution, the losses and
    the returned logits and landmarks are float32 either way.
  sequences_per_pass, batch_devices: how the attention of the encoder and
    decoder splits a batch into passes (`RelativeSelfAttention`'s
    `sequences_per_pass` and `devices`; 0: one pass): the caller's choice
    for the devices it runs on (`asl_vq.sharding.attention_layout`), not a
    run-config field; it changes no value beyond float rounding.
  """

  dim: int = 128
  num_heads: int = 4
  num_blocks: int = 6
  kernel_size: int = 51
  dropout: float = 0.0
  attention_window: int = 0
  conv_bn_activation: str = 'none'
  use_ctc: bool = True
  vocab_size: int = vocab.VOCAB_SIZE
  dtype: str = 'float32'
  sequences_per_pass: int = 0
  batch_devices: int = 1

  def __post_init__(self):
    if self.attention_window < 0:
      raise errors.UserError(
          f'model.attention_window={self.attention_window}: frames either '
          'side, >= 0 (0: every frame)'
      )

  @classmethod
  def from_config(
      cls,
      config: ml_collections.ConfigDict,
      *,
      sequences_per_pass: int = 0,
      batch_devices: int = 1,
  ) -> 'TokenizerConfig':
    """The tokenizer of a run config (configs/tokenizer.py, or a saved run's
    config.json through `config_lib.saved_config`): its `model` block,
    field for field, and the attention's passes (the class docstring).

    Raises:
      TypeError: a `model` field this class does not have.
      errors.UserError: a bad `model.attention_window`.
    """
    return cls(
        **config.model.to_dict(),
        sequences_per_pass=sequences_per_pass,
        batch_devices=batch_devices,
    )


NO_CTC_HEAD = (
    'this tokenizer was trained without a CTC head '
    '(model.use_ctc=False): it has no transcripts'
)


class TokenizerModel(nn.Module):
  """Landmarks [B, T, 42, 2] + frame mask [B, T] -> codes and reconstruction."""

  config: TokenizerConfig

  def setup(self):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    stack = functools.partial(
        Squeezeformer,
        num_blocks=c.num_blocks,
        num_heads=c.num_heads,
        kernel_size=c.kernel_size,
        dropout=c.dropout,
        dtype=dtype,
        attention_window=c.attention_window,
        sequences_per_pass=c.sequences_per_pass,
        devices=c.batch_devices,
    )
    self.features = FeatureExtractor(c.dim, dtype, c.conv_bn_activation)
    self.encoder = stack()
    self.rvq = ResidualVQ(c, c.dim)  # the RVQ's fields are the config's.
    if c.use_ctc:
      self.ctc_head = nn.Dense(c.vocab_size, use_bias=False, dtype=dtype)
    self.decoder = stack()
    self.output_head = OutputHead(dtype, c.conv_bn_activation)

  def _encode(self, inputs, mask, train):
    x = self.features(inputs, mask, train=train)
    return self.encoder(x, mask, train=train)

  def _decode(self, x, mask, train):
    x = self.decoder(x, mask, train=train)
    return self.output_head(x, mask, train=train)

  def __call__(self, inputs, mask, *, n_q=None, train: bool):
    """Returns dict(recon [B, T, 42, 2], codes int32 [B, T, Q] (-1 where a
    quantizer was dropped), ctc_logits [B, T, vocab] if use_ctc, and the RVQ's
    commit_loss, perplexity [Q], used [Q], replaced [Q]).

    n_q: quantizer dropout, None (all), an int32 scalar or int32 [B].
    """
    x = self._encode(inputs, mask, train)
    quantized, codes, aux = self.rvq(x, mask, n_q=n_q, train=train)
    out = dict(codes=codes, **aux)
    if self.config.use_ctc:
      out['ctc_logits'] = self.ctc_head(quantized).astype(jnp.float32)
    out['recon'] = self._decode(quantized, mask, train)
    return out

  def encode(self, inputs, mask):
    """Codes int32 [B, T, Q] with every quantizer (evaluation mode)."""
    x = self._encode(inputs, mask, False)
    return self.rvq(x, mask, train=False)[1]

  def ctc_logits(self, inputs, mask):
    """CTC head logits float32 [B, T, vocab] on the quantized sum of every
    quantizer (evaluation mode), as the tokenizer's evaluation decodes them.

    Raises:
      ValueError: the model has no CTC head (`use_ctc` False).
    """
    if not self.config.use_ctc:
      raise errors.UserError(NO_CTC_HEAD)
    x = self._encode(inputs, mask, False)
    quantized = self.rvq(x, mask, train=False)[0]
    return self.ctc_head(quantized).astype(jnp.float32)

  def embed_codes(self, codes, n_q=None):
    """Codes [B, T, Q] -> quantized embeddings [B, T, dim] (first n_q)."""
    return self.rvq.embed_codes(codes, n_q)

  def decode_codes(self, codes, mask, n_q=None):
    """Codes [B, T, Q] -> landmarks [B, T, 42, 2] from the first n_q codes."""
    return self._decode(self.embed_codes(codes, n_q), mask, False)


def init_variables(model: TokenizerModel, length: int, rng) -> dict[str, Any]:
  """`model`'s variables as training starts them: an init on 2 zero
  sequences of `length` frames, with rngs 'params', 'vq' and 'dropout'
  split from `rng`. Returns {'params', 'batch_stats', 'vq'}."""
  inputs = jnp.zeros((2, length, 42, 2), jnp.float32)
  mask = jnp.ones((2, length), bool)
  p_rng, vq_rng, d_rng = jax.random.split(rng, 3)
  return model.init(
      {'params': p_rng, 'vq': vq_rng, 'dropout': d_rng},
      inputs,
      mask,
      train=False,
  )


def sample_num_quantizers(rng, mode: str, num_quantizers: int, batch_size: int):
  """Quantizer dropout: n_q ~ U{1..Q} per batch, per example, or all Q."""
  if mode == 'none':
    return None
  shape = {'batch': (), 'example': (batch_size,)}[mode]
  return jax.random.randint(rng, shape, 1, num_quantizers + 1)


def batch_loss(out, batch, train_config: ml_collections.ConfigDict):
  """`losses.tokenizer_loss` of the model's outputs `out` on `batch`
  (inputs, input_mask, labels, label_mask, example_mask), weighted as the
  run config's `train` block says -> (total, parts)."""
  return losses.tokenizer_loss(
      out,
      batch['inputs'],
      batch['input_mask'],
      labels=batch['labels'],
      label_mask=batch['label_mask'],
      example_mask=batch['example_mask'],
      commit_weight=train_config.commit_weight,
      ctc_reduction=train_config.ctc_reduction,
      ctc_weight=train_config.ctc_weight,
  )


# The batch entries `training_loss` reads.
TRAINING_KEYS = ('inputs', 'input_mask', 'labels', 'label_mask', 'example_mask')


def training_loss(
    model: TokenizerModel,
    variables,
    batch,
    rng,
    train_config: ml_collections.ConfigDict,
):
  """One training pass of `model` over `batch` (inputs [B, T, 42, 2],
  input_mask [B, T], labels / label_mask [B, S], example_mask [B]): the
  run's quantizer dropout (`train_config.quantizer_dropout`), dropout, the
  EMA codebook and BatchNorm updates, and `batch_loss`.

  Returns (loss, metrics, updated 'batch_stats' and 'vq'): the loss parts
  but 'eval_loss', and per quantizer q `perplexity_q`, `used_q`,
  `replaced_q` (the tokenizer task's `loss`, which `python -m asl_vq.bench`
  times too).
  """
  q_rng, d_rng, vq_rng = jax.random.split(rng, 3)
  num_quantizers = model.config.num_quantizers
  n_q = sample_num_quantizers(
      q_rng,
      train_config.quantizer_dropout,
      num_quantizers,
      batch['inputs'].shape[0],
  )
  out, updates = model.apply(
      variables,
      batch['inputs'],
      batch['input_mask'],
      n_q=n_q,
      train=True,
      rngs={'dropout': d_rng, 'vq': vq_rng},
      mutable=['batch_stats', 'vq'],
  )
  total, parts = batch_loss(out, batch, train_config)
  metrics = {k: v for k, v in parts.items() if k != 'eval_loss'}
  for name in ('perplexity', 'used', 'replaced'):
    for q in range(num_quantizers):
      metrics[f'{name}_q{q}'] = out[name][q]
  return total, metrics, updates


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def model_summary(config: TokenizerConfig) -> dict[str, Any]:
  """Parameter counts per part (shapes only: nothing is computed).

  'encoder' is the feature extractor plus the encoder blocks, the part the
  paper counts (1.329M); 'codebooks' are the RVQ vectors in 'vq'.
  """
  variables = jax.eval_shape(
      functools.partial(init_variables, TokenizerModel(config), 2),
      jax.random.key(0),
  )
  params = variables['params']
  counts = dict(
      encoder=_count(params['features']) + _count(params['encoder']),
      codebooks=_count(variables['vq']['rvq']['codebook']),
      ctc_head=_count(params.get('ctc_head', {})),
      decoder=_count(params['decoder']) + _count(params['output_head']),
  )
  counts['total_params'] = _count(params)
  return counts
