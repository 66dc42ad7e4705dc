"""Tests of the prepared cache (cache.py) and the signer splits (splits.py)."""

import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asl_vq import vocab
from asl_vq.data import cache
from asl_vq.data import reader
from asl_vq.data import splits
import kaggle_fixture

SOURCES = ("train", "supplemental")


class Killed(Exception):
  """Stands for the process being killed in the middle of prepare."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return kaggle_fixture.write_dataset(tmp_path_factory.mktemp("kaggle"))


@pytest.fixture(scope="module")
def prepared(dataset, tmp_path_factory):
  cache_dir = tmp_path_factory.mktemp("cache")
  report = cache.prepare(dataset.root, cache_dir, SOURCES, progress=False)
  return cache_dir, report


def _outputs(cache_dir, source="train"):
  paths = cache.cache_paths(cache_dir, source)
  return [paths[k] for k in ("frames", "index", "report")]


def test_prepare_report_counts_and_skips(dataset, prepared):
  _, report = prepared
  train = report["train"]
  kept = kaggle_fixture.KEPT["train"]
  assert train["sequences"] == len(kaggle_fixture.LISTED["train"]) == 9
  assert train["kept"] == len(kept) == 6
  assert train["skipped"] == 3
  assert train["unlisted_sequences"] == 1
  assert train["files"] == 3
  assert not train["reused"]
  assert train["frames"] == sum(len(dataset.hands[s]) for s in kept) == 30
  assert train["hand_frames"] == 5 + 5 + 7 + 4 + 4 + 2
  assert train["skipped_by_reason"] == {
      "unknown_character": {"count": 0, "first_ids": []},
      "absent_from_file": {"count": 1, "first_ids": [204]},
      "no_hand": {"count": 1, "first_ids": [103]},
      "too_few_hand_frames": {"count": 1, "first_ids": [202]},
  }
  assert report["supplemental"]["kept"] == 2
  assert report["supplemental"]["skipped"] == 0


def test_cache_files(prepared):
  cache_dir, _ = prepared
  assert sorted(os.listdir(cache_dir)) == sorted(
      f"{s}.{k}"
      for s in SOURCES
      for k in (
          "frames.npy",
          "index.parquet",
          "report.json",
          "digests.json",
          "lock",
      )
  )
  index = pq.read_table(cache.cache_paths(cache_dir, "train")["index"])
  assert index.column_names == [
      "sequence_id",
      "participant_id",
      "phrase",
      "file_id",
      "offset",
      "length",
      "hand_frames",
  ]
  assert index["sequence_id"].to_pylist() == kaggle_fixture.KEPT["train"]
  frames = np.load(cache.cache_paths(cache_dir, "train")["frames"])
  assert frames.dtype == np.float32 and frames.shape == (30, 42, 2)


@pytest.mark.parametrize("source", SOURCES)
def test_sequence_source_gives_the_raw_hands(dataset, prepared, source):
  cache_dir, _ = prepared
  data = cache.SequenceSource(cache_dir, source)
  kept = kaggle_fixture.KEPT[source]
  assert len(data) == len(kept)
  assert list(data.sequence_ids) == kept
  assert data.phrases == [dataset.phrases[s] for s in kept]
  for i, sequence_id in enumerate(kept):
    item = data[i]
    expected = dataset.hands[sequence_id]
    assert item["sequence_id"] == sequence_id
    assert item["participant_id"] == dataset.participants[sequence_id]
    assert item["phrase"] == dataset.phrases[sequence_id]
    assert item["hands"].dtype == np.float32
    np.testing.assert_array_equal(item["hands"], expected)
    assert item["hands"].flags.writeable  # A copy, not the memmap.
    assert data.lengths[i] == len(expected)
    assert data.hand_frames[i] == reader.hand_frame_mask(expected).sum()
  assert data.hand_frames.dtype == np.int64


def test_sequence_source_subset_pickle_and_repr(dataset, prepared):
  cache_dir, _ = prepared
  data = cache.SequenceSource(cache_dir, "train", rows=[4, 1])
  assert list(data.sequence_ids) == [301, 102]
  assert data[-1]["sequence_id"] == 102
  with pytest.raises(IndexError):
    data[2]
  data[0]  # Opens the memmap; pickling must still work.
  clone = pickle.loads(pickle.dumps(data))
  np.testing.assert_array_equal(clone[0]["hands"], dataset.hands[301])
  assert repr(data).startswith("SequenceSource(")
  assert "sequences=2" in repr(data)
  with pytest.raises(IndexError):
    cache.SequenceSource(cache_dir, "train", rows=[6])


def test_sequence_source_needs_a_complete_cache(tmp_path):
  with pytest.raises(reader.DataError, match="no complete 'train' cache"):
    cache.SequenceSource(tmp_path, "train")


def test_prepare_is_idempotent(dataset, prepared, monkeypatch):
  cache_dir, first = prepared
  mtimes = [os.stat(p).st_mtime_ns for p in _outputs(cache_dir)]

  def fail(*_):
    raise AssertionError("a complete cache was read again")

  monkeypatch.setattr(reader, "read_hands", fail)
  monkeypatch.setattr(reader, "read_metadata", fail)
  again = cache.prepare(dataset.root, cache_dir, SOURCES, progress=False)
  assert again["train"]["reused"] and again["supplemental"]["reused"]
  assert dict(again["train"], reused=False) == first["train"]
  assert [os.stat(p).st_mtime_ns for p in _outputs(cache_dir)] == mtimes


def test_the_cache_is_keyed_on_content_not_times(tmp_path):
  """Issue 30, 2: a touched (or copied without times) landmark file keeps
  the cache; the same file rewritten with other values remakes it."""
  data = kaggle_fixture.write_dataset(tmp_path / "data").root
  cache_dir = tmp_path / "cache"
  first = cache.prepare(data, cache_dir, ("train",), progress=False)["train"]
  landmarks = sorted((tmp_path / "data" / "train_landmarks").glob("*.parquet"))
  for path in landmarks + [tmp_path / "data" / "train.csv"]:
    os.utime(path, ns=(1, 1))  # other times, same bytes.
  again = cache.prepare(data, cache_dir, ("train",), progress=False)["train"]
  assert again["reused"] and again["fingerprint"] == first["fingerprint"]
  # The same table written again by this writer, then with one value moved:
  # only the values differ between the two files.
  table = pq.read_table(landmarks[0])
  pq.write_table(table, landmarks[0])
  before = cache.prepare(data, cache_dir, ("train",), progress=False)["train"]
  column = table.schema.get_field_index("x_right_hand_0")
  values = table.column(column).to_numpy(zero_copy_only=False).copy()
  moved = np.flatnonzero(np.isfinite(values))[0]
  values[moved] += 0.01
  pq.write_table(
      table.set_column(
          column, "x_right_hand_0", pa.array(values, table.column(column).type)
      ),
      landmarks[0],
  )
  os.utime(landmarks[0], ns=(1, 1))
  remade = cache.prepare(data, cache_dir, ("train",), progress=False)["train"]
  assert not remade["reused"]
  assert remade["fingerprint"] != before["fingerprint"]


def _prepare_in_a_process(args):
  data, cache_dir = args
  return cache.prepare(data, cache_dir, ("train",), progress=False)["train"]


def test_two_processes_preparing_one_fresh_cache_both_finish(dataset, tmp_path):
  """Two runs started at once on a fresh cache once removed each other's
  parts ('No such file ... train.parts/000000.npz.tmp'): one prepares, the
  other waits and reuses it."""
  import multiprocessing  # pylint: disable=g-import-not-at-top

  with multiprocessing.get_context("spawn").Pool(2) as pool:
    reports = pool.map(
        _prepare_in_a_process, [(dataset.root, str(tmp_path))] * 2
    )
  assert sorted(r["reused"] for r in reports) == [False, True]
  assert reports[0]["fingerprint"] == reports[1]["fingerprint"]
  assert cache.SequenceSource(tmp_path).sequence_ids.tolist() == (
      kaggle_fixture.KEPT["train"]
  )


def test_prepare_redoes_on_new_options(dataset, tmp_path):
  cache.prepare(dataset.root, tmp_path, progress=False)
  report = cache.prepare(
      dataset.root, tmp_path, min_hand_frames=1, progress=False
  )["train"]
  assert not report["reused"]
  assert report["skipped_by_reason"]["too_few_hand_frames"]["count"] == 0
  assert 202 in cache.SequenceSource(tmp_path).sequence_ids


def test_prepare_resumes_after_an_interruption(
    dataset, prepared, tmp_path, monkeypatch
):
  read = reader.read_hands
  calls, kill_at = [], [2]

  def interrupted(path):
    calls.append(os.path.basename(path))
    if len(calls) == kill_at[0]:
      raise Killed
    return read(path)

  monkeypatch.setattr(reader, "read_hands", interrupted)
  with pytest.raises(Killed):
    cache.prepare(dataset.root, tmp_path, progress=False)
  paths = cache.cache_paths(tmp_path, "train")
  assert not os.path.exists(paths["report"])
  assert sorted(os.listdir(paths["parts"])) == [
      "000000.npz",
      "fingerprint.json",
  ]
  # Half-written files of the killed run.
  with open(os.path.join(paths["parts"], "000001.npz.tmp"), "wb") as f:
    f.write(b"half a part")
  with open(paths["frames"] + ".tmp", "wb") as f:
    f.write(b"half the frames")

  calls.clear()
  kill_at[0] = None
  report = cache.prepare(dataset.root, tmp_path, progress=False)["train"]
  assert calls == ["2000.parquet", "3000.parquet"]  # 1000 is not read again.
  assert not os.path.exists(paths["parts"])
  clean_dir, clean = prepared
  assert report == dict(clean["train"], reused=False)
  for ours, theirs in zip(_outputs(tmp_path)[:2], _outputs(clean_dir)[:2]):
    if ours.endswith(".npy"):
      np.testing.assert_array_equal(np.load(ours), np.load(theirs))
    else:
      assert pq.read_table(ours).equals(pq.read_table(theirs))


def test_unknown_character_is_an_error_by_default(tmp_path):
  data = kaggle_fixture.write_dataset(tmp_path / "data", unknown_char=True)
  with pytest.raises(
      vocab.UnknownCharacterError,
      match=r"train.csv: sequence 302: .* character '\"'",
  ):
    cache.prepare(data.root, tmp_path / "cache", progress=False)
  assert not os.path.exists(tmp_path / "cache" / "train.report.json")


def test_unknown_character_can_be_skipped(tmp_path):
  data = kaggle_fixture.write_dataset(tmp_path / "data", unknown_char=True)
  report = cache.prepare(
      data.root, tmp_path / "cache", skip_unknown_chars=True, progress=False
  )["train"]
  assert report["skipped_by_reason"]["unknown_character"] == {
      "count": 1,
      "first_ids": [302],
  }
  assert report["kept"] == 5
  assert 302 not in cache.SequenceSource(tmp_path / "cache").sequence_ids


def test_structural_problems_are_errors(tmp_path):
  data = kaggle_fixture.write_dataset(tmp_path / "data", supplemental=False)
  garbage = os.path.join(data.root, "train_landmarks", "3000.parquet")
  with open(garbage, "wb") as f:
    f.write(os.urandom(500))
  with pytest.raises(
      reader.DataError, match="3000.parquet: not a readable parquet file"
  ):
    cache.prepare(data.root, tmp_path / "cache", progress=False)
  os.remove(garbage)
  with pytest.raises(
      reader.DataError, match="3000.parquet: landmark file does not exist"
  ):
    cache.prepare(data.root, tmp_path / "cache", progress=False)
  with pytest.raises(reader.DataError, match="supplemental_metadata.csv"):
    cache.prepare(
        data.root, tmp_path / "cache", ("supplemental",), progress=False
    )
  with pytest.raises(reader.DataError, match="data directory does not exist"):
    cache.prepare(tmp_path / "nowhere", tmp_path / "cache", progress=False)


def _signer_sets(participant_ids, rows):
  return {n: set(participant_ids[r].tolist()) for n, r in rows.items()}


def test_split_by_signer_is_disjoint_complete_and_balanced():
  rng = np.random.default_rng(1)
  participant_ids = np.repeat(
      rng.permutation(1000)[:60], rng.integers(20, 200, 60)
  )
  rows = splits.split_by_signer(participant_ids, seed=3)
  assert list(rows) == ["train", "validation", "test"]
  assert np.array_equal(
      np.sort(np.concatenate(list(rows.values()))),
      np.arange(len(participant_ids)),
  )
  signers = _signer_sets(participant_ids, rows)
  assert not signers["train"] & signers["validation"]
  assert not signers["train"] & signers["test"]
  assert not signers["validation"] & signers["test"]
  for name, fraction in splits.DEFAULT_FRACTIONS.items():
    assert abs(len(rows[name]) / len(participant_ids) - fraction) < 0.02


def test_split_by_signer_is_deterministic_from_the_seed():
  participant_ids = np.repeat(np.arange(30), np.arange(1, 31))
  a = splits.split_by_signer(participant_ids, seed=0)
  b = splits.split_by_signer(participant_ids, seed=0)
  c = splits.split_by_signer(participant_ids, seed=1)
  assert all(np.array_equal(a[n], b[n]) for n in a)
  assert any(not np.array_equal(a[n], c[n]) for n in a)


def test_split_by_signer_keeps_every_split_non_empty():
  participant_ids = np.array([7] * 50 + [8] * 50 + [9] * 2)
  rows = splits.split_by_signer(participant_ids, seed=0)
  assert all(len(r) for r in rows.values())
  with pytest.raises(ValueError, match="cannot split 2 signers into 3"):
    splits.split_by_signer(np.array([1, 1, 2]))
  with pytest.raises(ValueError, match="must be positive"):
    splits.split_by_signer(participant_ids, {"train": 1.0, "test": 0.0})


def test_load_splits(prepared):
  cache_dir, _ = prepared
  fractions = {"train": 0.5, "validation": 0.25, "test": 0.25}
  plain = splits.load_splits(cache_dir, fractions=fractions, seed=0)
  assert sum(len(s) for s in plain.values()) == 6
  signers = {n: set(s.participant_ids.tolist()) for n, s in plain.items()}
  assert not (
      signers["train"] & signers["validation"]
      or signers["train"] & signers["test"]
      or signers["validation"] & signers["test"]
  )
  assert all(len(s) for s in plain.values())

  full = splits.load_splits(
      cache_dir, fractions=fractions, seed=0, include_supplemental=True
  )
  assert list(full["train"].sequence_ids) == (
      list(plain["train"].sequence_ids) + kaggle_fixture.KEPT["supplemental"]
  )
  for name in ("validation", "test"):
    assert list(full[name].sequence_ids) == list(plain[name].sequence_ids)
  last = full["train"][len(full["train"]) - 1]
  assert last["sequence_id"] == 502 and last["phrase"] == "hello, world"
  assert full["train"].hand_frames.shape == (len(full["train"]),)


def test_load_splits_leaves_out_short_sequences_without_moving_signers(
    prepared,
):
  cache_dir, _ = prepared
  fractions = {"train": 0.5, "validation": 0.25, "test": 0.25}
  plain = splits.load_splits(cache_dir, fractions=fractions, seed=0)
  frames = np.concatenate([s.hand_frames for s in plain.values()])
  cut = int(np.median(frames)) + 1  # leaves out about half of them
  short = splits.load_splits(
      cache_dir, fractions=fractions, seed=0, min_hand_frames=cut
  )
  for name, source in plain.items():
    keep = source.hand_frames >= cut
    assert list(short[name].sequence_ids) == list(source.sequence_ids[keep])
  assert 0 < sum(len(s) for s in short.values()) < len(frames)


def test_supplemental_sentences_of_held_out_signers_stay_out(prepared, caplog):
  # Signer 1 signs supplemental sentence 501 and, with this seed, falls in
  # validation or test: with it in training, a held-out signer leaks in.
  cache_dir, _ = prepared
  fractions = {"train": 0.5, "validation": 0.25, "test": 0.25}
  for seed in range(20):
    plain = splits.load_splits(cache_dir, fractions=fractions, seed=seed)
    if 1 not in plain["train"].participant_ids:
      break
  full = splits.load_splits(
      cache_dir, fractions=fractions, seed=seed, include_supplemental=True
  )
  held_out = set(full["validation"].participant_ids) | set(
      full["test"].participant_ids
  )
  assert 1 in held_out
  assert not held_out & set(full["train"].participant_ids)
  assert list(full["train"].sequence_ids) == (
      list(plain["train"].sequence_ids) + [502]
  )
  assert "1 of 2 sequences are by 1 signers of the validation/test" in (
      caplog.text
  )
