"""The tokenizer's losses and greedy CTC decoding.

total = SmoothL1(recon, inputs) + CTC + commitment / 16, each part averaged
over what is real: valid frames for the reconstruction, valid examples for
CTC (padded frames and padded evaluation examples count for nothing).
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np
import optax

from asl_vq import vocab

COMMIT_WEIGHT = 1.0 / 16


def smooth_l1(recon, target, mask, beta: float = 1.0):
  """SmoothL1 summed over the landmark coordinates, mean over valid frames.

  recon, target: [B, T, ...]; mask: [B, T] bool.
  """
  diff = jnp.abs(recon.astype(jnp.float32) - target.astype(jnp.float32))
  per = jnp.where(diff < beta, 0.5 * jnp.square(diff) / beta, diff - 0.5 * beta)
  per_frame = per.reshape(per.shape[:2] + (-1,)).sum(-1)
  m = mask.astype(jnp.float32)
  return jnp.sum(per_frame * m) / jnp.maximum(m.sum(), 1.0)


def ctc_loss(logits, mask, labels, label_mask=None, example_mask=None):
  """optax CTC (blank = pad id 59), mean over the valid examples.

  logits: [B, T, V]; mask: [B, T] valid frames; labels: int32 [B, L] phrase
  characters only, padded; label_mask: [B, L] (default labels != PAD_ID);
  example_mask: [B] real examples (default: those with a valid frame).
  Examples whose phrase cannot be aligned to their frames (too few frames for
  the characters and the blanks between repeats) are left out, as PyTorch's
  zero_infinity does: their loss would be optax's -log(epsilon) floor.
  """
  if label_mask is None:
    label_mask = labels != vocab.PAD_ID
  if example_mask is None:
    example_mask = mask.any(axis=1)
  per_example = optax.ctc_loss(
      logits.astype(jnp.float32), 1.0 - mask.astype(jnp.float32), labels,
      1.0 - label_mask.astype(jnp.float32), blank_id=vocab.BLANK_ID)
  repeats = jnp.sum((labels[:, 1:] == labels[:, :-1])
                    & label_mask[:, 1:] & label_mask[:, :-1], axis=1)
  feasible = mask.sum(1) >= label_mask.sum(1) + repeats
  keep = (example_mask & feasible).astype(jnp.float32)
  return jnp.sum(per_example * keep) / jnp.maximum(keep.sum(), 1.0)


def tokenizer_loss(outputs: Mapping[str, jnp.ndarray], inputs, mask,
                   labels=None, label_mask=None, example_mask=None,
                   commit_weight: float = COMMIT_WEIGHT):
  """(total, parts) from the TokenizerModel's outputs.

  The CTC term is included when the outputs hold 'ctc_logits' (then labels
  are required). parts: 'recon', 'commit' and, with CTC, 'ctc'.
  """
  parts = dict(recon=smooth_l1(outputs['recon'], inputs, mask),
               commit=outputs['commit_loss'])
  total = parts['recon'] + commit_weight * parts['commit']
  if 'ctc_logits' in outputs:
    parts['ctc'] = ctc_loss(outputs['ctc_logits'], mask, labels, label_mask,
                            example_mask)
    total = total + parts['ctc']
  return total, parts


def ctc_greedy_decode(logits, mask) -> list[list[int]]:
  """Best-path decoding: argmax per valid frame, collapse repeats, drop blanks.

  logits: [B, T, V]; mask: [B, T]. Returns one id list per example.
  """
  best = np.asarray(logits).argmax(-1)
  mask = np.asarray(mask, bool)
  decoded = []
  for ids in (row[m] for row, m in zip(best, mask)):
    keep = np.ones(len(ids), bool)
    keep[1:] = ids[1:] != ids[:-1]
    decoded.append([int(i) for i in ids[keep & (ids != vocab.BLANK_ID)]])
  return decoded
