"""Tests of reading the Kaggle layout (asl_vq/data/reader.py)."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asl_vq.data import layout
from asl_vq.data import reader
import kaggle_fixture


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return kaggle_fixture.write_dataset(tmp_path_factory.mktemp("kaggle"))


@pytest.mark.parametrize("file_id", [1000, 2000, 3000])
def test_read_hands_gives_the_known_values_sorted_by_frame(dataset, file_id):
  pandas_index, seqs = kaggle_fixture.FILES["train"][file_id]
  path = os.path.join(dataset.root, "train_landmarks", f"{file_id}.parquet")
  if pandas_index:
    assert b"pandas" in pq.read_schema(path).metadata
  hands = reader.read_hands(path)
  assert sorted(hands) == sorted(q.sequence_id for q in seqs if q.in_file)
  for sequence_id, got in hands.items():
    assert got.dtype == np.float32
    assert got.shape == (len(dataset.hands[sequence_id]), 42, 2)
    np.testing.assert_array_equal(got, dataset.hands[sequence_id])


def test_read_hands_projects_the_hand_columns_only(dataset, monkeypatch):
  requested = []
  read = pq.ParquetFile.read

  def spy(self, columns=None, **kwargs):
    requested.append(columns)
    return read(self, columns=columns, **kwargs)

  monkeypatch.setattr(pq.ParquetFile, "read", spy)
  reader.read_hands(os.path.join(dataset.root, "train_landmarks/1000.parquet"))
  assert len(requested) == 1
  assert len(requested[0]) == 86
  assert set(requested[0]) == {
      "sequence_id",
      "frame",
      *layout.HAND_X_COLUMNS,
      *layout.HAND_Y_COLUMNS,
  }


def test_hands_are_left_then_right(dataset):
  hands = reader.read_hands(
      os.path.join(dataset.root, "train_landmarks/2000.parquet")
  )
  # 201 shows only the right hand, 203 only the left one.
  assert np.isnan(hands[201][:, :21]).all()
  assert not np.isnan(hands[201][:, 21:]).all(axis=(1, 2)).any()
  assert np.isnan(hands[203][:, 21:]).all()


def test_hand_frame_mask():
  hands = np.full((3, 42, 2), np.nan, np.float32)
  hands[1, 40, 1] = 0.5
  hands[2, 0] = 0.1
  np.testing.assert_array_equal(
      reader.hand_frame_mask(hands), [False, True, True]
  )


def test_read_metadata_parses_quotes_and_commas(dataset):
  meta = reader.read_metadata(dataset.root, "train")
  assert list(meta.sequence_id) == kaggle_fixture.LISTED["train"]
  assert meta.phrase[0] == "he said 'hi, there', ok"
  assert meta.phrase[1] == "1600 pennsylvania ave"  # Digits stay a string.
  assert meta.participant_id.dtype == np.int64
  assert [(p, list(r)) for p, r in meta.files()] == [
      ("train_landmarks/1000.parquet", [0, 1, 2]),
      ("train_landmarks/2000.parquet", [3, 4, 5, 6]),
      ("train_landmarks/3000.parquet", [7, 8]),
  ]


def test_read_metadata_unescapes_double_quotes(tmp_path):
  kaggle_fixture.write_dataset(tmp_path, supplemental=False, unknown_char=True)
  assert '"the ""42, main"" st"' in (tmp_path / "train.csv").read_text()
  meta = reader.read_metadata(tmp_path, "train")
  assert meta.phrase[-1] == kaggle_fixture.UNKNOWN_CHAR_PHRASE


def test_available_sources(tmp_path, dataset):
  assert reader.available_sources(dataset.root) == ["train", "supplemental"]
  kaggle_fixture.write_dataset(tmp_path, supplemental=False)
  assert reader.available_sources(tmp_path) == ["train"]


def test_missing_directory(tmp_path):
  with pytest.raises(
      reader.DataError, match="nowhere: data directory does " "not exist"
  ):
    reader.check_data_dir(tmp_path / "nowhere")


def test_missing_csv(tmp_path):
  kaggle_fixture.write_dataset(tmp_path, supplemental=False)
  os.remove(tmp_path / "train.csv")
  with pytest.raises(
      reader.DataError, match="train.csv: metadata CSV does " "not exist"
  ):
    reader.read_metadata(tmp_path, "train")


def test_missing_landmark_directory(tmp_path):
  with pytest.raises(
      reader.DataError,
      match="supplemental_landmarks: " "landmark directory does not exist",
  ):
    kaggle_fixture.write_dataset(tmp_path, supplemental=False)
    (tmp_path / "supplemental_metadata.csv").write_text(
        ",".join(layout.METADATA_COLUMNS) + "\n"
    )
    reader.read_metadata(tmp_path, "supplemental")


def test_csv_missing_column(tmp_path):
  kaggle_fixture.write_dataset(tmp_path, supplemental=False)
  (tmp_path / "train.csv").write_text(
      "path,file_id,sequence_id,phrase\ntrain_landmarks/1000.parquet,1,2,a\n"
  )
  with pytest.raises(
      reader.DataError, match="train.csv: missing column 'participant_id'"
  ):
    reader.read_metadata(tmp_path, "train")


def test_csv_duplicate_sequence(tmp_path):
  kaggle_fixture.write_dataset(tmp_path, supplemental=False)
  with open(tmp_path / "train.csv", "a") as f:
    f.write("train_landmarks/1000.parquet,1000,101,1,again\n")
  with pytest.raises(
      reader.DataError, match="sequence 101 is listed more than once"
  ):
    reader.read_metadata(tmp_path, "train")


def test_missing_parquet_file(tmp_path):
  with pytest.raises(
      reader.DataError, match="7.parquet: landmark file does not exist"
  ):
    reader.read_hands(tmp_path / "7.parquet")


def test_corrupt_parquet(tmp_path):
  path = tmp_path / "8.parquet"
  path.write_bytes(os.urandom(2000))
  with pytest.raises(
      reader.DataError, match="8.parquet: not a readable parquet file"
  ):
    reader.read_hands(path)


def test_missing_column(tmp_path):
  columns = {
      c: pa.array([0.5], pa.float32())
      for c in layout.HAND_X_COLUMNS + layout.HAND_Y_COLUMNS
      if c != "y_right_hand_20"
  }
  columns.update(sequence_id=[1], frame=[0])
  pq.write_table(pa.table(columns), tmp_path / "9.parquet")
  with pytest.raises(
      reader.DataError, match="9.parquet: missing column 'y_right_hand_20'"
  ):
    reader.read_hands(tmp_path / "9.parquet")


def test_non_finite_values_are_missing_detections(tmp_path):
  """+inf, -inf and a float64 beyond float32's range read as NaN (issue
  30, 5), the other coordinates as written."""
  columns = {
      c: pa.array([0.5, 0.25], pa.float64())
      for c in layout.HAND_X_COLUMNS + layout.HAND_Y_COLUMNS
  }
  columns["x_left_hand_0"] = pa.array([np.inf, 0.5], pa.float64())
  columns["y_left_hand_3"] = pa.array([0.5, -np.inf], pa.float64())
  columns["x_right_hand_7"] = pa.array([1e300, 0.5], pa.float64())
  columns.update(sequence_id=[1, 1], frame=[0, 1])
  pq.write_table(pa.table(columns), tmp_path / "7.parquet")
  hands = reader.read_hands(tmp_path / "7.parquet")[1]
  missing = np.argwhere(np.isnan(hands)).tolist()
  assert missing == [[0, 0, 0], [0, 28, 0], [1, 3, 1]]
  assert np.isfinite(hands).sum() == hands.size - 3


def test_foreign_character_map(tmp_path):
  kaggle_fixture.write_dataset(tmp_path, supplemental=False)
  (tmp_path / layout.CHARACTER_MAP).write_text('{"a": 0}')
  with pytest.raises(reader.DataError, match="character map differs"):
    reader.check_data_dir(tmp_path)
