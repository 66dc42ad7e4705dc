"""The Kaggle ASL Fingerspelling on-disk layout: file names and columns."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

LANDMARK_TYPES = (
    ("face", 468),
    ("left_hand", 21),
    ("pose", 33),
    ("right_hand", 21),
)
NUM_HAND_POINTS = 21
NUM_POINTS = 2 * NUM_HAND_POINTS  # left 0..20 then right 0..20.

METADATA_COLUMNS = (
    "path",
    "file_id",
    "sequence_id",
    "participant_id",
    "phrase",
)
SOURCES = {
    # source name -> (metadata csv, landmark directory)
    "train": ("train.csv", "train_landmarks"),
    "supplemental": ("supplemental_metadata.csv", "supplemental_landmarks"),
}
CHARACTER_MAP = "character_to_prediction_index.json"
INDEX_COLUMN = "sequence_id"
FRAME_COLUMN = "frame"


def missing_as_nan(hands: np.ndarray) -> np.ndarray:
  """Hands as float32 with every non-finite value (+-inf; a float64 beyond
  float32's range becomes inf) set to NaN: the project's one mark of a
  missing detection. Every path by which hands enter (landmark files, `.pose`
  files, the Tokenizer API, `pipeline.preprocess`) applies it, so one bad
  value is one missing coordinate, not a sequence of NaN statistics."""
  with np.errstate(over="ignore"):
    hands = np.asarray(hands, np.float32)
  finite = np.isfinite(hands)
  if finite.all():
    return hands
  return np.where(finite, hands, np.float32(np.nan))


def landmark_columns() -> list[str]:
  """All 1629 landmark columns in the real file order (x..., y..., z...)."""
  return [
      f"{axis}_{kind}_{i}"
      for axis in "xyz"
      for kind, n in LANDMARK_TYPES
      for i in range(n)
  ]


def hand_columns(axis: str) -> list[str]:
  """The 42 hand columns of one axis: left 0..20 then right 0..20."""
  return [
      f"{axis}_{side}_hand_{i}"
      for side in ("left", "right")
      for i in range(NUM_HAND_POINTS)
  ]


def point_offsets() -> dict[str, int]:
  """Landmark kind -> its first point in MediaPipe Holistic's 543 points
  (face 0..467, left_hand 468..488, pose 489..521, right_hand 522..542)."""
  sizes = [n for _, n in LANDMARK_TYPES]
  return {
      kind: int(o)
      for (kind, _), o in zip(LANDMARK_TYPES, np.cumsum([0] + sizes[:-1]))
  }


def pandas_metadata(names: list[str], types: list[pa.DataType]) -> bytes:
  """What pandas stores when the index `sequence_id` is written to parquet
  (the competition's files were written so), for a table of these columns."""
  columns = [
      {
          "name": n,
          "field_name": n,
          "pandas_type": str(t),
          "numpy_type": str(t),
          "metadata": None,
      }
      for n, t in zip(names, types)
  ]
  return json.dumps(
      {
          "index_columns": [INDEX_COLUMN],
          "column_indexes": [
              {
                  "name": None,
                  "field_name": None,
                  "pandas_type": "unicode",
                  "numpy_type": "object",
                  "metadata": {"encoding": "UTF-8"},
              }
          ],
          "columns": columns,
          "creator": {"library": "pyarrow", "version": pa.__version__},
          "pandas_version": "2.1.4",
      }
  ).encode()


def landmark_table(
    sequence_ids: np.ndarray,
    frames: np.ndarray,
    points: dict[str, np.ndarray],
    *,
    nan_as_null: bool = False,
    pandas_index: bool = False,
) -> pa.Table:
  """A landmark file's table: `sequence_id`, `frame` and the 1629 columns.

  Args:
    sequence_ids: int [N], one per row.
    frames: int [N]; stored as int16 (as in the competition) when it fits.
    points: landmark kind (of `LANDMARK_TYPES`) -> float32 [N, n, 3] x, y, z;
      NaN = not detected. Kinds left out are all missing and share one array,
      so they cost no memory.
    nan_as_null: store missing values as Parquet nulls (as pandas writes NaN).
    pandas_index: `sequence_id` as a pandas index, written last with pandas
      metadata, as in the competition's files; else a plain first column.
  """
  n = len(frames)
  sizes = dict(LANDMARK_TYPES)
  columns = {}
  for kind, values in points.items():
    if values.shape != (n, sizes[kind], 3):
      raise ValueError(
          f"{kind}: expected shape {(n, sizes[kind], 3)}, got "
          f"{values.shape}"
      )
    coords = np.ascontiguousarray(values.transpose(2, 1, 0), np.float32)
    for a, axis in enumerate("xyz"):
      for i in range(sizes[kind]):
        columns[f"{axis}_{kind}_{i}"] = pa.array(
            coords[a, i], from_pandas=nan_as_null
        )
  missing = (
      pa.nulls(n, pa.float32())
      if nan_as_null
      else pa.array(np.full(n, np.nan, np.float32))
  )
  frames = np.asarray(frames)
  small = not n or (frames.min() >= -(2**15) and frames.max() < 2**15)
  names = landmark_columns()
  arrays = [pa.array(frames, pa.int16() if small else pa.int32())]
  arrays += [columns.get(name, missing) for name in names]
  names = [FRAME_COLUMN] + names
  index = pa.array(sequence_ids, pa.int64())
  if not pandas_index:
    return pa.Table.from_arrays([index] + arrays, names=[INDEX_COLUMN] + names)
  table = pa.Table.from_arrays(arrays + [index], names=names + [INDEX_COLUMN])
  return table.replace_schema_metadata(
      {b"pandas": pandas_metadata(table.column_names, table.schema.types)}
  )


HAND_X_COLUMNS = hand_columns("x")
HAND_Y_COLUMNS = hand_columns("y")
NUM_LANDMARK_COLUMNS = 1629
assert len(landmark_columns()) == NUM_LANDMARK_COLUMNS
