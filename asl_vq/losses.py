"""The tokenizer's losses and greedy CTC decoding.

total = SmoothL1(recon, inputs) + CTC + commitment / 16, each part averaged
over what is real: valid frames for the reconstruction, valid examples for
CTC (padded frames and padded evaluation examples count for nothing). As the
reference (PyTorch's CTCLoss reduction='mean'), each example's CTC loss is
divided by its number of label characters before the mean over examples; the
evaluation loss that picks the best checkpoint is recon + CTC, without the
commitment term.
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np
import optax

from asl_vq import errors
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


CTC_REDUCTIONS = ('mean_per_char', 'sum')


def ctc_loss(
    logits,
    mask,
    labels,
    label_mask=None,
    example_mask=None,
    reduction: str = 'mean_per_char',
):
  """optax CTC (blank = pad id 59), mean over the valid examples.

  logits: [B, T, V]; mask: [B, T] valid frames; labels: int32 [B, L] phrase
  characters only, padded; label_mask: [B, L] (default labels != PAD_ID);
  example_mask: [B] real examples (default: those with a valid frame).
  reduction: 'mean_per_char' (the reference, PyTorch's default 'mean'):
  each example's negative log-likelihood divided by its number of label
  characters (at least 1), then the mean over examples; 'sum': the
  undivided negative log-likelihood, then the mean over examples.
  Examples whose phrase cannot be aligned to their frames (too few frames for
  the characters and the blanks between repeats) count as 0 in the mean, as
  with the reference's zero_infinity=True (their loss would otherwise be
  optax's -log(epsilon) floor).
  """
  if reduction not in CTC_REDUCTIONS:
    raise errors.UserError(
        f'CTC reduction must be one of {CTC_REDUCTIONS}, not ' f'{reduction!r}'
    )
  if label_mask is None:
    label_mask = labels != vocab.PAD_ID
  if example_mask is None:
    example_mask = mask.any(axis=1)
  per_example = optax.ctc_loss(
      logits.astype(jnp.float32),
      1.0 - mask.astype(jnp.float32),
      labels,
      1.0 - label_mask.astype(jnp.float32),
      blank_id=vocab.BLANK_ID,
  )
  repeats = jnp.sum(
      (labels[:, 1:] == labels[:, :-1])
      & label_mask[:, 1:]
      & label_mask[:, :-1],
      axis=1,
  )
  label_lengths = label_mask.sum(1)
  if reduction == 'mean_per_char':
    per_example = per_example / jnp.maximum(label_lengths, 1)
  feasible = mask.sum(1) >= label_lengths + repeats
  keep = (example_mask & feasible).astype(jnp.float32)
  return jnp.sum(per_example * keep) / jnp.maximum(
      example_mask.astype(jnp.float32).sum(), 1.0
  )


def tokenizer_loss(
    outputs: Mapping[str, jnp.ndarray],
    inputs,
    mask,
    labels=None,
    label_mask=None,
    example_mask=None,
    commit_weight: float = COMMIT_WEIGHT,
    *,
    ctc_reduction: str = 'mean_per_char',
    ctc_weight: float = 1.0,
):
  """(total, parts) from the TokenizerModel's outputs.

  The CTC term is included when the outputs hold 'ctc_logits' (then labels
  are required); ctc_reduction is `ctc_loss`'s reduction. total = recon +
  ctc_weight * ctc + commit_weight * commit (the training objective; the
  reference's ctc_weight is 1). parts (float32 scalars): 'recon', 'commit',
  with CTC 'ctc' (unweighted), and 'eval_loss' = recon + ctc_weight * ctc
  (recon alone without CTC): the reference's evaluation loss, which has no
  commitment term and picks the best checkpoint.
  """
  parts = dict(
      recon=smooth_l1(outputs['recon'], inputs, mask),
      commit=outputs['commit_loss'],
  )
  parts['eval_loss'] = parts['recon']
  if 'ctc_logits' in outputs:
    parts['ctc'] = ctc_loss(
        outputs['ctc_logits'],
        mask,
        labels,
        label_mask,
        example_mask,
        ctc_reduction,
    )
    parts['eval_loss'] = parts['eval_loss'] + ctc_weight * parts['ctc']
  return parts['eval_loss'] + commit_weight * parts['commit'], parts


def ctc_greedy_decode(logits, mask) -> list[list[int]]:
  """Best-path decoding: argmax per valid frame, collapse repeats, drop blanks.

  logits: [B, T, V]; mask: [B, T]. Returns one id list per example, of
  character ids only: the special ids after the 59 characters (pad = blank
  59, start 60, end 61, mask 62) are never CTC targets, so a frame whose
  argmax is one of them separates characters as a blank does (h, i, <end>,
  y, o, u -> "hiyou"); it neither ends the hypothesis nor enters it.
  """
  best = np.asarray(logits).argmax(-1)
  best = np.where(best < len(vocab.CHARACTERS), best, vocab.BLANK_ID)
  mask = np.asarray(mask, bool)
  decoded = []
  for ids in (row[m] for row, m in zip(best, mask)):
    keep = np.ones(len(ids), bool)
    keep[1:] = ids[1:] != ids[:-1]
    decoded.append([int(i) for i in ids[keep & (ids != vocab.BLANK_ID)]])
  return decoded
