"""The tokenizer: feature extractor + Squeezeformer -> RVQ -> (CTC head) and
mirrored Squeezeformer decoder -> landmarks.

Variables: 'params', 'batch_stats' (masked BatchNorm) and 'vq' (codebooks and
their EMA state). Init with rngs {'params'} (plus 'dropout' when train=True);
a training apply needs mutable=['batch_stats', 'vq'] and rngs
{'dropout', 'vq'}; evaluation needs neither and updates nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from asl_vq import errors
from asl_vq import vocab
from asl_vq.models.features import FeatureExtractor, OutputHead
from asl_vq.models.rvq import ResidualVQ
from asl_vq.models.squeezeformer import Squeezeformer


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """Hyperparameters; the defaults are the paper's proposed model.

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
  """

  dim: int = 128
  num_heads: int = 4
  num_blocks: int = 6
  kernel_size: int = 51
  dropout: float = 0.0
  attention_window: int = 0
  conv_bn_activation: str = 'none'
  num_quantizers: int = 4
  codebook_size: int = 1024
  vq_decay: float = 0.99
  vq_eps: float = 1e-5
  kmeans_iters: int = 10
  dead_threshold: float = 2.0
  commit_grad: str = 'first'
  revival: str = 'batch'
  use_ctc: bool = True
  vocab_size: int = vocab.VOCAB_SIZE
  dtype: str = 'float32'

  def __post_init__(self):
    if self.attention_window < 0:
      raise errors.UserError(
          f'model.attention_window={self.attention_window}: frames either '
          'side, >= 0 (0: every frame)'
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
        c.num_blocks,
        c.num_heads,
        c.kernel_size,
        c.dropout,
        dtype,
        c.attention_window,
    )
    self.features = FeatureExtractor(c.dim, dtype, c.conv_bn_activation)
    self.encoder = stack()
    self.rvq = ResidualVQ(
        num_quantizers=c.num_quantizers,
        codebook_size=c.codebook_size,
        dim=c.dim,
        decay=c.vq_decay,
        eps=c.vq_eps,
        kmeans_iters=c.kmeans_iters,
        dead_threshold=c.dead_threshold,
        commit_grad=c.commit_grad,
        revival=c.revival,
    )
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


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def model_summary(config: TokenizerConfig) -> dict[str, Any]:
  """Parameter counts per part (shapes only: nothing is computed).

  'encoder' is the feature extractor plus the encoder blocks, the part the
  paper counts (1.329M); 'codebooks' are the RVQ vectors in 'vq'.
  """
  model = TokenizerModel(config)
  variables = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0),
          jnp.zeros((1, 2, 42, 2)),
          jnp.ones((1, 2), bool),
          train=False,
      )
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
