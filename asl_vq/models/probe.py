"""The letter probe: which of a-z occur in the phrase, from tokens or keypoints.

One model with 26 binary outputs (docs/design.md; the paper's section 5). 'tokens': the code
streams framed as BOS, codes..., EOS, PAD... (per stream vocabulary
codebook_size + 3), summed stream embeddings (initialisable from the
tokenizer's codebooks), a transformer encoder; 'continuous': the tokenizer's
feature extractor + Squeezeformer. Either way the states are mean-pooled over
the valid positions (BOS and EOS included) into 26 logits.

Variables as the translator's: 'params' ('batch_stats' too, continuous);
`ProbeConfig.from_config` maps a run config (configs/probe.py) to the model,
`init_variables` starts its variables as training does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from asl_vq import errors
from asl_vq import vocab
from asl_vq.models.transformer import (
    NUM_SPECIAL,
    SignModelConfig,
    dummy_sign_inputs,
    frame_codes,
    init_training,
    masked_mean,
    sign_encoder,
)

NUM_LETTERS = len(vocab.LETTERS)
FIRST_LETTER_ID = vocab.CHAR_TO_ID[vocab.LETTERS[0]]
assert vocab.CHARACTERS[FIRST_LETTER_ID:][:NUM_LETTERS] == vocab.LETTERS


@dataclasses.dataclass(frozen=True)
class ProbeConfig(SignModelConfig):
  """Hyperparameters (configs/probe.py's `model`; `SignModelConfig`'s and
  the encoder's `num_layers`); the defaults are the paper's token probe."""

  num_heads: int = 8
  num_layers: int = 6


class Probe(nn.Module):
  """Codes int32 [B, L, Q] or landmarks [B, L, 42, 2] + mask -> [B, 26]."""

  config: ProbeConfig

  @nn.compact
  def __call__(self, inputs, input_mask, *, train: bool):
    c = self.config
    if c.encoder == 'tokens':
      inputs, input_mask = frame_codes(inputs, input_mask, c.codebook_size)
    x = sign_encoder(
        c,
        vocab_size=c.codebook_size + NUM_SPECIAL,
        num_layers=c.num_layers,
        name='encoder',
    )(inputs, input_mask, train=train)
    return nn.Dense(NUM_LETTERS, name='head')(masked_mean(x, input_mask))


def init_variables(
    model: Probe, length: int, rng, codebooks=None
) -> dict[str, Any]:
  """`model`'s variables as training starts them: an init on 2 zero sign
  inputs of `length` frames, with rngs 'params' and 'dropout' split from
  `rng`; with `codebooks` (the tokenizer's [Q, K, D]) copied into the
  stream embeddings (`init_from_codebooks`)."""
  c = model.config
  variables = init_training(
      model, rng, *dummy_sign_inputs(c.encoder, length, c.num_quantizers)
  )
  if codebooks is not None:
    variables = dict(
        variables, params=init_from_codebooks(variables['params'], codebooks)
    )
  return variables


def init_from_codebooks(params, codebooks):
  """Copies the tokenizer's codebooks [Q, K, D] into the stream embeddings.

  They fill the first K rows of each stream's table (the special rows keep
  their init). codebooks: the tokenizer's variables['vq']['rvq']['codebook'].
  Returns new params.
  """
  table = params['encoder']['embed']['embedding']  # [Q, K + 3, dim]
  q, k, d = codebooks.shape
  if (q, k + NUM_SPECIAL) != table.shape[:2] or d != table.shape[2]:
    raise errors.UserError(
        f'codebooks of shape {codebooks.shape} (quantizers, codes, dim) do '
        f"not fit the probe's stream embeddings {table.shape} "
        f'(quantizers, codes + {NUM_SPECIAL}, dim): num_quantizers, '
        "codebook_size and dim must be the tokenizer's"
    )
  table = table.at[:, :k].set(jnp.asarray(codebooks, table.dtype))
  embed = {**params['encoder']['embed'], 'embedding': table}
  return {**params, 'encoder': {**params['encoder'], 'embed': embed}}


def letter_targets(labels, label_mask):
  """Labels [B, S] + label_mask bool [B, S] -> f32 [B, 26], 1 if present.

  The vocabulary has lower-case letters only (phrases are lower-case).
  """
  hits = jax.nn.one_hot(labels - FIRST_LETTER_ID, NUM_LETTERS)  # 0 if not.
  hits = hits * label_mask[..., None]
  return hits.max(1)


def _example_weights(targets, example_mask):
  if example_mask is None:
    return jnp.ones(targets.shape[:1], jnp.float32)
  return example_mask.astype(jnp.float32)


def probe_loss(logits, targets, example_mask=None):
  """Sigmoid cross-entropy, mean over letters and the real examples [B]."""
  per = optax.sigmoid_binary_cross_entropy(
      logits.astype(jnp.float32), targets
  ).mean(-1)
  w = _example_weights(targets, example_mask)
  return jnp.sum(per * w) / jnp.maximum(w.sum(), 1.0)


def letter_accuracy(logits, targets, example_mask=None):
  """f32 [26]: per letter, the fraction of real examples predicted right."""
  right = ((logits > 0) == (targets > 0.5)).astype(jnp.float32)
  w = _example_weights(targets, example_mask)[:, None]
  return jnp.sum(right * w, 0) / jnp.maximum(w.sum(), 1.0)
