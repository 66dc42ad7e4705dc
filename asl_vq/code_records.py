"""Code records: what `asl_vq.encode` writes and `asl_vq.decode` reads.

One record per sequence:
  id          str: the sequence's name (a file's stem, a Kaggle sequence_id).
  source      str: the file it was read from.
  num_frames  int: its input frames, with a hand or not.
  fps         float or None: its frame rate, where the input says (`.pose`,
              video; a Kaggle sequence does not).
  frames      int [T']: the input frame of each code group (frames with no
              hand have none).
  codes       int [T', Q]: `Tokenizer.encode_frames`' codes, one group per
              input frame with a hand (T' = 0 without a hand).
  text        str: the same codes in `inference.TEXT_FORMAT`.
  mean, std   float [T', 2, 2]: per code group and hand (left, right), the
              x / y statistics it was normalised with (`FrameCodes.mean` /
              `.std`): `Tokenizer.to_image` puts decoded frames back into
              the input's coordinates with them.
  seen        bool [T', 2]: per code group, whether the input's left /
              right hand was detected (`FrameCodes.seen`).
  width, height  int or None: the input image's size in pixels, where the
              input says (`.pose` header, video).
  transcript  str, only in files written with it (`encode --transcribe`):
              `Tokenizer.transcribe`'s text, the CTC head's greedy reading.

The file's extension picks the format: `.jsonl` (codes as nested lists),
`.csv` (codes as the JSON text of the nested lists) or `.parquet` (codes as
list<list<int32>>). Files are written under a temporary name and renamed when
complete. Files written before a field existed (`fps`, `frames`, `mean`,
`std`, `width`, `height`) read with it None.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from etils import epath

from asl_vq import errors
from asl_vq import fileio

FIELDS = (
    "id",
    "source",
    "num_frames",
    "fps",
    "frames",
    "codes",
    "text",
    "mean",
    "std",
    "seen",
    "width",
    "height",
)
TRANSCRIPT = "transcript"  # the optional field.
# Absent from files written before them: None.
_ADDED = ("fps", "frames", "mean", "std", "seen", "width", "height")
_LISTS = ("frames", "codes", "mean", "std", "seen")  # JSON text in a CSV.
FORMATS = (".jsonl", ".csv", ".parquet")
_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("num_frames", pa.int64()),
        ("fps", pa.float64()),
        ("frames", pa.list_(pa.int64())),
        ("codes", pa.list_(pa.list_(pa.int32()))),
        ("text", pa.string()),
        ("mean", pa.list_(pa.list_(pa.list_(pa.float32())))),
        ("std", pa.list_(pa.list_(pa.list_(pa.float32())))),
        ("seen", pa.list_(pa.list_(pa.bool_()))),
        ("width", pa.int64()),
        ("height", pa.int64()),
        (TRANSCRIPT, pa.string()),
    ]
)


def file_format(path: str | os.PathLike) -> str:
  """The format of a records file, from its extension (one of `FORMATS`).

  Raises:
    ValueError: another extension.
  """
  ext = os.path.splitext(os.fspath(path))[1].lower()
  if ext not in FORMATS:
    raise errors.UserError(
        f"{path}: a codes file must end in {', '.join(FORMATS)}"
    )
  return ext


def record(
    id_: str,
    source: str,
    num_frames: int,
    codes: np.ndarray,
    text: str,
    transcript: str | None = None,
    *,
    frames: np.ndarray | None = None,
    fps: float | None = None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    seen: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
) -> dict[str, Any]:
  """A record with plain Python values (codes int [T', Q] as nested lists,
  frames int [T'] as a list, mean and std [T', 2, 2] and seen [T', 2] as
  nested lists,
  `size` (width, height) as two fields); with a `transcript`, that field
  too.

  Raises:
    errors.UserError: `frames`, `mean`, `std` or `seen` not one per code
      group.
  """
  codes = np.asarray(codes)
  for name, values in (
      ("frame indices", frames),
      ("means", mean),
      ("stds", std),
      ("hands seen", seen),
  ):
    if values is not None and len(values) != len(codes):
      raise errors.UserError(
          f"{id_}: {len(values)} {name} for " f"{len(codes)} code groups"
      )
  floats = lambda v: None if v is None else np.asarray(v, np.float32).tolist()
  width, height = (None, None) if size is None else map(int, size)
  out = dict(
      id=id_,
      source=source,
      num_frames=int(num_frames),
      fps=None if fps is None else float(fps),
      frames=None if frames is None else [int(f) for f in frames],
      codes=codes.tolist(),
      text=text,
      mean=floats(mean),
      std=floats(std),
      seen=None if seen is None else np.asarray(seen, bool).tolist(),
      width=width,
      height=height,
  )
  if transcript is not None:
    out[TRANSCRIPT] = transcript
  return out


class Writer:
  """Writes records as they come: `with Writer(path) as w: w.write([...])`.

  `path` is local (its directory made) or an object store URL
  (`gs://bucket/codes.jsonl`: written locally, uploaded when the block
  ends); the file appears there only when the block ends without an
  exception. `transcripts`: the records hold a `transcript` too.
  """

  def __init__(self, path: str | os.PathLike, transcripts: bool = False):
    self.path = os.fspath(path)
    self._format = file_format(self.path)
    self._fields = FIELDS + ((TRANSCRIPT,) if transcripts else ())
    self._schema = pa.schema([_SCHEMA.field(f) for f in self._fields])
    self._tmp = f"{self.path}.tmp"
    self._file = self._csv = self._parquet = None
    self._upload = contextlib.ExitStack()

  def __enter__(self) -> "Writer":
    if fileio.is_remote(self.path):
      # Never a URL to pyarrow: it would reach the store with its own
      # filesystem (and credentials), or write a local `gs:/...` folder.
      self._tmp = self._upload.enter_context(fileio.writing(self.path))
    else:
      os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    if self._format == ".parquet":
      self._parquet = pq.ParquetWriter(self._tmp, self._schema)
    else:
      self._file = open(self._tmp, "w", newline="", encoding="utf-8")
      if self._format == ".csv":
        self._csv = csv.DictWriter(self._file, self._fields)
        self._csv.writeheader()
    return self

  def write(self, records: Sequence[dict[str, Any]]) -> None:
    if self._parquet:
      self._parquet.write_table(
          pa.Table.from_pylist(list(records), self._schema)
      )
    elif self._csv:
      self._csv.writerows(
          dict(r, **{k: json.dumps(r[k]) for k in _LISTS}) for r in records
      )
    else:
      self._file.writelines(json.dumps(r) + "\n" for r in records)

  def __exit__(self, exc_type, exc, traceback) -> None:
    (self._parquet or self._file).close()
    if fileio.is_remote(self.path):  # uploaded unless the block failed.
      self._upload.__exit__(exc_type, exc, traceback)
    elif exc_type is None:
      os.replace(self._tmp, self.path)
    else:
      os.remove(self._tmp)


def _from_csv(row: dict[str, str]) -> dict[str, Any]:
  """A CSV row's text -> `record`'s values (a field absent: left out)."""
  out = dict(row, num_frames=int(row["num_frames"]))
  for name in _LISTS:
    if name in row:
      out[name] = json.loads(row[name])
  if "fps" in row:
    out["fps"] = float(row["fps"]) if row["fps"] else None
  for name in ("width", "height"):
    if name in row:
      out[name] = int(row[name]) if row[name] else None
  return out


def read(path: str | os.PathLike) -> list[dict[str, Any]]:
  """All records of a file (local or `gs://...`), as `record` makes them,
  whatever the format.

  Raises:
    ValueError: an unknown extension, or not a file of records.
    OSError: the file cannot be read.
  """
  path = os.fspath(path)
  fmt = file_format(path)
  try:
    if fmt == ".parquet":
      with fileio.reading(path) as source:
        rows = pq.read_table(source).to_pylist()
    elif fmt == ".csv":
      # utf-8-sig: a CSV saved again by Excel starts with a byte-order mark.
      text = epath.Path(path).read_bytes().decode("utf-8-sig")
      rows = [
          _from_csv(r) for r in csv.DictReader(io.StringIO(text, newline=""))
      ]
    else:
      text = epath.Path(path).read_bytes().decode("utf-8")
      rows = [json.loads(line) for line in text.splitlines() if line.strip()]
  except (pa.ArrowException, ValueError, KeyError, TypeError) as e:
    raise errors.UserError(
        f"{path}: not a file of code records ({e})"
    ) from None
  for i, r in enumerate(rows):
    if not isinstance(r, dict) or (set(r) - {TRANSCRIPT}) | set(_ADDED) != set(
        FIELDS
    ):
      raise errors.UserError(
          f"{path}: record {i} does not have the fields "
          f"{', '.join(FIELDS)} (and optionally {TRANSCRIPT})"
      )
    for name in _ADDED:
      r.setdefault(name, None)
  return rows
