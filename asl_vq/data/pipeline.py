"""The grain input pipeline: per-sequence preprocessing and global batches.

Every process builds the same stream of *global* batches of example indices
(shuffled per epoch from the seed) and loads only its own slice of each, so the
global batch is agreed on without communication. Batches come out as numpy
dicts ready for `jax.make_array_from_process_local_data` on a mesh axis 'data'.

The stream is a `grain.MapDataset` indexed by the global step, so the iterator
state is just the next step (`{'next_index': k}`): resuming from it replays
exactly the batches an uninterrupted run would have seen, and grain's thread
pool can prepare the next batches in the background without affecting them.
"""

from __future__ import annotations

import hashlib

import functools
import math
import operator
import sys
from typing import Any, Protocol, Sequence

import grain
import numpy as np

from asl_vq import errors
from asl_vq import vocab
from asl_vq.data import layout

_NUM_POINTS = layout.NUM_POINTS
_H = layout.NUM_HAND_POINTS
# Point permutation that swaps the left (0..20) and right (21..41) hands.
_SWAP_HANDS = np.r_[_H : 2 * _H, 0:_H]
# Stream tags so that shuffling and flipping draw independent random numbers.
_SHUFFLE_STREAM = 0
_FLIP_STREAM = 1
_GROUP_STREAM = 2


class Source(Protocol):
  """Random-access sequences (see `asl_vq.data.cache`, `asl_vq.data.tokens`).

  Items are dicts with "phrase", "sequence_id" and either "hands" (raw
  landmarks [T, 42, 2]) or "codes" (a tokenized sequence, int [T, Q]).
  """

  hand_frames: np.ndarray  # int64 [len]: frames with a hand (= code rows).
  # Code sources: the number of code streams Q; landmark sources: None.
  num_quantizers: int | None
  # What the sequences were made from (JSON): the data's fingerprint, the
  # sequences' digest and, for codes, the tokenizer checkpoint and step.
  # A run records it; a changed origin makes its outputs stale.
  origin: dict[str, Any]

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> dict[str, Any]:
    ...


def digest(ids: np.ndarray) -> str:
  """A short stable digest of an int array (e.g. a split's sequence ids)."""
  return hashlib.sha256(
      np.ascontiguousarray(ids, np.int64).tobytes()
  ).hexdigest()[:16]


def source_index(i: int, size: int) -> int:
  """A `Source` item index in [0, size) (negative ones count from the end).

  Raises:
    IndexError: out of range.
  """
  i = operator.index(i)
  if not -size <= i < size:
    raise IndexError(f"index {i} out of range for {size} sequences")
  return i % size


# ---------------------------------------------------------------------------
# Per-sequence preprocessing (pure numpy, reused by the tokenizer API).
# ---------------------------------------------------------------------------


def drop_empty_frames(hands: np.ndarray) -> np.ndarray:
  """Drops frames with no hand detected (all 84 coordinates NaN)."""
  return hands[~np.isnan(hands).all(axis=(1, 2))]


NORMALIZATIONS = ("sequence", "hand")


def axis_statistics(hands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std), float64 [D] each: per axis over the non-NaN values, the
  population std (ddof 0) as in the reference; a constant or empty axis has
  std 1 (only centred), an empty one mean 0."""
  mean, std = np.zeros(hands.shape[-1]), np.ones(hands.shape[-1])
  for axis in range(hands.shape[-1]):
    values = hands[..., axis][~np.isnan(hands[..., axis])].astype(np.float64)
    if len(values):
      mean[axis] = values.mean()
      std[axis] = values.std() if values.std() > 0 else 1.0
  return mean, std


def hand_statistics(hands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std), float64 [T, 42, 2] each, of each hand of each frame of
  hands [T, 42, 2] on its own (the values of a hand's 21 points repeated):
  the mean of the hand's detected points per axis, and one scale for both
  axes (the image's aspect kept), their RMS distance from that mean (the
  hand's size). An undetected hand, or one of a single point, has mean 0
  / std 1 where undefined."""
  t = len(hands)
  h = hands.astype(np.float64).reshape(t, 2, _H, 2)
  present = ~np.isnan(h).any(axis=-1)  # [T, 2, 21]
  count = np.maximum(present.sum(axis=-1), 1)[..., None]  # [T, 2, 1]
  centre = np.where(present[..., None], h, 0.0).sum(axis=2) / count
  sq = np.where(present, ((h - centre[:, :, None]) ** 2).sum(-1), 0.0)
  size = np.sqrt(sq.sum(axis=-1, keepdims=True) / count)  # [T, 2, 1]
  size = np.where(
      (present.sum(axis=-1, keepdims=True) > 1) & (size > 0), size, 1.0
  )
  return (
      np.repeat(centre, _H, axis=1),
      np.repeat(np.broadcast_to(size, (t, 2, 2)), _H, axis=1),
  )


def statistics(
    hands: np.ndarray, normalization: str = "sequence"
) -> tuple[np.ndarray, np.ndarray]:
  """What `normalize` subtracts and divides by, of hands [T, 42, 2]:
  "sequence" (the reference): per axis over the whole sequence
  (`axis_statistics`, [2] each), so that camera placement and signer size
  do not matter; "hand": each hand of each frame on its own
  (`hand_statistics`, [T, 42, 2] each), so that a frame's values do not
  depend on the frames around it, nor a hand's shape on where the hand is
  (README, "Any length"). `v * std + mean` undoes either
  (`Tokenizer.to_image`).

  Raises:
    errors.UserError: an unknown `normalization`.
  """
  if normalization == "sequence":
    return axis_statistics(hands)
  if normalization == "hand":
    return hand_statistics(hands)
  raise errors.UserError(
      f"data.normalization={normalization!r}: one of "
      f"{', '.join(NORMALIZATIONS)}"
  )


# "hand": where `drawable` puts each hand's origin (x, model units: a hand's
# RMS radius is 1, its extent about +-2; `asl_vq.decode`'s canvas spans +-4).
HAND_SPACING = 2.0


def drawable(x: np.ndarray, normalization: str) -> np.ndarray:
  """Model-space landmarks [..., 42, 2] (`normalize`'s, or a decoder's)
  laid out to be drawn: "hand" puts every hand at its own origin, so the
  left one is moved `HAND_SPACING` to the left and the right one as far to
  the right (a point at exactly (0, 0), `normalize`'s undetected one, stays:
  an absent hand stays absent); "sequence" as they are."""
  x = np.array(x, np.float32)
  if normalization == "hand":
    seen = (x != 0).any(axis=-1)
    x[..., :_H, 0] -= np.where(seen[..., :_H], HAND_SPACING, 0.0)
    x[..., _H:, 0] += np.where(seen[..., _H:], HAND_SPACING, 0.0)
  return x


def normalize(
    hands: np.ndarray,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
    normalization: str = "sequence",
) -> np.ndarray:
  """`(v - mean) / std` with `statistics(hands, normalization)` (or the
  `stats` given), then NaN -> 0; float32 [T, 42, 2]."""
  mean, std = statistics(hands, normalization) if stats is None else stats
  out = (hands.astype(np.float64) - mean) / std
  return np.where(np.isnan(out), 0.0, out).astype(np.float32)


def flip(hands: np.ndarray) -> np.ndarray:
  """Mirrors a normalised sequence: negates x and swaps left/right hands."""
  out = hands[:, _SWAP_HANDS]
  out[..., 0] *= -1
  return out


_flip = flip  # `preprocess`'s keyword `flip` shadows the function.


RESAMPLINGS = ("nearest", "linear")


def resample(
    hands: np.ndarray, length: int, method: str = "nearest"
) -> np.ndarray:
  """Resamples a sequence in time to `length` frames.

  'nearest' (the reference's `F.interpolate` default): output frame i is
  input frame floor(i * T / length), the scale T / length in float32 as
  PyTorch computes it. 'linear': linear interpolation between frames,
  keeping both endpoints (this project's rule before it followed the
  reference; runs saved before `data.resample` existed use it).

  Raises:
    ValueError: `hands` has no frames, or an unknown method.
  """
  if method not in RESAMPLINGS:
    raise errors.UserError(
        f"resample must be one of {', '.join(RESAMPLINGS)}, " f"not {method!r}"
    )
  t = hands.shape[0]
  if t == length:
    return hands
  if t == 0:
    raise errors.UserError("cannot resample a sequence with no frames")
  if method == "linear":
    pos = np.linspace(0.0, t - 1, length)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, t - 1)
    w = (pos - lo).astype(hands.dtype)[:, None, None]
    return hands[lo] * (1 - w) + hands[hi] * w
  scale = np.float32(t) / np.float32(length)
  src = np.floor(np.arange(length, dtype=np.float32) * scale).astype(np.int64)
  return hands[np.minimum(src, t - 1)]


def kept_frames(
    hands: np.ndarray, max_len: int, method: str = "nearest"
) -> np.ndarray:
  """int64 [T']: the input frame of each of `preprocess`'s frames (without
  its padding) of hands [T, 42, 2]: the frames with a hand, resampled as
  `resample` resamples them past `max_len` (linear: the nearer of the two
  frames blended)."""
  index = np.flatnonzero(~np.isnan(layout.missing_as_nan(hands)).all((1, 2)))
  if len(index) <= max_len:
    return index
  position = np.arange(len(index), dtype=np.float64)[:, None, None]
  picked = resample(position, max_len, method)[:, 0, 0]
  return index[np.rint(picked).astype(np.int64)]


def preprocess(
    hands: np.ndarray,
    *,
    max_len: int,
    flip: bool,
    pad_to: int | None = None,
    resample_method: str = "nearest",
    normalization: str = "sequence",
    with_scale: bool = False,
):
  """Raw hands [T, 42, 2] -> (inputs f32 [pad_to, 42, 2], mask bool [pad_to]).

  Drops empty frames, normalises (`statistics`' `normalization`),
  optionally flips, resamples sequences longer than `max_len` to `max_len`
  (`resample`'s method) and zero-pads to `pad_to` (default `max_len`); the
  mask is True on real frames. Non-finite values are missing detections
  (`layout.missing_as_nan`). `with_scale`: also the scale f32 [pad_to, 42,
  2] of each value, the std it was divided by (0 where the point was not
  detected, and on padding), flipped and resampled with it: `(a - b) *
  scale` is a difference in the input's units (image fractions).
  """
  pad_to = max_len if pad_to is None else pad_to
  kept = drop_empty_frames(layout.missing_as_nan(hands))
  stats = statistics(kept, normalization)
  x = normalize(kept, stats)
  # What each value was divided by, carried through flip and resampling.
  scale = (
      np.where(
          np.isnan(kept), 0.0, np.broadcast_to(stats[1], kept.shape)
      ).astype(np.float32)
      if with_scale
      else None
  )
  if flip:
    x = _flip(x)
    scale = None if scale is None else scale[:, _SWAP_HANDS]
  if x.shape[0] > max_len:
    x = resample(x, max_len, resample_method)
    if scale is not None:
      scale = resample(scale, max_len, resample_method)
  t = x.shape[0]
  if t > pad_to:
    raise errors.UserError(
        f"{t} frames do not fit in a padded length of {pad_to}"
    )
  inputs = np.zeros((pad_to, _NUM_POINTS, 2), np.float32)
  inputs[:t] = x
  if not with_scale:
    return inputs, np.arange(pad_to) < t
  scales = np.zeros((pad_to, _NUM_POINTS, 2), np.float32)
  scales[:t] = scale
  return inputs, np.arange(pad_to) < t, scales


def pad_codes(codes: np.ndarray, pad_to: int) -> tuple[np.ndarray, np.ndarray]:
  """Codes [T, Q] -> (int32 [pad_to, Q] padded with 0, mask bool [pad_to]).

  Codes are not resampled: a code sequence longer than `pad_to` is an error
  (tokenize with a `max_len` no longer than the consumer's).
  """
  t = codes.shape[0]
  if t > pad_to:
    raise errors.UserError(
        f"{t} code frames do not fit in a padded length of " f"{pad_to}"
    )
  out = np.zeros((pad_to, codes.shape[1]), np.int32)
  out[:t] = codes
  return out, np.arange(pad_to) < t


def encode_labels(
    phrase: str,
    max_label_len: int,
    *,
    sequence_id: object = None,
    truncate: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
  """Phrase -> (labels i32 [S] padded with PAD_ID, label_mask bool [S]).

  label_mask is True on the phrase's characters. A phrase longer than
  `max_label_len` is an error unless `truncate`: a cut label silently teaches
  CTC the wrong target.
  """
  ids = vocab.encode(phrase, sequence_id)
  if len(ids) > max_label_len:
    if not truncate:
      raise errors.UserError(
          f"sequence {sequence_id}: phrase {phrase!r} has {len(ids)} "
          f"characters, more than max_label_len={max_label_len}; raise "
          "max_label_len or pass truncate_labels=True"
      )
    ids = ids[:max_label_len]
  labels = np.full(max_label_len, vocab.PAD_ID, np.int32)
  labels[: len(ids)] = ids
  return labels, np.arange(max_label_len) < len(ids)


# ---------------------------------------------------------------------------
# Batching.
# ---------------------------------------------------------------------------


def default_buckets(max_len: int) -> tuple[int, ...]:
  """Quarters of `max_len`, rounded up to multiples of 8, capped at max_len."""
  quarters = (max_len * k // 4 for k in (1, 2, 3))
  return tuple(
      sorted({min(-(-q // 8) * 8, max_len) for q in quarters} | {max_len})
  )


def choose_bucket(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket that holds `length` frames."""
  for b in sorted(buckets):
    if b >= length:
      return b
  raise errors.UserError(f"no bucket in {tuple(buckets)} holds {length} frames")


def steps_per_epoch(source: Source, global_batch_size: int, train: bool) -> int:
  """Full batches per epoch in training; batches of one pass in evaluation."""
  n = len(source)
  if train:
    if n < global_batch_size:
      raise errors.UserError(
          f"the training split has {n} sequences, fewer than "
          f"one global batch of {global_batch_size}: lower "
          "--config.train.batch_size or use more data"
      )
    return n // global_batch_size
  return math.ceil(n / global_batch_size)


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng((seed, _SHUFFLE_STREAM, epoch)).permutation(n)


def epoch_batches(
    seed: int,
    epoch: int,
    lengths: np.ndarray,
    batch_size: int,
    length_grouping: int,
) -> np.ndarray:
  """Example indices [steps, batch_size] of a training epoch.

  A fresh permutation of the examples, cut into full batches. With
  `length_grouping` = G > 1, each run of G batches is sorted by length
  before it is cut, and the epoch's batches are then shuffled: a batch holds
  sequences of similar length, so it pads to a smaller bucket (a third fewer
  padded frames on the synthetic data's lengths), yet its examples and the
  order of lengths through the epoch stay random.
  """
  steps = len(lengths) // batch_size
  order = _epoch_order(seed, epoch, len(lengths))[: steps * batch_size]
  if length_grouping > 1:
    window = length_grouping * batch_size
    order = np.concatenate(
        [
            chunk[np.argsort(lengths[chunk], kind="stable")]
            for chunk in np.split(order, range(window, len(order), window))
        ]
    )
  batches = order.reshape(steps, batch_size)
  if length_grouping > 1:
    batches = batches[
        np.random.default_rng((seed, _GROUP_STREAM, epoch)).permutation(steps)
    ]
  return batches


class _BatchLoader:
  """Global step -> this process's slice of the global batch, as numpy."""

  def __init__(
      self,
      source: Source,
      *,
      global_batch_size: int,
      max_len: int,
      max_label_len: int,
      seed: int,
      train: bool,
      buckets: Sequence[int],
      process_index: int,
      process_count: int,
      flip_prob: float,
      truncate_labels: bool,
      length_grouping: int,
      resample_method: str,
      normalization: str,
  ):
    self._source = source
    self._resample = resample_method
    self._normalization = normalization
    self._global = global_batch_size
    self._local = global_batch_size // process_count
    self._offset = process_index * self._local
    self._max_len = max_len
    self._max_label_len = max_label_len
    self._seed = seed
    self._train = train
    self._buckets = tuple(buckets)
    self._flip_prob = flip_prob if train else 0.0
    self._truncate = truncate_labels
    self._grouping = length_grouping
    self._epoch = (-1, None)  # (epoch, its batches): computed once.
    self._lengths = np.minimum(np.asarray(source.hand_frames), max_len)
    self._num_quantizers = source.num_quantizers  # None: landmarks.
    self._steps = steps_per_epoch(source, global_batch_size, train)

  def global_indices(self, step: int) -> np.ndarray:
    """Example indices of the global batch at `step`; -1 marks padding."""
    if self._train:
      epoch, b = divmod(step, self._steps)
      cached_epoch, batches = self._epoch
      if cached_epoch != epoch:
        batches = epoch_batches(
            self._seed, epoch, self._lengths, self._global, self._grouping
        )
        self._epoch = (epoch, batches)
      return batches[b]
    idx = np.arange(step * self._global, (step + 1) * self._global)
    return np.where(idx < len(self._source), idx, -1)

  def _flips(self, step: int) -> np.ndarray:
    # Drawn for the whole global batch so that every process agrees.
    rng = np.random.default_rng((self._seed, _FLIP_STREAM, step))
    return rng.random(self._global) < self._flip_prob

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    idx = self.global_indices(step)
    real = idx[idx >= 0]
    length = choose_bucket(
        int(self._lengths[real].max(initial=0)), self._buckets
    )
    sl = slice(self._offset, self._offset + self._local)
    if self._num_quantizers is None:
      frames = {
          k: np.zeros((self._local, length, _NUM_POINTS, 2), np.float32)
          for k in ("inputs", "scale")
      }
    else:
      frames = {
          "codes": np.zeros(
              (self._local, length, self._num_quantizers), np.int32
          )
      }
    batch = {
        **frames,
        "input_mask": np.zeros((self._local, length), bool),
        "labels": np.full(
            (self._local, self._max_label_len), vocab.PAD_ID, np.int32
        ),
        "label_mask": np.zeros((self._local, self._max_label_len), bool),
        "example_mask": idx[sl] >= 0,
        "sequence_id": np.full(self._local, -1, np.int64),
    }
    for row, (i, flip_it) in enumerate(zip(idx[sl], self._flips(step)[sl])):
      if i >= 0:
        self._load(int(i), bool(flip_it), length, batch, row)
    return batch

  def _load(
      self,
      index: int,
      flip_it: bool,
      length: int,
      batch: dict[str, np.ndarray],
      row: int,
  ) -> None:
    ex = self._source[index]
    sid = ex["sequence_id"]
    try:
      if self._num_quantizers is None:
        batch["inputs"][row], batch["input_mask"][row], batch["scale"][row] = (
            preprocess(
                ex["hands"],
                max_len=self._max_len,
                flip=flip_it,
                pad_to=length,
                resample_method=self._resample,
                normalization=self._normalization,
                with_scale=True,
            )
        )
      else:  # Codes are never flipped: a mirrored code is not defined.
        batch["codes"][row], batch["input_mask"][row] = pad_codes(
            ex["codes"], length
        )
    except ValueError as e:
      raise errors.UserError(
          f"sequence {sid} (index {index}): {e}; does "
          "source.hand_frames match its frames?"
      ) from None
    batch["labels"][row], batch["label_mask"][row] = encode_labels(
        ex["phrase"],
        self._max_label_len,
        sequence_id=sid,
        truncate=self._truncate,
    )
    batch["sequence_id"][row] = sid


def _check_args(
    source: Source,
    global_batch_size: int,
    max_len: int,
    buckets: Sequence[int],
    process_index: int,
    process_count: int,
    flip_prob: float,
) -> None:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise errors.UserError(
        f"global_batch_size={global_batch_size} must be a "
        f"positive multiple of process_count={process_count}"
    )
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index={process_index} is not in " f"[0, {process_count})"
    )
  if not buckets or min(buckets) <= 0 or max(buckets) < max_len:
    raise errors.UserError(
        f"buckets {tuple(buckets)} must be positive and reach "
        f"max_len={max_len}"
    )
  if not 0.0 <= flip_prob <= 1.0:
    raise errors.UserError(f"flip_prob={flip_prob} is not a probability")
  if len(source.hand_frames) != len(source):
    raise ValueError(
        f"source.hand_frames has {len(source.hand_frames)} "
        f"entries for {len(source)} examples"
    )


def make_dataset(
    source: Source,
    *,
    global_batch_size: int,
    max_len: int = 384,
    max_label_len: int = 64,
    seed: int = 0,
    train: bool = True,
    buckets: Sequence[int] | None = None,
    process_index: int = 0,
    process_count: int = 1,
    flip_prob: float = 0.25,
    truncate_labels: bool = False,
    length_grouping: int = 0,
    resample_method: str = "nearest",
    normalization: str = "sequence",
    prefetch: int = 2,
    num_threads: int = 1,
) -> grain.IterDataset:
  """Batches of this process's slice of the global batch.

  Training repeats forever, reshuffled each epoch, full batches only;
  evaluation is one ordered pass whose last batch is padded with dummy
  examples (`example_mask` False) so shapes stay static. Each batch is padded
  to the smallest of `buckets` (default `default_buckets(max_len)`) that holds
  its longest sequence, computed from `source.hand_frames` so every process
  agrees; longer sequences than `max_len` are resampled (`resample`, by
  `resample_method`); each is normalised as `normalization` says
  (`statistics`); `length_grouping` > 1 batches training sequences of
  similar length (see `epoch_batches`). `prefetch` batches are prepared
  ahead by `num_threads` background threads while the device runs
  (`prefetch=0` disables); the work is mostly GIL-bound numpy, so more threads only help a source that waits on I/O. The
  source must allow concurrent reads when `num_threads` > 1.

  A source of tokenized sequences (items with "codes" int [T, Q] instead of
  "hands", e.g. `asl_vq.data.tokens.TokenSource`) gives `codes` batches
  instead of `inputs`: codes are padded with 0, never flipped nor resampled.

  Returns:
    An IterDataset whose iterators yield dicts of numpy arrays (local = global
    batch / process_count, L = bucket length, S = max_label_len):
    inputs f32 [local, L, 42, 2] and scale f32 [local, L, 42, 2] (what
    each input value was divided by, 0 where not detected: `preprocess`'s
    `with_scale`; or codes i32 [local, L, Q] from a code source),
    input_mask bool [local, L],
    labels i32 [local, S], label_mask bool [local, S],
    example_mask bool [local], sequence_id i64 [local] (-1 on padding).
    Iterator state: `get_state()` -> {'next_index': step}, `set_state(...)`.
  """
  buckets = default_buckets(max_len) if buckets is None else tuple(buckets)
  _check_args(
      source,
      global_batch_size,
      max_len,
      buckets,
      process_index,
      process_count,
      flip_prob,
  )
  loader = _BatchLoader(
      source,
      global_batch_size=global_batch_size,
      max_len=max_len,
      max_label_len=max_label_len,
      seed=seed,
      train=train,
      buckets=buckets,
      process_index=process_index,
      process_count=process_count,
      flip_prob=flip_prob,
      truncate_labels=truncate_labels,
      length_grouping=length_grouping,
      resample_method=resample_method,
      normalization=normalization,
  )
  num_steps = (
      sys.maxsize
      if train
      else steps_per_epoch(source, global_batch_size, train)
  )
  return (
      grain.MapDataset.range(num_steps)
      .map(loader)
      .to_iter_dataset(
          grain.ReadOptions(
              num_threads=num_threads, prefetch_buffer_size=prefetch
          )
      )
  )
