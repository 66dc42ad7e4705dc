"""Train / validation / test splits by signer.

Whole signers go to one split, so that evaluation measures generalisation to
people the model has never seen.
"""

from __future__ import annotations

import os
from typing import Mapping

from absl import logging
import numpy as np

from asl_vq import errors
from asl_vq.data import cache

# The splits of a run: it trains on 'train', validates on 'validation' and
# tests on 'test' (optional); a tokenized dataset holds the three.
SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
_TRIALS = 64  # Random signer orders tried; the best balanced one wins.


def _assign(counts: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """Greedy: each signer, in order, to the split furthest below its target.

  While there are only as many signers left as empty splits, a signer goes to
  an empty split, so that no split stays empty.
  """
  totals = np.zeros(len(targets))
  sizes = np.zeros(len(targets), np.int64)
  split_of = np.empty(len(counts), np.int64)
  for i, c in enumerate(counts):
    deficit = targets - totals
    empty = sizes == 0
    if len(counts) - i <= empty.sum():
      deficit = np.where(empty, deficit, -np.inf)
    k = int(np.argmax(deficit))
    split_of[i] = k
    totals[k] += c
    sizes[k] += 1
  return split_of


def check_run_fractions(fractions: Mapping[str, float], setting: str) -> None:
  """Raises errors.UserError if `fractions` (the config's `setting`) names
  no 'train' or 'validation' split: a run trains on 'train', validates on
  'validation' and tests on 'test' (optional)."""
  missing = [s for s in SPLITS[:2] if s not in fractions]
  if missing:
    raise errors.UserError(
        f"{setting} {dict(fractions)} has no {missing} split: a run trains "
        "on 'train', validates on 'validation' and tests on 'test' "
        "(optional)"
    )


def split_by_signer(
    participant_ids: np.ndarray,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """Row indices per split; every signer's rows go to exactly one split.

  Several signer orders drawn from `seed` are assigned greedily and the one
  whose sequence counts are closest to `fractions` is kept.

  Args:
    participant_ids: the signer of each row.
    fractions: split name -> positive weight (normalised to sum to 1).
    seed: makes the split deterministic.

  Returns:
    split name -> sorted int64 row indices. Every split is non-empty.
  """
  participant_ids = np.asarray(participant_ids)
  names = list(fractions)
  weights = np.asarray([fractions[n] for n in names], np.float64)
  if not names or (weights <= 0).any():
    raise errors.UserError(f"fractions must be positive, got {dict(fractions)}")
  signers, signer_of_row, counts = np.unique(
      participant_ids, return_inverse=True, return_counts=True
  )
  if len(signers) < len(names):
    raise errors.UserError(
        f"cannot split {len(signers)} signers into "
        f"{len(names)} non-empty splits {names}"
    )
  targets = weights / weights.sum() * len(participant_ids)
  rng = np.random.default_rng(seed)
  best, best_error = None, np.inf
  for _ in range(_TRIALS):
    order = rng.permutation(len(signers))
    split_of = np.empty(len(signers), np.int64)
    split_of[order] = _assign(counts[order], targets)
    error = np.abs(np.bincount(split_of, counts, len(names)) - targets).sum()
    if error < best_error:
      best, best_error = split_of, error
  split_of_row = best[signer_of_row]
  return {n: np.flatnonzero(split_of_row == k) for k, n in enumerate(names)}


def load_splits(
    cache_dir: str | os.PathLike,
    *,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    include_supplemental: bool = False,
    min_hand_frames: int = 2,
) -> dict[str, cache.SequenceSource | cache.ConcatSource]:
  """The prepared `train` source split by signer.

  Sequences with fewer than `min_hand_frames` frames with a hand are then
  left out of every split (the reference drops `real_len < 15` from each of
  its splits: gesture_dataset.py, min_seq_len); the signers' split is made
  before, so it does not move with the minimum. The number left out is
  logged.

  With `include_supplemental`, the supplemental sentences are added to the
  `train` split, except those of signers in another split: in the
  competition both files come from one pool of signers, so keeping them
  would put every validation and test signer into training. The split of
  train.csv does not change; the sentences left out are counted in a
  warning. (Splitting the union by signer instead would move train.csv's
  split with the supplemental file's presence.)
  """
  if include_supplemental and "train" not in fractions:
    raise errors.UserError(
        "include_supplemental needs a 'train' split, got " f"{list(fractions)}"
    )
  full = cache.SequenceSource(cache_dir, "train")
  long_enough = full.hand_frames >= min_hand_frames
  rows = split_by_signer(full.participant_ids, fractions, seed)
  if not long_enough.all():
    logging.info(
        "%d of %d sequences have fewer than %d frames with a hand: "
        "left out of every split",
        (~long_enough).sum(),
        len(long_enough),
        min_hand_frames,
    )
  out = {
      n: cache.SequenceSource(cache_dir, "train", r[long_enough[r]])
      for n, r in rows.items()
  }
  if include_supplemental:
    supplemental = cache.SequenceSource(cache_dir, "supplemental")
    held_out = np.concatenate(
        [s.participant_ids for n, s in out.items() if n != "train"]
        or [np.zeros(0, np.int64)]
    )
    leak = np.isin(supplemental.participant_ids, held_out)
    short = supplemental.hand_frames < min_hand_frames
    if leak.any():
      logging.warning(
          "supplemental data: %d of %d sequences are by %d signers of the "
          "validation/test splits; left out of training",
          leak.sum(),
          len(leak),
          len(np.unique(supplemental.participant_ids[leak])),
      )
    out["train"] = cache.ConcatSource(
        [
            out["train"],
            cache.SequenceSource(
                cache_dir, "supplemental", np.flatnonzero(~leak & ~short)
            ),
        ]
    )
  return out
