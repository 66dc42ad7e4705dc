"""Tests of the synthetic fingerspelling generator and its hand model."""

import csv
import dataclasses
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asl_vq import vocab
from asl_vq.data import hand_model as hm
from asl_vq.data import layout
from asl_vq.data import synthetic

KNOBS = dict(num_signers=6, sequences_per_file=5, frames_per_char=6.0)
NUM_SEQUENCES = 12


def _read_csv(root):
  with open(os.path.join(root, "train.csv"), newline="") as f:
    return list(csv.DictReader(f))


def _hands(table: pa.Table) -> np.ndarray:
  """[rows, 2 * 21 * 3] hand coordinates, NaN where missing."""
  names = [c for c in layout.landmark_columns() if "_hand_" in c]
  return np.stack([table[c].to_numpy() for c in names], 1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("syn"))
  summary = synthetic.generate(root, NUM_SEQUENCES, seed=3, **KNOBS)
  return root, summary


def test_same_seed_same_data(dataset, tmp_path):
  root, _ = dataset
  synthetic.generate(str(tmp_path), NUM_SEQUENCES, seed=3, **KNOBS)
  for name in ("train.csv", "synthetic.json", layout.CHARACTER_MAP):
    with (
        open(os.path.join(root, name), "rb") as a,
        open(tmp_path / name, "rb") as b,
    ):
      assert a.read() == b.read(), name
  files = sorted(os.listdir(os.path.join(root, "train_landmarks")))
  assert files == sorted(os.listdir(tmp_path / "train_landmarks"))
  for name in files:
    a = pq.read_table(os.path.join(root, "train_landmarks", name))
    b = pq.read_table(tmp_path / "train_landmarks" / name)
    assert a.schema.equals(b.schema)
    np.testing.assert_array_equal(a["sequence_id"], b["sequence_id"])
    np.testing.assert_array_equal(a["frame"], b["frame"])
    np.testing.assert_array_equal(_hands(a), _hands(b))  # NaN == NaN here.


def test_other_seed_other_data(dataset, tmp_path):
  root, _ = dataset
  synthetic.generate(str(tmp_path), NUM_SEQUENCES, seed=4, **KNOBS)
  ours = [r["phrase"] for r in _read_csv(root)]
  assert ours != [r["phrase"] for r in _read_csv(tmp_path)]


def test_schema_is_the_real_one(dataset):
  root, _ = dataset
  for path in glob.glob(os.path.join(root, "train_landmarks", "*.parquet")):
    schema = pq.read_schema(path)
    assert schema.names == ["sequence_id", "frame"] + layout.landmark_columns()
    assert len(schema.names) == 1 + 1 + 1629
    assert schema.field("sequence_id").type == pa.int64()
    assert schema.field("frame").type == pa.int16()
    assert all(
        schema.field(c).type == pa.float32() for c in layout.landmark_columns()
    )


def test_metadata_and_files_agree(dataset):
  root, summary = dataset
  rows = _read_csv(root)
  assert list(rows[0]) == list(layout.METADATA_COLUMNS)
  assert len(rows) == NUM_SEQUENCES == summary["num_sequences"]
  by_path = {}
  for row in rows:
    assert row["path"] == f"train_landmarks/{row['file_id']}.parquet"
    by_path.setdefault(row["path"], []).append(int(row["sequence_id"]))
  assert sorted(len(v) for v in by_path.values()) == [2, 5, 5]
  assert len({r["sequence_id"] for r in rows}) == NUM_SEQUENCES
  with open(os.path.join(root, layout.CHARACTER_MAP)) as f:
    assert json.load(f) == vocab.as_json_dict()
  total = 0
  for path, ids in by_path.items():
    table = pq.read_table(
        os.path.join(root, path), columns=["sequence_id", "frame"]
    )
    seq = table["sequence_id"].to_numpy()
    frame = table["frame"].to_numpy()
    total += len(seq)
    starts = np.flatnonzero(np.diff(seq, prepend=-1))
    assert list(seq[starts]) == ids  # One contiguous block per sequence.
    for a, b in zip(starts, list(starts[1:]) + [len(seq)]):
      assert b - a > 20
      assert np.all(np.diff(frame[a:b]) == 1)  # Sorted, every frame.
  assert total == summary["num_frames"]


def test_phrases_are_in_the_vocabulary(dataset):
  root, _ = dataset
  for row in _read_csv(root):
    assert not vocab.unknown_characters(row["phrase"])
  rng = np.random.default_rng(0)
  phrases = [synthetic.random_phrase(rng) for _ in range(3000)]
  assert all(10 <= len(p) <= 30 for p in phrases)
  assert not vocab.unknown_characters("".join(phrases))
  assert set("".join(phrases)) == set(vocab.CHARACTERS)
  assert any("," in p for p in phrases)  # Needs csv quoting.


def test_every_sequence_has_hands_and_gaps(dataset):
  root, _ = dataset
  starts = set()
  for path in glob.glob(os.path.join(root, "train_landmarks", "*.parquet")):
    table = pq.read_table(path)
    assert np.isnan(table["x_face_0"].to_numpy()).all()
    seq, hands = table["sequence_id"].to_numpy(), _hands(table)
    for sid in np.unique(seq):
      h = hands[seq == sid]
      assert (~np.isnan(h).all(1)).sum() > 10  # Frames with a hand.
      assert np.isnan(h).all(1).any()  # Frames without one.
      starts.add(table["frame"].to_numpy()[seq == sid][0])
  assert len(starts) > 1  # Random first frame numbers.


def test_coordinates_look_like_mediapipe(dataset):
  root, _ = dataset
  path = glob.glob(os.path.join(root, "train_landmarks", "*.parquet"))[0]
  table = pq.read_table(
      path,
      columns=layout.hand_columns("x")
      + layout.hand_columns("y")
      + layout.hand_columns("z"),
  )
  x, y, z = np.split(_hands(table), 3, axis=1)  # Order: x, y, z blocks.
  assert 0.2 < np.nanmedian(x) < 0.8 and 0.2 < np.nanmedian(y) < 0.8
  assert np.nanpercentile(np.abs(z), 99) < 0.3
  valid = ~np.isnan(z[:, :21]).any(1)
  assert np.allclose(z[valid, 0], 0)  # Depth is relative to the wrist.


def test_nan_as_null_keeps_values(dataset, tmp_path):
  root, _ = dataset
  synthetic.generate(
      str(tmp_path), NUM_SEQUENCES, seed=3, nan_as_null=True, **KNOBS
  )
  name = sorted(os.listdir(tmp_path / "train_landmarks"))[0]
  nulls = pq.read_table(tmp_path / "train_landmarks" / name)
  nans = pq.read_table(os.path.join(root, "train_landmarks", name))
  assert nulls["x_face_0"].null_count == len(nulls)
  assert nans["x_face_0"].null_count == 0
  np.testing.assert_array_equal(_hands(nulls), _hands(nans))


def test_left_handed_rate():
  config = synthetic.SyntheticConfig(num_signers=3000)
  rate = np.mean([s.left_handed for s in synthetic.make_signers(config, 0)])
  assert 0.08 < rate < 0.12  # Binomial sd 0.0055 around 0.1.
  ids = [
      s.participant_id
      for s in synthetic.make_signers(
          synthetic.SyntheticConfig(num_signers=100), 0
      )
  ]
  assert len(set(ids)) == 100 and all(100 <= i < 10000 for i in ids)


def test_left_handers_spell_in_the_left_hand_columns():
  config = synthetic.SyntheticConfig(num_signers=4)
  for rate, spelling, resting in ((1.0, 0, 1), (0.0, 1, 0)):
    signer = synthetic.make_signers(
        dataclasses.replace(config, left_handed_rate=rate), 1
    )[0]
    seq = synthetic.synthesize_sequence(
        "4738 north hillcrest road", signer, np.random.default_rng(0)
    )
    seen = ~np.isnan(seq.hands[:, :, 0, 0])
    assert seen[:, spelling].sum() > 2 * seen[:, resting].sum()
    # Mirror geometry: seen by the camera, the thumb of a right hand held
    # up palm-out is right of its pinky; a left hand's is left of it.
    held = seq.hands[seen[:, spelling], spelling]
    thumb_right = np.median(held[:, 2, 0] - held[:, 17, 0]) > 0
    assert thumb_right == (spelling == 1)


def test_letters_are_aligned_to_frames():
  signer = synthetic.make_signers(synthetic.SyntheticConfig(), 0)[0]
  phrase = "jazz-quiz.com"
  seq = synthetic.synthesize_sequence(phrase, signer, np.random.default_rng(0))
  letters = seq.letter[seq.letter >= 0]
  assert np.all(np.diff(letters) >= 0)
  assert set(letters) == set(range(len(phrase)))
  assert seq.letter[0] == -1 and seq.letter[-1] == -1
  assert 6 * len(phrase) < len(seq.letter) < 20 * len(phrase)


def _normalised_landmarks(symbol):
  points = hm.forward_kinematics(hm.canonical_pose(symbol))
  points = points - points.mean(0)
  return points / np.sqrt((points**2).sum(-1).mean())


def test_look_alike_letters_are_close():
  poses = hm.canonical_poses()

  def joints(a, b):
    ia, ib = vocab.CHAR_TO_ID[a], vocab.CHAR_TO_ID[b]
    return np.linalg.norm(poses[ia, hm.JOINTS] - poses[ib, hm.JOINTS])

  def points(a, b):
    return np.sqrt(
        ((_normalised_landmarks(a) - _normalised_landmarks(b)) ** 2)
        .sum(-1)
        .mean()
    )

  assert joints("a", "s") < joints("a", "b")
  assert joints("m", "n") < joints("m", "5")
  assert joints("u", "r") < joints("u", "y")
  assert points("a", "s") < points("a", "b")
  for a, b in (
      "as",
      "at",
      "sm",
      "mn",
      "ae",
      "gh",
      "ij",
      "kv",
      "ur",
      "d1",
      "w6",
      "f9",
      "o0",
      "v2",
  ):
    others = [points(a, c) for c in vocab.CHARACTERS if c not in (a, b)]
    assert points(a, b) < 0.65 * np.median(others), (a, b)
  assert points("i", "j") == 0  # Only the motion path tells them apart.


def test_motion_paths():
  t = np.linspace(0, 1, 9)
  for symbol in "jz":
    path = hm.motion(symbol, t)
    assert np.allclose(path[0], 0) and np.abs(path[-1, :2]).max() > 2
  z = hm.motion("z", t)[:, :2]
  assert np.ptp(z[:, 0]) > 3 and np.ptp(z[:, 1]) > 3  # Across and down.
  assert not hm.motion("i", t).any()


def test_forward_kinematics_keeps_bone_lengths():
  rng = np.random.default_rng(0)
  poses = hm.clip(hm.canonical_poses() + rng.normal(0, 10, (59, 24)))
  points = hm.forward_kinematics(poses)
  g = hm.DEFAULT_GEOMETRY
  for chain, lengths in zip(range(5), g.lengths):
    joints = points[:, 1 + 4 * chain : 5 + 4 * chain]
    bones = np.linalg.norm(np.diff(joints, axis=1), axis=-1)
    np.testing.assert_allclose(bones, np.broadcast_to(lengths, bones.shape))
  assert np.allclose(points[:, 0], 0)


def test_preview_writes_png(tmp_path):
  path = tmp_path / "hands.png"
  synthetic.preview(str(path), symbols="asv")
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_cli(tmp_path):
  out = tmp_path / "cli"
  subprocess.run(
      [
          sys.executable,
          "-m",
          "asl_vq.data.synthetic",
          f"--out={out}",
          "--num_sequences=3",
          "--seed=1",
          "--num_signers=2",
          "--sequences_per_file=2",
          "--drop_rate=0.1",
      ],
      check=True,
      capture_output=True,
  )
  assert len(_read_csv(out)) == 3
  assert len(os.listdir(out / "train_landmarks")) == 2
  with open(out / "synthetic.json") as f:
    info = json.load(f)
  assert info["config"]["drop_rate"] == 0.1 and len(info["signers"]) == 2
  api = tmp_path / "api"
  synthetic.generate(
      str(api), 3, seed=1, num_signers=2, sequences_per_file=2, drop_rate=0.1
  )
  for name in ("train.csv", "synthetic.json"):
    assert (out / name).read_bytes() == (api / name).read_bytes()


def test_bad_knobs_are_refused():
  with pytest.raises(ValueError):
    synthetic.SyntheticConfig(min_chars=20, max_chars=15)
  with pytest.raises(ValueError):
    synthetic.SyntheticConfig(drop_rate=0.9)
