"""Tests for the grain input pipeline."""

import itertools
import json

import grain
import numpy as np
import pytest

from asl_vq import errors
from asl_vq import vocab
from asl_vq.data import pipeline

PHRASES = ("hello world", "3 main st", "a-b.com/x", "42", "zz top")


class FakeSource:
  """In-memory stand-in for `asl_vq.data.cache` with empty frames and NaNs."""

  num_quantizers = None

  def __init__(self, n, seed=0, min_len=5, max_len=60):
    rng = np.random.default_rng(seed)
    self._items = []
    hand_frames = []
    for i in range(n):
      t = int(rng.integers(min_len, max_len + 1))
      hands = rng.random((t, 42, 2), dtype=np.float32)
      hands[rng.random((t, 42)) < 0.3] = np.nan  # Missing points.
      hands[rng.random(t) < 0.2] = np.nan  # Frames with no hand at all.
      hands[0, :21] = np.nan  # Keep frame 0 (right hand present).
      hand_frames.append(int((~np.isnan(hands).all(axis=(1, 2))).sum()))
      self._items.append(
          {
              "hands": hands,
              "phrase": PHRASES[i % len(PHRASES)],
              "sequence_id": 1000 + i,
              "participant_id": i % 3,
          }
      )
    self.hand_frames = np.array(hand_frames, np.int64)

  def __len__(self):
    return len(self._items)

  def __getitem__(self, i):
    return self._items[i]


@pytest.fixture(scope="module")
def source():
  return FakeSource(50)


def _batches(ds, n):
  return list(itertools.islice(iter(ds), n))


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _reference_normalize(hands):
  out = hands.astype(np.float64).copy()
  for axis in range(2):
    v = hands[..., axis].astype(np.float64)
    std = np.nanstd(v)
    out[..., axis] = (v - np.nanmean(v)) / (std if std > 0 else 1.0)
  return np.nan_to_num(out, nan=0.0).astype(np.float32)


def _reference_flip(x):
  out = np.empty_like(x)
  for p in range(42):
    q = p + 21 if p < 21 else p - 21
    out[:, q, 0] = -x[:, p, 0]
    out[:, q, 1] = x[:, p, 1]
  return out


# Preprocessing.


def test_drop_empty_frames():
  hands = np.ones((4, 42, 2), np.float32)
  hands[1] = np.nan
  hands[2, :, 0] = np.nan  # y still present: a hand frame.
  hands[3, 5:] = np.nan
  out = pipeline.drop_empty_frames(hands)
  assert out.shape == (3, 42, 2)
  np.testing.assert_array_equal(out, hands[[0, 2, 3]])


def test_normalize_matches_reference(source):
  hands = pipeline.drop_empty_frames(source[0]["hands"])
  out = pipeline.normalize(hands)
  np.testing.assert_allclose(out, _reference_normalize(hands), atol=1e-5)
  assert not np.isnan(out).any()
  valid = ~np.isnan(hands)
  for axis in range(2):
    vals = out[..., axis][valid[..., axis]]
    assert abs(vals.mean()) < 1e-5 and abs(vals.std() - 1) < 1e-5


def test_normalize_constant_axis_is_centred():
  hands = np.full((3, 42, 2), 0.5, np.float32)
  hands[:, :, 1] = np.linspace(0, 1, 42)
  hands[1, :21] = np.nan
  out = pipeline.normalize(hands)
  np.testing.assert_allclose(out, _reference_normalize(hands), atol=1e-6)
  np.testing.assert_array_equal(out[..., 0], 0.0)


def test_hand_normalization_reads_each_hand_alone(source):
  """ "hand": a frame's values do not depend on the frames around it, nor a
  hand's on where it is in the image, how large, or where the other hand
  is; `v * std + mean` undoes it (what `Tokenizer.to_image` applies)."""
  hands = pipeline.drop_empty_frames(source[0]["hands"])
  hands[2, :21] = np.nan  # a frame with one hand of two.
  out = pipeline.normalize(hands, normalization="hand")
  for t in (0, 2, len(hands) - 1):
    np.testing.assert_allclose(
        pipeline.normalize(hands[t : t + 1], normalization="hand")[0],
        out[t],
        atol=1e-6,
    )
  moved = hands * 1.7 + 0.2
  moved[:, 21:] += 0.3  # the right hand elsewhere.
  np.testing.assert_allclose(
      pipeline.normalize(moved, normalization="hand"), out, atol=1e-5
  )
  mean, std = pipeline.statistics(hands, "hand")
  seen = ~np.isnan(hands)
  np.testing.assert_allclose((out * std + mean)[seen], hands[seen], atol=1e-5)
  # Each detected hand: its detected points centred, their RMS distance
  # from the centre 1.
  checked = 0
  for side in (slice(0, 21), slice(21, 42)):
    for frame, points in zip(out[:, side], seen[:, side].all(-1)):
      if points.sum() > 1:
        x = frame[points]
        np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(
            np.sqrt((x**2).sum(-1).mean()), 1.0, rtol=1e-5
        )
        checked += 1
  assert checked >= len(hands)


def test_hand_normalized_frames_are_drawn_side_by_side(source):
  x = pipeline.normalize(source[0]["hands"], normalization="hand")
  drawn = pipeline.drawable(x, "hand")
  seen = (x != 0).any(-1)[..., None]  # undetected points stay at 0.
  assert seen.any() and not seen.all()
  d = pipeline.HAND_SPACING
  np.testing.assert_allclose(
      drawn[:, :21, :1], x[:, :21, :1] - d * seen[:, :21]
  )
  np.testing.assert_allclose(
      drawn[:, 21:, :1], x[:, 21:, :1] + d * seen[:, 21:]
  )
  np.testing.assert_array_equal(drawn[..., 1], x[..., 1])
  np.testing.assert_array_equal(pipeline.drawable(x, "sequence"), x)


@pytest.mark.parametrize("method", ["nearest", "linear"])
def test_kept_frames_name_the_input_frame_of_each_preprocessed_one(
    source, method
):
  hands = source[0]["hands"]
  present = np.flatnonzero(~np.isnan(hands).all(axis=(1, 2)))
  np.testing.assert_array_equal(pipeline.kept_frames(hands, 100), present)
  short = len(present) - 7  # resampled to fewer frames
  frames = pipeline.kept_frames(hands, short, method)
  assert len(frames) == short and set(frames) <= set(present)
  assert frames[0] == present[0] and frames[-1] <= present[-1]
  if method == "nearest":  # exactly the frames `preprocess` keeps.
    x = pipeline.normalize(pipeline.drop_empty_frames(hands))
    inputs, _ = pipeline.preprocess(hands, max_len=short, flip=False)
    np.testing.assert_array_equal(
        inputs[:short], x[np.searchsorted(present, frames)]
    )


def test_unknown_normalization_is_refused():
  with pytest.raises(errors.UserError, match="data.normalization='image'"):
    pipeline.statistics(np.zeros((2, 42, 2)), "image")


def test_flip_matches_reference_and_is_an_involution(source):
  x = pipeline.normalize(pipeline.drop_empty_frames(source[1]["hands"]))
  np.testing.assert_array_equal(pipeline.flip(x), _reference_flip(x))
  np.testing.assert_array_equal(pipeline.flip(pipeline.flip(x)), x)


def test_resample_takes_the_nearest_frame_as_pytorch():
  # F.interpolate(mode='nearest'): output i <- input floor(i * T / length),
  # worked out by hand below.
  t = np.arange(10, dtype=np.float32)
  x = np.broadcast_to(t[:, None, None], (10, 42, 2)).copy()
  out = pipeline.resample(x, 4)
  assert out.shape == (4, 42, 2)
  np.testing.assert_array_equal(out[:, 0, 0], [0, 2, 5, 7])
  up = pipeline.resample(x, 19)
  np.testing.assert_array_equal(
      up[:, 7, 1], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9]
  )


def test_linear_resampling_keeps_the_endpoints():
  t = np.arange(10, dtype=np.float32)
  x = np.broadcast_to(t[:, None, None], (10, 42, 2)).copy()
  np.testing.assert_allclose(
      pipeline.resample(x, 4, "linear")[:, 0, 0],
      [0.0, 3.0, 6.0, 9.0],
      atol=1e-5,
  )
  up = pipeline.resample(x, 19, "linear")  # Linear in time stays linear.
  np.testing.assert_allclose(up[:, 7, 1], np.arange(19) / 2, atol=1e-5)
  with pytest.raises(ValueError, match="resample must be one of"):
    pipeline.resample(x, 4, "cubic")


def test_preprocess_pads_and_resamples(source):
  hands = source[2]["hands"]
  t = int(source.hand_frames[2])
  inputs, mask = pipeline.preprocess(hands, max_len=64, flip=False)
  assert inputs.shape == (64, 42, 2) and inputs.dtype == np.float32
  np.testing.assert_array_equal(mask, np.arange(64) < t)
  np.testing.assert_allclose(
      inputs[:t],
      _reference_normalize(pipeline.drop_empty_frames(hands)),
      atol=1e-5,
  )
  np.testing.assert_array_equal(inputs[t:], 0.0)
  flipped, _ = pipeline.preprocess(hands, max_len=64, flip=True)
  np.testing.assert_array_equal(flipped, _reference_flip(inputs))

  short, mask = pipeline.preprocess(hands, max_len=4, flip=False)
  assert short.shape == (4, 42, 2) and mask.all()
  np.testing.assert_array_equal(short, pipeline.resample(inputs[:t], 4))
  linear, _ = pipeline.preprocess(
      hands, max_len=4, flip=False, resample_method="linear"
  )
  np.testing.assert_allclose(linear[[0, -1]], inputs[[0, t - 1]], atol=1e-6)
  with pytest.raises(ValueError, match="do not fit"):
    pipeline.preprocess(hands, max_len=64, flip=False, pad_to=t - 1)


def test_preprocess_sequence_without_hands():
  inputs, mask = pipeline.preprocess(
      np.full((5, 42, 2), np.nan, np.float32), max_len=8, flip=True
  )
  np.testing.assert_array_equal(inputs, 0.0)
  assert not mask.any()


def test_encode_labels():
  labels, label_mask = pipeline.encode_labels("a1 b", 6)
  np.testing.assert_array_equal(
      labels, [32, 16, 0, 33, vocab.PAD_ID, vocab.PAD_ID]
  )
  assert labels.dtype == np.int32 and label_mask.dtype == bool
  np.testing.assert_array_equal(label_mask, [1, 1, 1, 1, 0, 0])
  with pytest.raises(ValueError, match=r"sequence 7.*4 characters.*=3"):
    pipeline.encode_labels("a1 b", 3, sequence_id=7)
  labels, label_mask = pipeline.encode_labels("a1 b", 3, truncate=True)
  np.testing.assert_array_equal(labels, [32, 16, 0])
  np.testing.assert_array_equal(label_mask, True)
  with pytest.raises(vocab.UnknownCharacterError):
    pipeline.encode_labels("A", 3)


# Batching.


def test_default_buckets_and_choice():
  assert pipeline.default_buckets(384) == (96, 192, 288, 384)
  assert pipeline.default_buckets(100) == (32, 56, 80, 100)
  assert pipeline.choose_bucket(0, (96, 192)) == 96
  assert pipeline.choose_bucket(96, (192, 96)) == 96
  assert pipeline.choose_bucket(97, (96, 192)) == 192
  with pytest.raises(ValueError):
    pipeline.choose_bucket(193, (96, 192))


def test_batch_layout_and_buckets(source):
  buckets = (16, 32, 40)  # max_len 40 also resamples the longest sequences.
  ds = pipeline.make_dataset(
      source,
      global_batch_size=4,
      max_len=40,
      max_label_len=16,
      buckets=buckets,
      flip_prob=0.0,
  )
  seen = set()
  for batch in _batches(ds, 12):
    ids = batch["sequence_id"] - 1000
    longest = np.minimum(source.hand_frames[ids], 40).max()
    length = min(b for b in buckets if b >= longest)
    seen.add(length)
    assert batch["inputs"].shape == (4, length, 42, 2)
    assert batch["input_mask"].shape == (4, length)
    assert batch["labels"].shape == batch["label_mask"].shape == (4, 16)
    assert batch["example_mask"].all()
    for row, i in enumerate(ids):
      inputs, mask = pipeline.preprocess(
          source[i]["hands"], max_len=40, flip=False, pad_to=length
      )
      np.testing.assert_array_equal(batch["inputs"][row], inputs)
      np.testing.assert_array_equal(batch["input_mask"][row], mask)
      phrase = source[i]["phrase"]
      np.testing.assert_array_equal(
          batch["labels"][row, : len(phrase)], vocab.encode(phrase)
      )
      assert batch["label_mask"][row].sum() == len(phrase)
  assert len(seen) > 1, seen


def test_single_bucket_pads_to_max_len(source):
  ds = pipeline.make_dataset(
      source, global_batch_size=4, max_len=64, buckets=(64,)
  )
  assert all(b["inputs"].shape[1] == 64 for b in _batches(ds, 3))


def test_eval_covers_every_example_once_in_order(source):
  ds = pipeline.make_dataset(
      source, global_batch_size=16, max_len=64, train=False
  )
  batches = list(ds)
  assert len(batches) == pipeline.steps_per_epoch(source, 16, False) == 4
  assert all(b["inputs"].shape[0] == 16 for b in batches)
  mask = np.concatenate([b["example_mask"] for b in batches])
  ids = np.concatenate([b["sequence_id"] for b in batches])
  np.testing.assert_array_equal(mask, np.arange(64) < 50)
  np.testing.assert_array_equal(ids[mask], 1000 + np.arange(50))
  last = batches[-1]
  assert not last["input_mask"][2:].any()
  np.testing.assert_array_equal(last["label_mask"][2:], False)
  np.testing.assert_array_equal(last["sequence_id"][2:], -1)


def test_eval_never_flips(source):
  ds = pipeline.make_dataset(
      source, global_batch_size=10, max_len=64, train=False, flip_prob=1.0
  )
  batch = next(iter(ds))
  inputs, _ = pipeline.preprocess(
      source[0]["hands"],
      max_len=64,
      flip=False,
      pad_to=batch["inputs"].shape[1],
  )
  np.testing.assert_array_equal(batch["inputs"][0], inputs)


def test_train_flips_with_probability_one(source):
  kw = dict(global_batch_size=8, max_len=64, seed=3)
  plain = next(iter(pipeline.make_dataset(source, flip_prob=0.0, **kw)))
  flipped = next(iter(pipeline.make_dataset(source, flip_prob=1.0, **kw)))
  np.testing.assert_array_equal(flipped["sequence_id"], plain["sequence_id"])
  for a, b in zip(flipped["inputs"], plain["inputs"]):
    np.testing.assert_array_equal(a, pipeline.flip(b))


def test_same_seed_same_batches_different_seed_different_order(source):
  kw = dict(global_batch_size=8, max_len=64)
  a = _batches(pipeline.make_dataset(source, seed=1, **kw), 5)
  _assert_batches_equal(
      a, _batches(pipeline.make_dataset(source, seed=1, **kw), 5)
  )
  b = _batches(pipeline.make_dataset(source, seed=2, **kw), 5)
  assert not np.array_equal(
      np.concatenate([x["sequence_id"] for x in a]),
      np.concatenate([x["sequence_id"] for x in b]),
  )


def test_training_epochs_are_reshuffled_full_batches(source):
  steps = pipeline.steps_per_epoch(source, 8, True)
  assert steps == 6  # 50 // 8: the remainder is dropped.
  ds = pipeline.make_dataset(source, global_batch_size=8, max_len=64)
  batches = _batches(ds, 3 * steps)
  epochs = [
      np.concatenate(
          [b["sequence_id"] for b in batches[e * steps : (e + 1) * steps]]
      )
      for e in range(3)
  ]
  for ids in epochs:
    assert len(set(ids)) == 48 and set(ids) <= set(1000 + np.arange(50))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


def test_restored_iterator_continues_identically(source):
  ds = pipeline.make_dataset(source, global_batch_size=8, max_len=64, seed=5)
  it = iter(ds)
  _ = [next(it) for _ in range(7)]  # Crosses an epoch boundary (6 steps).
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(4)]
  resumed = iter(
      pipeline.make_dataset(source, global_batch_size=8, max_len=64, seed=5)
  )  # A new run.
  resumed.set_state(state)
  _assert_batches_equal([next(resumed) for _ in range(4)], expected)


def test_orbax_checkpoint_round_trip(source, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  ds = pipeline.make_dataset(source, global_batch_size=8, max_len=64, seed=5)
  it = iter(ds)
  _ = [next(it) for _ in range(3)]
  with ocp.CheckpointManager(tmp_path) as mngr:
    mngr.save(
        3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it))
    )
    mngr.wait_until_finished()
  expected = [next(it) for _ in range(3)]
  resumed = iter(ds)
  with ocp.CheckpointManager(tmp_path) as mngr:
    mngr.restore(
        mngr.latest_step(),
        args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(resumed)
        ),
    )
  _assert_batches_equal([next(resumed) for _ in range(3)], expected)


@pytest.mark.parametrize("train", [True, False])
def test_process_slices_concatenate_to_global_batch(source, train):
  kw = dict(
      global_batch_size=12, max_len=64, seed=4, train=train, flip_prob=0.5
  )
  whole = _batches(pipeline.make_dataset(source, **kw), 5)
  parts = [
      _batches(
          pipeline.make_dataset(source, process_index=p, process_count=2, **kw),
          5,
      )
      for p in range(2)
  ]
  for step, batch in enumerate(whole):
    for k, v in batch.items():
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][k], parts[1][step][k]]), v, err_msg=k
      )


def test_bad_arguments(source):
  with pytest.raises(ValueError, match="multiple of process_count"):
    pipeline.make_dataset(source, global_batch_size=9, process_count=2)
  with pytest.raises(ValueError, match="reach max_len"):
    pipeline.make_dataset(source, global_batch_size=8, buckets=(16, 32))
  with pytest.raises(ValueError, match="fewer than one global batch"):
    pipeline.make_dataset(source, global_batch_size=64)


def test_long_phrase_error_names_the_sequence(source):
  ds = pipeline.make_dataset(
      source, global_batch_size=5, max_len=64, max_label_len=4, train=False
  )
  with pytest.raises(ValueError, match="sequence 1000"):
    next(iter(ds))


def _padded_frames(batches, lengths, buckets):
  return sum(
      pipeline.choose_bucket(lengths[b].max(), buckets) * len(b)
      for b in batches
  )


def test_length_grouping_keeps_the_epochs_examples_and_pads_less():
  lengths = np.random.default_rng(0).integers(10, 193, 1000)
  buckets = pipeline.default_buckets(192)
  plain = pipeline.epoch_batches(3, 1, lengths, 24, 0)
  grouped = pipeline.epoch_batches(3, 1, lengths, 24, 8)
  assert plain.shape == grouped.shape == (41, 24)
  # The same examples (the epoch's permutation, less the same remainder).
  np.testing.assert_array_equal(np.sort(grouped, None), np.sort(plain, None))
  assert len(np.unique(grouped)) == grouped.size
  # Each batch is a slice of a length-sorted run of 8 batches.
  spreads = [np.ptp(lengths[b]) for b in grouped]
  assert np.median(spreads) < 0.25 * np.median(
      [np.ptp(lengths[b]) for b in plain]
  )
  assert _padded_frames(grouped, lengths, buckets) < 0.8 * _padded_frames(
      plain, lengths, buckets
  )
  # Batches are reshuffled: lengths do not rise through the epoch.
  means = lengths[grouped].mean(axis=1)
  assert not (np.all(np.diff(means[:8]) >= 0))
  # Deterministic per (seed, epoch); another epoch, another order.
  np.testing.assert_array_equal(
      grouped, pipeline.epoch_batches(3, 1, lengths, 24, 8)
  )
  assert not np.array_equal(
      grouped, pipeline.epoch_batches(3, 2, lengths, 24, 8)
  )


def test_length_grouped_training_batches_follow_epoch_batches(source):
  kw = dict(
      global_batch_size=4, max_len=64, seed=5, flip_prob=0.0, length_grouping=3
  )
  steps = pipeline.steps_per_epoch(source, 4, True)
  batches = _batches(pipeline.make_dataset(source, **kw), steps + 2)
  lengths = np.minimum(source.hand_frames, 64)
  for step, batch in enumerate(batches):
    epoch, b = divmod(step, steps)
    expected = pipeline.epoch_batches(5, epoch, lengths, 4, 3)[b]
    np.testing.assert_array_equal(batch["sequence_id"], 1000 + expected)
