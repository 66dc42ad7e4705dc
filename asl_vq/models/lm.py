"""A MusicGen-style language model of signing: phrase -> code streams.

A decoder-only causal transformer over frames that predicts the Q code
streams of the next frame with Q heads. The phrase conditions it through
cross-attention: character embeddings (the 63 symbols of `asl_vq.vocab`), a
projection to the model width and a small bidirectional text encoder, whose
states every frame attends to (as the translator's decoder attends to the
sign encoder; a prefix would put the text inside the causal stack instead).

Sequences follow a codebook pattern (MusicGen, Copet et al. 2023). Each
stream is framed as BOS, codes..., EOS, PAD... (per stream vocabulary
codebook_size + 3, the probe's convention), then
  'parallel': all streams aligned: the input at step t is the sum of the
     stream embeddings of frame t - 1, the output the Q codes of frame t;
  'delay': stream k is shifted right by k steps (BOS before, PAD after), so
     that code k of a frame is predicted knowing codes < k of that frame.
`build_pattern` / `undo_pattern` are the pure functions that do it.

Variables: 'params'; rngs {'dropout'} when train=True. Sampling runs an
`LM(config, decode=True)` with a 'cache' collection
(`transformer.cached_decoding`).
`LMConfig.from_config` maps a run config (configs/lm.py) to the model,
`init_variables` starts its variables as training does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from asl_vq import errors
from asl_vq import vocab
from asl_vq.models.transformer import (
    BOS,
    EOS,
    NUM_SPECIAL,
    PAD,
    Encoder,
    StreamEmbed,
    TokenDecoder,
    cached_decoding,
    code_fields,
    frame_codes,
    init_training,
    shift_targets,
    sinusoids,
)

PATTERNS = ('parallel', 'delay')


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Hyperparameters (configs/lm.py's `model`)."""

  num_quantizers: int = 4
  codebook_size: int = 1024
  pattern: str = 'parallel'
  dim: int = 256
  num_heads: int = 4
  num_layers: int = 8
  num_text_layers: int = 2
  text_dim: int = 64
  mlp_dim: int = 1024
  dropout: float = 0.1

  @property
  def stream_vocab_size(self) -> int:
    return self.codebook_size + NUM_SPECIAL

  @classmethod
  def from_config(
      cls, config: ml_collections.ConfigDict, code_spec: Any
  ) -> 'LMConfig':
    """The LM of a run config (configs/lm.py): its `model` block and the
    token streams' sizes (`code_spec`, an `asl_vq.data.tokens.CodeSpec`:
    `tokens.code_spec(config.tokens)`)."""
    return cls(**config.model.to_dict(), **code_fields(code_spec))


# ---------------------------------------------------------------------------
# Codebook patterns.
# ---------------------------------------------------------------------------


def stream_delays(pattern: str, num_streams: int) -> np.ndarray:
  """int [Q]: the steps each stream is shifted by."""
  if pattern == 'parallel':
    return np.zeros(num_streams, np.int32)
  if pattern == 'delay':
    return np.arange(num_streams, dtype=np.int32)
  raise errors.UserError(f'unknown pattern {pattern!r}: one of {PATTERNS}')


def _shift_streams(x, delays: np.ndarray, before, after):
  """[B, S, Q] -> [B, S + max(delays), Q]: stream k moved right by delays[k]."""
  length = x.shape[1] + int(delays.max())
  source = np.arange(length)[:, None] - delays[None]  # [S', Q]
  out = jnp.take_along_axis(
      x, jnp.asarray(np.clip(source, 0, x.shape[1] - 1))[None], axis=1
  )
  return jnp.where(
      source < 0, before, jnp.where(source >= x.shape[1], after, out)
  )


def build_pattern(codes, mask, codebook_size: int, pattern: str):
  """Codes [B, L, Q] + mask [B, L] -> (tokens, targets_mask), [B, S, Q].

  S = L + 2 + max delay. tokens: each stream framed BOS, codes, EOS, PAD
  (ids codebook_size + BOS / EOS / PAD), then shifted by the pattern (BOS
  before a delayed stream starts, PAD after it ends). targets_mask is True
  where a token is to be predicted (a code or the EOS). The model reads
  tokens[:, :-1] and predicts tokens[:, 1:].
  """
  framed, framed_mask = frame_codes(codes, mask, codebook_size)
  predicted = framed_mask & (jnp.arange(framed.shape[1]) > 0)[None]
  predicted = jnp.broadcast_to(predicted[..., None], framed.shape)
  delays = stream_delays(pattern, codes.shape[-1])
  return (
      _shift_streams(framed, delays, codebook_size + BOS, codebook_size + PAD),
      _shift_streams(predicted, delays, False, False),
  )


def undo_pattern(tokens, pattern: str):
  """Pattern tokens [B, S, Q] -> frame-aligned [B, S - max delay, Q]."""
  delays = stream_delays(pattern, tokens.shape[-1])
  length = tokens.shape[1] - int(delays.max())
  index = np.arange(length)[:, None] + delays[None]
  return jnp.take_along_axis(tokens, jnp.asarray(index)[None], axis=1)


def phrase_inputs(labels, label_mask):
  """Labels [B, S] + label_mask bool [B, S] -> (text [B, S + 1], mask):
  START, chars.

  The START symbol gives every phrase, even an empty one, a key to attend to.
  """
  text, _, mask = shift_targets(labels, label_mask)
  return text, mask


# ---------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------


class TextEncoder(nn.Module):
  """Phrase ids [B, S] + mask -> states [B, S, dim]."""

  config: LMConfig

  @nn.compact
  def __call__(self, text, mask, *, train: bool):
    c = self.config
    x = nn.Embed(vocab.VOCAB_SIZE, c.text_dim, name='embed')(text)
    x = nn.Dense(c.dim, name='projection')(x)
    x = x + sinusoids(jnp.arange(text.shape[1]), c.dim)
    x = nn.Dropout(c.dropout)(x, deterministic=not train)
    return Encoder(
        c.num_text_layers, c.num_heads, c.mlp_dim, c.dropout, name='transformer'
    )(x, mask, train=train)


class FrameDecoder(TokenDecoder):
  """Pattern tokens [B, S, Q] + text memory -> logits [B, S, Q, vocab + 3]
  (`TokenDecoder`: one step per call with decode=True)."""

  config: LMConfig

  @property
  def num_layers(self) -> int:
    return self.config.num_layers

  def embed_ids(self, ids):
    c = self.config
    return StreamEmbed(
        c.num_quantizers, c.stream_vocab_size, c.dim, name='embed'
    )(ids)

  def output_head(self, x):
    c = self.config
    return nn.DenseGeneral(
        (c.num_quantizers, c.stream_vocab_size), name='heads'
    )(x)


class LM(nn.Module):
  """(tokens [B, S, Q], text [B, S_text], text_mask) -> logits [B, S, Q, V]."""

  config: LMConfig
  decode: bool = False

  def setup(self):
    self.text_encoder = TextEncoder(self.config)
    self.frame_decoder = FrameDecoder(self.config, self.decode)

  def encode(self, text, text_mask, *, train: bool = False):
    return self.text_encoder(text, text_mask, train=train)

  def decode_logits(self, memory, text_mask, tokens, *, train: bool = False):
    return self.frame_decoder(tokens, memory, text_mask, train=train)

  def __call__(self, tokens, text, text_mask, *, train: bool):
    memory = self.encode(text, text_mask, train=train)
    return self.decode_logits(memory, text_mask, tokens, train=train)


def init_variables(
    model: LM, length: int, text_length: int, rng
) -> dict[str, Any]:
  """`model`'s variables as training starts them: an init on the pattern
  tokens of 2 zero code sequences of `length` frames and 2 zero phrases of
  `text_length` ids (the data's max_label_len + 1: `phrase_inputs`), with
  rngs 'params' and 'dropout' split from `rng`."""
  c = model.config
  codes = jnp.zeros((2, length, c.num_quantizers), jnp.int32)
  tokens, _ = build_pattern(
      codes, jnp.ones(codes.shape[:2], bool), c.codebook_size, c.pattern
  )
  text = jnp.zeros((2, text_length), jnp.int32)
  return init_training(
      model, rng, tokens[:, :-1], text, jnp.ones(text.shape, bool)
  )


# ---------------------------------------------------------------------------
# Loss and accuracy.
# ---------------------------------------------------------------------------


def stream_losses(logits, targets, mask):
  """f32 [Q]: per stream, the mean cross-entropy over mask [B, S, Q]."""
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), targets
  )
  m = mask.astype(jnp.float32)
  return (ce * m).sum((0, 1)) / jnp.maximum(m.sum((0, 1)), 1.0)


def stream_hits(logits, targets, mask, codebook_size: int):
  """(right [Q], total [Q]): argmax hits over the masked code targets.

  Next-token accuracy per quantizer: the EOS targets are left out (they
  are in the loss), so only real frames count.
  """
  m = (mask & (targets < codebook_size)).astype(jnp.float32)
  right = (logits.argmax(-1) == targets).astype(jnp.float32) * m
  return right.sum((0, 1)), m.sum((0, 1))


# ---------------------------------------------------------------------------
# Sampling.
# ---------------------------------------------------------------------------


def sample_logits(key, logits, temperature, top_k: int = 0):
  """Logits [..., V] -> int32 [...]: argmax at temperature 0, else a draw
  from softmax(logits / temperature) restricted to the top_k (0: all)."""
  if top_k:
    kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  drawn = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6))
  return jnp.where(temperature > 0, drawn, logits.argmax(-1)).astype(jnp.int32)


def sampling_loop(
    config: LMConfig,
    next_logits,
    state,
    key,
    batch: int,
    max_frames: int,
    temperature,
    top_k: int,
):
  """The sampling loop of both samplers -> (codes, lengths).

  next_logits(state, tokens, step) -> (logits [B, Q, V] at pattern step
  `step`, state), tokens [B, S, Q] holding the pattern so far. Stream 0
  decides where a sequence ends (its EOS, at frame 1 at the earliest, or
  the cap max_frames); the other streams draw codes only; BOS, EOS and PAD
  are then placed as `build_pattern` places them. The loop stops once every
  example's last stream has reached its end.
  """
  k = config.codebook_size
  delays = stream_delays(config.pattern, config.num_quantizers)
  length = max_frames + 2 + int(delays.max())
  tokens = (
      jnp.full((batch, length, config.num_quantizers), k + PAD, jnp.int32)
      .at[:, 0]
      .set(k + BOS)
  )
  is_code = jnp.arange(config.stream_vocab_size) < k
  allowed = jnp.stack(
      [is_code.at[k + EOS].set(True)] + [is_code] * (config.num_quantizers - 1)
  )  # [Q, V]

  def cond(carry):
    step, _, end, _, _ = carry
    return jnp.any(step + 1 - delays.max() < end)

  def body(carry):
    step, tokens, end, state, key = carry
    logits, state = next_logits(state, tokens, step)
    position = step + 1
    ok = allowed.at[0, k + EOS].set(position > 1)
    key, draw = jax.random.split(key)
    ids = sample_logits(
        draw, jnp.where(ok, logits, -jnp.inf), temperature, top_k
    )
    end = jnp.where(ids[:, 0] == k + EOS, jnp.minimum(end, position), end)
    frame = (position - delays)[None]  # [1, Q]
    e = end[:, None]
    ids = jnp.where(
        frame <= 0,
        k + BOS,
        jnp.where(frame == e, k + EOS, jnp.where(frame > e, k + PAD, ids)),
    )
    tokens = jax.lax.dynamic_update_slice_in_dim(
        tokens, ids[:, None], position, axis=1
    )
    return position, tokens, end, state, key

  end = jnp.full((batch,), max_frames + 1, jnp.int32)  # EOS frame: the cap.
  carry = (jnp.array(0), tokens, end, state, key)
  _, tokens, end, _, _ = jax.lax.while_loop(cond, body, carry)
  frames = undo_pattern(tokens, config.pattern)[:, 1 : max_frames + 1]
  lengths = end - 1
  valid = jnp.arange(max_frames)[None, :, None] < lengths[:, None, None]
  return jnp.where(valid, frames, 0), lengths


def sample(
    config: LMConfig,
    variables,
    text,
    text_mask,
    key,
    *,
    max_frames: int,
    temperature=0.0,
    top_k: int = 0,
):
  """Codes for phrases, one pattern step at a time with a key/value cache.

  text, text_mask: `phrase_inputs`. Returns (codes int32 [B, max_frames,
  Q], zero after each example's length; lengths int32 [B], in [1,
  max_frames]). Temperature 0 is greedy. Jit with config, max_frames and
  top_k static.
  """
  batch = text.shape[0]
  length = (
      max_frames
      + 1
      + int(stream_delays(config.pattern, config.num_quantizers).max())
  )
  next_logits, cache = cached_decoding(
      LM(config, decode=True),
      variables,
      text,
      text_mask,
      (batch, length, config.num_quantizers),
  )
  return sampling_loop(
      config,
      next_logits,
      cache,
      key,
      batch,
      max_frames,
      temperature,
      top_k,
  )
