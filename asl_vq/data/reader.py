"""Reads the Kaggle layout: metadata CSVs and hand landmarks from parquet.

Only the columns that are needed (`sequence_id`, `frame` and the 84 hand x/y
columns) are read from the 1629-column landmark files. Structural problems
raise `DataError` with a message that names the file and the problem.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from etils import epath

from asl_vq import errors
from asl_vq import fileio
from asl_vq import vocab
from asl_vq.data import layout

HAND_COLUMNS = layout.HAND_X_COLUMNS + layout.HAND_Y_COLUMNS
_INT_COLUMNS = ("file_id", "sequence_id", "participant_id")


class DataError(errors.UserError):
  """The dataset on disk is missing, unreadable or not in the Kaggle layout."""


@dataclasses.dataclass(frozen=True)
class Metadata:
  """The rows of one metadata CSV (train.csv or supplemental_metadata.csv)."""

  csv_path: str
  path: list[str]  # Landmark file of each row, relative to the data dir.
  file_id: np.ndarray  # int64 [N]
  sequence_id: np.ndarray  # int64 [N]
  participant_id: np.ndarray  # int64 [N]
  phrase: list[str]

  def __len__(self) -> int:
    return len(self.phrase)

  def files(self) -> list[tuple[str, np.ndarray]]:
    """(landmark path, row indices) per file, in order of first appearance."""
    rows = collections.defaultdict(list)
    for i, p in enumerate(self.path):
      rows[p].append(i)
    return [(p, np.asarray(r, np.int64)) for p, r in rows.items()]


def check_data_dir(data_dir: str | os.PathLike) -> None:
  """Fails early on a missing directory or a foreign character map."""
  if not epath.Path(data_dir).is_dir():
    raise DataError(f"{data_dir}: data directory does not exist")
  char_map = os.path.join(data_dir, layout.CHARACTER_MAP)
  if epath.Path(char_map).exists():
    try:
      vocab.check_json(char_map)
    except ValueError as e:
      raise DataError(str(e)) from None


def source_paths(data_dir: str | os.PathLike, source: str) -> tuple[str, str]:
  """(metadata CSV, landmark directory) of a source; both must exist."""
  if source not in layout.SOURCES:
    raise DataError(
        f"unknown source {source!r}; expected one of "
        f"{sorted(layout.SOURCES)}"
    )
  csv_name, landmark_dir = layout.SOURCES[source]
  csv_path = os.path.join(data_dir, csv_name)
  landmark_dir = os.path.join(data_dir, landmark_dir)
  if not _is_file(csv_path):
    raise DataError(f"{csv_path}: metadata CSV does not exist")
  if not epath.Path(landmark_dir).is_dir():
    raise DataError(f"{landmark_dir}: landmark directory does not exist")
  return csv_path, landmark_dir


def available_sources(data_dir: str | os.PathLike) -> list[str]:
  """`train` (required) and the other sources whose metadata CSV exists."""
  return [
      s
      for s, (csv_name, _) in layout.SOURCES.items()
      if s == "train" or _is_file(os.path.join(data_dir, csv_name))
  ]


def read_metadata(data_dir: str | os.PathLike, source: str) -> Metadata:
  """Parses a metadata CSV with a real CSV parser (phrases hold commas)."""
  csv_path, _ = source_paths(data_dir, source)
  types = {c: pa.int64() for c in _INT_COLUMNS}
  types.update(path=pa.string(), phrase=pa.string())
  try:
    with fileio.reading(csv_path) as f:
      table = pa_csv.read_csv(
          f,
          parse_options=pa_csv.ParseOptions(newlines_in_values=True),
          convert_options=pa_csv.ConvertOptions(
              column_types=types, strings_can_be_null=False
          ),
      )
  except (pa.ArrowException, OSError) as e:
    raise DataError(f"{csv_path}: cannot parse the CSV: {e}") from None
  for column in layout.METADATA_COLUMNS:
    if column not in table.column_names:
      raise DataError(
          f"{csv_path}: missing column {column!r} "
          f"(has {table.column_names})"
      )
    if table[column].null_count:
      row = table[column].is_null().to_numpy(zero_copy_only=False).argmax()
      raise DataError(f"{csv_path}: empty {column!r} in data row {row + 1}")
  ids = table["sequence_id"].to_numpy()
  unique, counts = np.unique(ids, return_counts=True)
  if (counts > 1).any():
    raise DataError(
        f"{csv_path}: sequence {unique[counts > 1][0]} is listed "
        "more than once"
    )
  return Metadata(
      csv_path=csv_path,
      path=table["path"].to_pylist(),
      file_id=table["file_id"].to_numpy(),
      sequence_id=ids,
      participant_id=table["participant_id"].to_numpy(),
      phrase=table["phrase"].to_pylist(),
  )


def _is_file(path: str) -> bool:
  path = epath.Path(path)
  return path.exists() and not path.is_dir()


def _open_parquet(path: str, f) -> pq.ParquetFile:
  """`f`: `path` as `fileio.reading` gives it."""
  if not _is_file(path):
    raise DataError(f"{path}: landmark file does not exist")
  try:
    return pq.ParquetFile(f)
  except (pa.ArrowException, OSError) as e:
    raise DataError(f"{path}: not a readable parquet file: {e}") from None


def read_hands(path: str | os.PathLike) -> dict[int, np.ndarray]:
  """All sequences of one landmark file: id -> float32 [T, 42, 2] by frame.

  `sequence_id` may be a plain column or a pandas index (stored as a column
  with pandas metadata); both read the same. NaN marks a missing detection,
  and so does any non-finite value (`layout.missing_as_nan`).
  """
  path = os.fspath(path)
  columns = [layout.INDEX_COLUMN, layout.FRAME_COLUMN] + HAND_COLUMNS
  with fileio.reading(path) as f:
    parquet = _open_parquet(path, f)
    schema = parquet.schema_arrow
    missing = [c for c in columns if c not in schema.names]
    if missing:
      raise DataError(
          f"{path}: missing column {missing[0]!r}"
          + (f" and {len(missing) - 1} more" if missing[1:] else "")
      )
    wrong = [
        c
        for c in HAND_COLUMNS
        if not pa.types.is_floating(schema.field(c).type)
    ]
    if wrong:
      raise DataError(
          f"{path}: column {wrong[0]!r} must be floating point, "
          f"got {schema.field(wrong[0]).type}"
      )
    try:
      table = parquet.read(columns=columns, use_pandas_metadata=False)
    except (pa.ArrowException, OSError) as e:
      raise DataError(f"{path}: cannot read the landmarks: {e}") from None
  for column in (layout.INDEX_COLUMN, layout.FRAME_COLUMN):
    if not pa.types.is_integer(table[column].type) or table[column].null_count:
      raise DataError(
          f"{path}: column {column!r} must be integers without "
          f"nulls, got {table[column].type}"
      )
  seq = table[layout.INDEX_COLUMN].to_numpy().astype(np.int64)
  frame = table[layout.FRAME_COLUMN].to_numpy().astype(np.int64)
  hands = np.empty((len(seq), layout.NUM_POINTS, 2), np.float32)
  with np.errstate(over="ignore"):  # float64 beyond float32: inf, then NaN.
    for j, (x, y) in enumerate(
        zip(layout.HAND_X_COLUMNS, layout.HAND_Y_COLUMNS)
    ):
      hands[:, j, 0] = table[x].to_numpy()
      hands[:, j, 1] = table[y].to_numpy()
  hands = layout.missing_as_nan(hands)
  if not len(seq):
    return {}
  order = np.lexsort((frame, seq))
  seq, hands = seq[order], hands[order]
  starts = np.flatnonzero(np.diff(seq)) + 1
  return {
      int(s[0]): h
      for s, h in zip(np.split(seq, starts), np.split(hands, starts))
  }


def hand_frame_mask(hands: np.ndarray) -> np.ndarray:
  """bool [T]: frames with at least one detected hand coordinate."""
  return ~np.isnan(hands).all(axis=(-2, -1))
