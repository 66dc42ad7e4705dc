"""Layers shared by the downstream models (translator, probe, LM).

Pre-LN transformer blocks as in Flax's examples/wmt (LayerNorm in front of each
sub-block, a residual around it, a final LayerNorm after the stack), and
`SignEncoder`, the two front ends of the paper's experiments: summed code
stream embeddings + transformer (tokens), or the tokenizer's feature extractor
+ Squeezeformer (continuous keypoints). Masks are [B, L] bool; padded queries
compute values that nothing downstream reads. Also the two sequence layouts
those models share: code streams framed BOS, codes, EOS, PAD (`frame_codes`)
and characters shifted for teacher forcing (`shift_targets`); what the three
models' configs, `from_config` and `init_variables` share (`code_fields`,
`SignModelConfig`, `sign_encoder`, `dummy_sign_inputs`, `init_training`);
and the autoregressive decoding of the translator and the LM: their causal
decoder (`TokenDecoder`) and its key / value cache (`cached_decoding`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from asl_vq import errors
from asl_vq import vocab

from asl_vq.models import features
from asl_vq.models.features import FeatureExtractor
from asl_vq.models.squeezeformer import Squeezeformer

ENCODERS = ('tokens', 'continuous')


def code_fields(code_spec: Any) -> dict[str, int]:
  """The model-config fields a code spec sets: `num_quantizers` and
  `codebook_size` of the token streams (`asl_vq.data.tokens.CodeSpec`);
  {} for keypoint inputs (None)."""
  if code_spec is None:
    return {}
  return dict(
      num_quantizers=code_spec.num_quantizers,
      codebook_size=code_spec.codebook_size,
  )


@dataclasses.dataclass(frozen=True)
class SignModelConfig:
  """The fields every sign-input model's config (the translator's, the
  probe's) has, those `sign_encoder` reads, and its `from_config`.

  encoder: its inputs, one of ENCODERS. num_quantizers, codebook_size: the
  token streams' (`code_fields`). dim, num_heads, mlp_dim, dropout: the
  model's sizes. num_blocks, kernel_size: the continuous encoder's
  Squeezeformer. sequences_per_pass, batch_devices: its attention's passes
  (`SignEncoder`), the caller's choice for its devices
  (`asl_vq.sharding.attention_layout`), not run-config fields.
  """

  encoder: str = 'tokens'
  num_quantizers: int = 4
  codebook_size: int = 1024
  dim: int = 128
  num_heads: int = 4
  mlp_dim: int = 512
  dropout: float = 0.1
  num_blocks: int = 6
  kernel_size: int = 51
  sequences_per_pass: int = 0
  batch_devices: int = 1

  @classmethod
  def data_fields(cls, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The fields set from outside the run config's `model` block. Default:
    none."""
    del config
    return {}

  @classmethod
  def from_config(
      cls,
      config: ml_collections.ConfigDict,
      code_spec: Any = None,
      *,
      sequences_per_pass: int = 0,
      batch_devices: int = 1,
  ):
    """The model of a run config: its `model` block, the token streams'
    sizes (`code_spec`, an `asl_vq.data.tokens.CodeSpec`; None for keypoint
    inputs), `data_fields(config)` and the attention's passes (the caller's
    choice for its devices, `asl_vq.sharding.attention_layout`)."""
    return cls(
        **config.model.to_dict(),
        **code_fields(code_spec),
        **cls.data_fields(config),
        sequences_per_pass=sequences_per_pass,
        batch_devices=batch_devices,
    )


def dummy_sign_inputs(encoder: str, length: int, num_quantizers: int):
  """Zeros shaped like a batch of 2 sign inputs of `length` frames, and
  their mask (for `init`): (int32 [2, length, num_quantizers] codes
  ('tokens') or float32 [2, length, 42, 2] keypoints ('continuous'), all
  True bool [2, length])."""
  mask = jnp.ones((2, length), bool)
  if encoder == 'tokens':
    return jnp.zeros((2, length, num_quantizers), jnp.int32), mask
  return jnp.zeros((2, length, features.NUM_POINTS, 2), jnp.float32), mask


def init_training(model: nn.Module, rng, *inputs) -> dict[str, Any]:
  """`model`'s variables as training starts them: `model.init` on `inputs`
  (train=False) with rngs 'params' and 'dropout' split from `rng`."""
  p_rng, d_rng = jax.random.split(rng)
  return model.init({'params': p_rng, 'dropout': d_rng}, *inputs, train=False)


def sinusoids(positions, dim: int):
  """Int positions [..., L] -> [..., L, dim] fixed sin | cos features.

  Computed per position (no table), so a cached decoding step can ask for
  its own position and no maximum length is baked into the parameters.
  """
  inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
  angles = positions[..., None].astype(jnp.float32) * inv_freq
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def decode_positions(module: nn.Module, length: int, decode: bool):
  """Positions 0..length-1; in decode mode offset by the steps already fed,
  counted in `module`'s 'cache' collection next to the attention caches
  (examples/wmt's way). Call from a compact __call__."""
  positions = jnp.arange(length)
  if decode:
    is_initialized = module.has_variable('cache', 'position')
    position = module.variable(
        'cache', 'position', lambda: jnp.array(0, jnp.int32)
    )
    if is_initialized:
      positions = positions + position.value
      position.value += length
  return positions


def masked_mean(x, mask):
  """[B, L, D] -> [B, D], the mean over valid positions (zeros if none)."""
  m = mask[..., None].astype(x.dtype)
  return (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


class StreamEmbed(nn.Module):
  """Codes [..., Q] -> [..., dim]: one table per stream, summed.

  MusicGen's parallel pattern. One [Q, vocab, dim] parameter, so that the
  tokenizer's [Q, K, dim] codebooks can be copied into it in one slice.
  """

  num_streams: int
  vocab_size: int
  dim: int

  @nn.compact
  def __call__(self, codes):
    table = self.param(
        'embedding',
        nn.initializers.normal(1.0),
        (self.num_streams, self.vocab_size, self.dim),
    )
    return table[jnp.arange(self.num_streams), codes].sum(-2)


class MlpBlock(nn.Module):
  mlp_dim: int
  dropout: float

  @nn.compact
  def __call__(self, x, *, train: bool):
    y = nn.gelu(nn.Dense(self.mlp_dim)(x))
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    y = nn.Dense(x.shape[-1])(y)
    return nn.Dropout(self.dropout)(y, deterministic=not train)


class _Attention(nn.Module):
  """Pre-LN attention sub-block with its residual."""

  num_heads: int
  dropout: float
  decode: bool = False

  @nn.compact
  def __call__(self, x, memory, mask, *, train: bool):
    y = nn.LayerNorm()(x)
    # No dropout on the attention weights (as in the tokenizer): their random
    # bits cost more than the attention on CPU; the output keeps dropout.
    y = nn.MultiHeadDotProductAttention(
        self.num_heads, decode=self.decode, name='attention'
    )(y, y if memory is None else memory, mask=mask, deterministic=not train)
    return x + nn.Dropout(self.dropout)(y, deterministic=not train)


class _Stack(nn.Module):
  """The layers of `Encoder` and `Decoder`."""

  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout: float

  def layers(
      self, x, self_mask, memory=None, cross_mask=None, *, train, decode=False
  ):
    """Per layer self-attention (`decode`: cached), cross-attention to
    `memory` when there is one, and an MLP, each with its residual; then
    the final LayerNorm. Call from a compact __call__."""
    for i in range(self.num_layers):
      x = _Attention(
          self.num_heads, self.dropout, decode, name=f'self_attention_{i}'
      )(x, None, self_mask, train=train)
      if memory is not None:
        x = _Attention(
            self.num_heads, self.dropout, name=f'cross_attention_{i}'
        )(x, memory, cross_mask, train=train)
      x = x + MlpBlock(self.mlp_dim, self.dropout, name=f'mlp_{i}')(
          nn.LayerNorm(name=f'mlp_norm_{i}')(x), train=train
      )
    return nn.LayerNorm(name='final_norm')(x)


class Encoder(_Stack):
  """Bidirectional pre-LN transformer over [B, L, dim] with key padding."""

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    return self.layers(x, nn.make_attention_mask(mask, mask), train=train)


class Decoder(_Stack):
  """Causal pre-LN transformer with cross-attention to an encoder memory.

  decode=True: one position per call, keys and values cached in the 'cache'
  collection (flax's MultiHeadDotProductAttention), causality from the cache
  index; the cache is made by an init with the full decoding length.
  """

  decode: bool = False

  @nn.compact
  def __call__(self, x, memory, memory_mask, *, train: bool):
    queries = jnp.ones(x.shape[:2], bool)
    self_mask = None if self.decode else nn.make_causal_mask(queries)
    cross_mask = nn.make_attention_mask(queries, memory_mask)
    return self.layers(
        x, self_mask, memory, cross_mask, train=train, decode=self.decode
    )


class TokenDecoder(nn.Module):
  """The translator's and the LM's decoder: ids [B, S, ...] + memory [B, L,
  dim] + memory_mask [B, L] -> outputs [B, S, ...].

  `embed_ids` (ids -> [B, S, dim]) + sinusoids of the positions, dropout, a
  `Decoder` ('decoder') and `output_head`: subclasses define those two and
  `num_layers`, and have a `config` with dim, num_heads, mlp_dim and
  dropout. With decode=True it is fed one step per call and counts its
  position in the 'cache' collection, next to the attention caches
  (examples/wmt's way).
  """

  config: Any
  decode: bool = False

  @property
  def num_layers(self) -> int:
    raise NotImplementedError

  def embed_ids(self, ids):
    raise NotImplementedError

  def output_head(self, x):
    raise NotImplementedError

  @nn.compact
  def __call__(self, ids, memory, memory_mask, *, train: bool):
    c = self.config
    positions = decode_positions(self, ids.shape[1], self.decode)
    x = self.embed_ids(ids)
    x = x + sinusoids(positions, c.dim)
    x = nn.Dropout(c.dropout)(x, deterministic=not train)
    x = Decoder(
        self.num_layers,
        c.num_heads,
        c.mlp_dim,
        c.dropout,
        self.decode,
        name='decoder',
    )(x, memory, memory_mask, train=train)
    return self.output_head(x)


def cached_decoding(
    model: nn.Module, variables, inputs, mask, ids_shape: tuple[int, ...]
) -> tuple[Callable[..., Any], Any]:
  """What a decoding loop (the translator's `greedy_loop`, the LM's
  `sampling_loop`) needs to decode one position a step with a key / value
  cache: (next_logits, zero cache).

  model: decode=True, with `encode(inputs, mask)` -> memory [B, L, dim] and
  `decode_logits(memory, mask, ids)` -> logits [B, S, ...]; variables: its
  trained ones (without 'cache'); ids_shape: [B, S, ...] of the ids the loop
  holds (S: the positions it may decode). next_logits(cache, ids, step) ->
  (logits at position `step` from ids[:, step] alone, the updated cache).
  The cache is made from shapes only (nothing is run).
  """
  memory = model.apply(variables, inputs, mask, method='encode')

  def next_logits(cache, ids, step):
    step_ids = jax.lax.dynamic_slice_in_dim(ids, step, 1, axis=1)
    logits, updated = model.apply(
        {**variables, 'cache': cache},
        memory,
        mask,
        step_ids,
        method='decode_logits',
        mutable=['cache'],
    )
    return logits[:, 0], updated['cache']

  batch = ids_shape[0]
  shapes = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0),
          jnp.zeros((batch, 1, memory.shape[-1])),
          jnp.ones((batch, 1), bool),
          jnp.zeros(ids_shape, jnp.int32),
          method='decode_logits',
      )
  )
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['cache'])
  return next_logits, cache


class SignEncoder(nn.Module):
  """Sign inputs + mask [B, L] -> states [B, L, dim].

  kind 'tokens': int codes [B, L, Q] (ids < vocab_size) -> StreamEmbed +
  sinusoids + Encoder. kind 'continuous': landmarks [B, L, 42, 2] -> the
  tokenizer's encoder (FeatureExtractor + Squeezeformer, same module names, so
  its parameters could warm-start this one); it has 'batch_stats', and its
  attention's passes are `sequences_per_pass` and `batch_devices`
  (`RelativeSelfAttention`'s `sequences_per_pass` and `devices`).
  """

  kind: str
  dim: int
  num_heads: int
  dropout: float
  num_streams: int = 4  # tokens
  vocab_size: int = 1024  # tokens
  num_layers: int = 4  # tokens
  mlp_dim: int = 512  # tokens
  num_blocks: int = 6  # continuous
  kernel_size: int = 51  # continuous
  sequences_per_pass: int = 0  # continuous
  batch_devices: int = 1  # continuous

  @nn.compact
  def __call__(self, inputs, mask, *, train: bool):
    if self.kind == 'tokens':
      x = StreamEmbed(
          self.num_streams, self.vocab_size, self.dim, name='embed'
      )(inputs)
      x = x + sinusoids(jnp.arange(x.shape[1]), self.dim)
      x = nn.Dropout(self.dropout)(x, deterministic=not train)
      return Encoder(
          self.num_layers,
          self.num_heads,
          self.mlp_dim,
          self.dropout,
          name='transformer',
      )(x, mask, train=train)
    if self.kind == 'continuous':
      x = FeatureExtractor(self.dim, name='features')(inputs, mask, train=train)
      return Squeezeformer(
          num_blocks=self.num_blocks,
          num_heads=self.num_heads,
          kernel_size=self.kernel_size,
          dropout=self.dropout,
          sequences_per_pass=self.sequences_per_pass,
          devices=self.batch_devices,
          name='encoder',
      )(x, mask, train=train)
    raise errors.UserError(f'unknown encoder {self.kind!r}: one of {ENCODERS}')


def sign_encoder(
    config: SignModelConfig, *, vocab_size: int, num_layers: int, **kwargs
) -> SignEncoder:
  """The `SignEncoder` of a sign-input model's config, with the token
  vocabulary and transformer layers it gives; kwargs: the module's (e.g.
  `name`)."""
  c = config
  return SignEncoder(
      c.encoder,
      c.dim,
      c.num_heads,
      c.dropout,
      num_streams=c.num_quantizers,
      vocab_size=vocab_size,
      num_layers=num_layers,
      mlp_dim=c.mlp_dim,
      num_blocks=c.num_blocks,
      kernel_size=c.kernel_size,
      sequences_per_pass=c.sequences_per_pass,
      batch_devices=c.batch_devices,
      **kwargs,
  )


# Per stream, after the codebook_size codes.
BOS, EOS, PAD = 0, 1, 2
NUM_SPECIAL = 3


def frame_codes(codes, mask, codebook_size: int):
  """Codes [B, L, Q] + mask [B, L] -> (tokens [B, L + 2, Q], mask [B, L + 2]).

  Each stream becomes BOS, its codes, EOS, then PAD (ids codebook_size +
  BOS / EOS / PAD). The valid frames must come first (the pipeline's layout).
  """
  length = mask.sum(1)[:, None, None]
  positions = jnp.arange(codes.shape[1] + 2)[None, :, None]
  shifted = jnp.pad(codes, ((0, 0), (1, 1), (0, 0)))
  tokens = jnp.where(
      positions == 0,
      codebook_size + BOS,
      jnp.where(
          positions <= length,
          shifted,
          jnp.where(
              positions == length + 1, codebook_size + EOS, codebook_size + PAD
          ),
      ),
  )
  return tokens.astype(jnp.int32), positions[..., 0] <= length[..., 0] + 1


def shift_targets(labels, label_mask):
  """CTC-layout labels -> (decoder_inputs, targets, target_mask), [B, S + 1].

  labels: int32 [B, S] phrase characters, then padding; label_mask: bool
  [B, S], True on the characters. decoder_inputs = START, chars, PAD...;
  targets = chars, END, PAD...; target_mask is True up to and including END.
  """
  labels = jnp.where(label_mask, labels, vocab.PAD_ID).astype(jnp.int32)
  length = label_mask.sum(1, keepdims=True)
  positions = jnp.arange(labels.shape[1] + 1)[None]
  start = jnp.full_like(labels[:, :1], vocab.START_ID)
  pad = jnp.full_like(labels[:, :1], vocab.PAD_ID)
  decoder_inputs = jnp.concatenate([start, labels], axis=1)
  targets = jnp.concatenate([labels, pad], axis=1)
  targets = jnp.where(positions == length, vocab.END_ID, targets)
  return decoder_inputs, targets, positions <= length
