"""Sign-to-text translation: a sign encoder and a character decoder.

The encoder reads the tokenizer's code streams ('tokens', summed stream
embeddings, the paper's Table 2) or the keypoints ('continuous', the
Squeezeformer baseline); the pre-LN transformer decoder emits characters of
`asl_vq.vocab` after START_ID until END_ID, trained with teacher forcing.

Variables: 'params' ('batch_stats' too for the continuous encoder: a training
apply then needs mutable=['batch_stats']); rngs {'dropout'} when train=True.
Greedy decoding runs a `Translator(config, decode=True)` with the same
variables plus a 'cache' collection (`init_cache`). `TranslatorConfig.
from_config` maps a run config (configs/seq2seq.py) to the model,
`init_variables` starts its variables as training does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from asl_vq import vocab
from asl_vq.models.transformer import (
    Decoder,
    SignEncoder,
    code_fields,
    decode_positions,
    dummy_sign_inputs,
    sinusoids,
)


@dataclasses.dataclass(frozen=True)
class TranslatorConfig:
  """Hyperparameters (configs/seq2seq.py's `model`, plus max_target_len).

  Positions are fixed sinusoids, so no maximum input length is needed;
  max_target_len (phrase characters) only sets greedy decoding's default
  length, max_target_len + 1 (room for END_ID). sequences_per_pass and
  batch_devices: the continuous encoder's attention passes (`SignEncoder`),
  the caller's choice for its devices (`asl_vq.sharding.attention_layout`),
  not run-config fields.
  """

  encoder: str = 'tokens'
  num_quantizers: int = 4
  codebook_size: int = 1024
  dim: int = 128
  num_heads: int = 4
  num_encoder_layers: int = 4
  num_decoder_layers: int = 4
  mlp_dim: int = 512
  dropout: float = 0.1
  max_target_len: int = 64
  num_blocks: int = 6
  kernel_size: int = 51
  vocab_size: int = vocab.VOCAB_SIZE
  sequences_per_pass: int = 0
  batch_devices: int = 1

  @classmethod
  def from_config(
      cls,
      config: ml_collections.ConfigDict,
      code_spec: Any = None,
      *,
      sequences_per_pass: int = 0,
      batch_devices: int = 1,
  ) -> 'TranslatorConfig':
    """The translator of a run config (configs/seq2seq.py): its `model`
    block, the token streams' sizes (`code_spec`, an
    `asl_vq.data.tokens.CodeSpec`; None for keypoint inputs), max_target_len
    = `data.max_label_len`, and the attention's passes (class docstring)."""
    return cls(
        **config.model.to_dict(),
        **code_fields(code_spec),
        max_target_len=config.data.max_label_len,
        sequences_per_pass=sequences_per_pass,
        batch_devices=batch_devices,
    )


class CharDecoder(nn.Module):
  """Character ids [B, S] + memory -> logits [B, S, vocab].

  With decode=True it is fed one id per call and counts its position in the
  'cache' collection, next to the attention caches (examples/wmt's way).
  """

  config: TranslatorConfig
  decode: bool = False

  @nn.compact
  def __call__(self, tokens, memory, memory_mask, *, train: bool):
    c = self.config
    positions = decode_positions(self, tokens.shape[1], self.decode)
    x = nn.Embed(c.vocab_size, c.dim, name='embed')(tokens)
    x = x + sinusoids(positions, c.dim)
    x = nn.Dropout(c.dropout)(x, deterministic=not train)
    x = Decoder(
        c.num_decoder_layers,
        c.num_heads,
        c.mlp_dim,
        c.dropout,
        self.decode,
        name='decoder',
    )(x, memory, memory_mask, train=train)
    return nn.Dense(c.vocab_size, name='logits')(x)


class Translator(nn.Module):
  """Sign inputs + mask [B, L] -> character logits (teacher forcing).

  Inputs: codes int32 [B, L, num_quantizers] ('tokens'; padded frames may
  hold anything) or landmarks f32 [B, L, 42, 2] ('continuous').
  """

  config: TranslatorConfig
  decode: bool = False

  def setup(self):
    c = self.config
    self.encoder = SignEncoder(
        c.encoder,
        c.dim,
        c.num_heads,
        c.dropout,
        num_streams=c.num_quantizers,
        vocab_size=c.codebook_size,
        num_layers=c.num_encoder_layers,
        mlp_dim=c.mlp_dim,
        num_blocks=c.num_blocks,
        kernel_size=c.kernel_size,
        sequences_per_pass=c.sequences_per_pass,
        batch_devices=c.batch_devices,
    )
    self.char_decoder = CharDecoder(c, self.decode)

  def encode(self, encoder_inputs, input_mask, *, train: bool = False):
    """-> memory [B, L, dim] (read through input_mask)."""
    if self.config.encoder == 'tokens':
      # Padded frames may hold -1 or garbage: keep the lookup in range.
      encoder_inputs = jnp.where(input_mask[..., None], encoder_inputs, 0)
    return self.encoder(encoder_inputs, input_mask, train=train)

  def decode_logits(
      self, memory, input_mask, decoder_inputs, *, train: bool = False
  ):
    """Decoder ids [B, S] -> logits [B, S, vocab] (S = 1 when decoding)."""
    return self.char_decoder(decoder_inputs, memory, input_mask, train=train)

  def __call__(
      self, encoder_inputs, input_mask, decoder_inputs, *, train: bool
  ):
    memory = self.encode(encoder_inputs, input_mask, train=train)
    return self.decode_logits(memory, input_mask, decoder_inputs, train=train)


def init_variables(model: Translator, length: int, rng) -> dict[str, Any]:
  """`model`'s variables as training starts them: an init on 2 zero sign
  inputs of `length` frames and 2 decoder inputs of max_target_len + 1,
  with rngs 'params' and 'dropout' split from `rng`."""
  c = model.config
  p_rng, d_rng = jax.random.split(rng)
  return model.init(
      {'params': p_rng, 'dropout': d_rng},
      dummy_sign_inputs(c.encoder, length, c.num_quantizers),
      jnp.ones((2, length), bool),
      jnp.zeros((2, c.max_target_len + 1), jnp.int32),
      train=False,
  )


def sequence_loss(logits, targets, mask, label_smoothing: float = 0.0):
  """Mean token cross-entropy over mask [B, S] (label smoothing optional)."""
  labels = jax.nn.one_hot(targets, logits.shape[-1])
  if label_smoothing:
    labels = optax.smooth_labels(labels, label_smoothing)
  loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)
  m = mask.astype(jnp.float32)
  return jnp.sum(loss * m) / jnp.maximum(m.sum(), 1.0)


def init_cache(config: TranslatorConfig, batch: int, max_len: int):
  """Zero decoding cache for `max_len` steps (shapes only, nothing is run)."""
  model = Translator(config, decode=True)
  shapes = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0),
          jnp.zeros((batch, 1, config.dim)),
          jnp.ones((batch, 1), bool),
          jnp.zeros((batch, max_len), jnp.int32),
          method=Translator.decode_logits,
      )
  )
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['cache'])


def greedy_loop(next_logits, state, batch: int, max_len: int):
  """The greedy loop of both decoders -> int32 [B, max_len].

  next_logits(state, tokens, step) -> (logits [B, V] at decoder position
  step, state), where tokens [B, max_len + 1] hold START_ID and the ids so
  far. The loop stops once every example has emitted END_ID; ids after an
  example's END_ID are PAD_ID.
  """
  tokens = jnp.full((batch, max_len + 1), vocab.PAD_ID, jnp.int32)
  tokens = tokens.at[:, 0].set(vocab.START_ID)

  def cond(carry):
    step, _, done, _ = carry
    return (step < max_len) & ~done.all()

  def body(carry):
    step, tokens, done, state = carry
    logits, state = next_logits(state, tokens, step)
    ids = jnp.where(done, vocab.PAD_ID, logits.argmax(-1).astype(jnp.int32))
    tokens = jax.lax.dynamic_update_slice_in_dim(
        tokens, ids[:, None], step + 1, axis=1
    )
    return step + 1, tokens, done | (ids == vocab.END_ID), state

  carry = (jnp.array(0), tokens, jnp.zeros((batch,), bool), state)
  return jax.lax.while_loop(cond, body, carry)[1][:, 1:]


def greedy_decode(
    config: TranslatorConfig,
    variables,
    encoder_inputs,
    input_mask,
    max_len: int | None = None,
):
  """Greedy decoding with a key / value cache: one decoder position a step.

  variables: the trained Translator's ('params' and, continuous, also
  'batch_stats'). Returns int32 [B, max_len] (default max_target_len + 1):
  the ids, END_ID, then PAD_ID. Jit with config and max_len static.
  """
  max_len = max_len or config.max_target_len + 1
  model = Translator(config, decode=True)
  memory = model.apply(
      variables, encoder_inputs, input_mask, method=Translator.encode
  )
  batch = memory.shape[0]

  def next_logits(cache, tokens, step):
    ids = jax.lax.dynamic_slice_in_dim(tokens, step, 1, axis=1)
    logits, updated = model.apply(
        {**variables, 'cache': cache},
        memory,
        input_mask,
        ids,
        method=Translator.decode_logits,
        mutable=['cache'],
    )
    return logits[:, 0], updated['cache']

  return greedy_loop(
      next_logits, init_cache(config, batch, max_len), batch, max_len
  )
