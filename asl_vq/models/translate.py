"""Sign-to-text translation: a sign encoder and a character decoder.

The encoder reads the tokenizer's code streams ('tokens', summed stream
embeddings, the paper's Table 2) or the keypoints ('continuous', the
Squeezeformer baseline); the pre-LN transformer decoder emits characters of
`asl_vq.vocab` after START_ID until END_ID, trained with teacher forcing.

Variables: 'params' ('batch_stats' too for the continuous encoder: a training
apply then needs mutable=['batch_stats']); rngs {'dropout'} when train=True.
Greedy decoding runs a `Translator(config, decode=True)` with the same
variables plus a 'cache' collection (`transformer.cached_decoding`).
`TranslatorConfig.from_config` maps a run config (configs/translate.py) to the
model, `init_variables` starts its variables as training does.
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
    SignModelConfig,
    TokenDecoder,
    cached_decoding,
    dummy_sign_inputs,
    init_training,
    sign_encoder,
)


@dataclasses.dataclass(frozen=True)
class TranslatorConfig(SignModelConfig):
  """Hyperparameters (configs/translate.py's `model`: `SignModelConfig`'s
  and the layers', plus max_target_len).

  Positions are fixed sinusoids, so no maximum input length is needed;
  max_target_len (phrase characters) only sets greedy decoding's default
  length, max_target_len + 1 (room for END_ID).
  """

  num_encoder_layers: int = 4
  num_decoder_layers: int = 4
  max_target_len: int = 64
  vocab_size: int = vocab.VOCAB_SIZE

  @classmethod
  def data_fields(cls, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`from_config` (of configs/translate.py) takes max_target_len =
    `data.max_label_len`."""
    return dict(max_target_len=config.data.max_label_len)


class CharDecoder(TokenDecoder):
  """Character ids [B, S] + memory -> logits [B, S, vocab] (`TokenDecoder`:
  one id per call with decode=True)."""

  config: TranslatorConfig

  @property
  def num_layers(self) -> int:
    return self.config.num_decoder_layers

  def embed_ids(self, ids):
    return nn.Embed(self.config.vocab_size, self.config.dim, name='embed')(ids)

  def output_head(self, x):
    return nn.Dense(self.config.vocab_size, name='logits')(x)


class Translator(nn.Module):
  """Sign inputs + mask [B, L] -> character logits (teacher forcing).

  Inputs: codes int32 [B, L, num_quantizers] ('tokens'; padded frames may
  hold anything) or landmarks f32 [B, L, 42, 2] ('continuous').
  """

  config: TranslatorConfig
  decode: bool = False

  def setup(self):
    c = self.config
    self.encoder = sign_encoder(
        c, vocab_size=c.codebook_size, num_layers=c.num_encoder_layers
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
  return init_training(
      model,
      rng,
      *dummy_sign_inputs(c.encoder, length, c.num_quantizers),
      jnp.zeros((2, c.max_target_len + 1), jnp.int32),
  )


def sequence_loss(logits, targets, mask, label_smoothing: float = 0.0):
  """Mean token cross-entropy over mask [B, S] (label smoothing optional)."""
  labels = jax.nn.one_hot(targets, logits.shape[-1])
  if label_smoothing:
    labels = optax.smooth_labels(labels, label_smoothing)
  loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)
  m = mask.astype(jnp.float32)
  return jnp.sum(loss * m) / jnp.maximum(m.sum(), 1.0)


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
  batch = encoder_inputs.shape[0]
  next_logits, cache = cached_decoding(
      Translator(config, decode=True),
      variables,
      encoder_inputs,
      input_mask,
      (batch, max_len),
  )
  return greedy_loop(next_logits, cache, batch, max_len)
