"""Tokenized splits (written by `asl_vq.tasks.tokenize`) as pipeline sources.

A tokenized split is one parquet file, one row per sequence:

  sequence_id     int64
  participant_id  int64
  phrase          string
  n_frames        int32: code frames (the tokenizer's kept frames, T').
  codes           list<fixed_size_list<int16>[Q]>: [n_frames][Q], frame
                  major: codes[t][q] is quantizer q's code at frame t.
  frames          list<int32>: [n_frames], the input frame of each code row
                  (`pipeline.kept_frames`: frames with a hand, resampled as
                  the codes were past the tokenizer's max_len); absent from
                  files written before it.

The schema metadata `asl_vq` holds JSON: num_quantizers, codebook_size, the
tokenizer's content fingerprint (`tokenizer`) and, as provenance, the
checkpoint and step it came from, and `data`, the raw split's `origin` (data
fingerprint and sequence digest).
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from etils import epath

from asl_vq import errors
from asl_vq import fileio
from asl_vq.data import pipeline
from asl_vq.data import splits as splits_lib

METADATA_KEY = b"asl_vq"


@dataclasses.dataclass(frozen=True)
class CodeSpec:
  """What the codes are: `num_quantizers` streams of ids in
  [0, codebook_size)."""

  num_quantizers: int
  codebook_size: int


def codes_type(num_quantizers: int) -> pa.DataType:
  return pa.list_(pa.list_(pa.int16(), num_quantizers))


def to_table(
    rows: Sequence[dict[str, Any]],
    num_quantizers: int,
    metadata: dict[str, Any],
) -> pa.Table:
  """Rows {sequence_id, participant_id, phrase, codes [T, Q], frames [T]}
  -> a table (without `frames` when the rows have none)."""
  codes = [np.asarray(r["codes"], np.int16) for r in rows]
  flat = pa.array(
      np.concatenate([c.reshape(-1) for c in codes] or [np.zeros(0, np.int16)])
  )
  frames = pa.FixedSizeListArray.from_arrays(flat, num_quantizers)
  offsets = np.concatenate([[0], np.cumsum([len(c) for c in codes])])
  fields = [
      ("sequence_id", pa.int64()),
      ("participant_id", pa.int64()),
      ("phrase", pa.string()),
      ("n_frames", pa.int32()),
      ("codes", codes_type(num_quantizers)),
  ]
  columns = [
      pa.array([r["sequence_id"] for r in rows], pa.int64()),
      pa.array([r["participant_id"] for r in rows], pa.int64()),
      pa.array([r["phrase"] for r in rows], pa.string()),
      pa.array([len(c) for c in codes], pa.int32()),
      pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), frames),
  ]
  if rows and all("frames" in r for r in rows):
    for r, c in zip(rows, codes):
      if len(r["frames"]) != len(c):
        raise errors.UserError(
            f"sequence {r['sequence_id']}: {len(r['frames'])} frame indices "
            f"for {len(c)} code rows"
        )
    fields.append(("frames", pa.list_(pa.int32())))
    columns.append(
        pa.array(
            [np.asarray(r["frames"], np.int32) for r in rows],
            pa.list_(pa.int32()),
        )
    )
  schema = pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata)})
  return pa.table(columns, schema=schema)


def origin(
    metadata: dict[str, Any], sequence_ids: np.ndarray
) -> dict[str, Any]:
  """A tokenized split's `pipeline.Source.origin`: the tokenizer's content
  fingerprint (`inference.fingerprint`) and the raw split's data
  fingerprint, from its metadata: by content, not by path or step."""
  return {
      "tokenizer": metadata.get("tokenizer"),
      "data": (metadata.get("data") or {}).get("data"),
      "sequences": pipeline.digest(sequence_ids),
  }


class TokenSource:
  """Random access to a tokenized split; the attributes of `SequenceSource`.

  Items: {"codes" int32 [n_frames, Q], "phrase", "sequence_id",
  "participant_id"}; `hand_frames` (= `lengths`) is n_frames, so the input
  pipeline plans its buckets without reading codes.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    with fileio.reading(self.path) as f:
      table = pq.read_table(f)
    self.metadata = json.loads(table.schema.metadata[METADATA_KEY])
    self.code_spec = CodeSpec(
        int(self.metadata["num_quantizers"]),
        int(self.metadata["codebook_size"]),
    )
    self.num_quantizers = self.code_spec.num_quantizers
    self.sequence_ids = table["sequence_id"].to_numpy()
    self.participant_ids = table["participant_id"].to_numpy()
    self.phrases = table["phrase"].to_pylist()
    self.lengths = table["n_frames"].to_numpy().astype(np.int64)
    self.hand_frames = self.lengths
    frames = table["codes"].combine_chunks().flatten()
    self._codes = frames.flatten().to_numpy().reshape(-1, self.num_quantizers)
    self._offsets = np.concatenate([[0], np.cumsum(self.lengths)])
    self.origin = origin(self.metadata, self.sequence_ids)
    if len(self._codes) != self._offsets[-1]:
      raise errors.UserError(
          f"{self.path}: {len(self._codes)} code frames for "
          f"n_frames summing to {self._offsets[-1]}"
      )

  def __len__(self) -> int:
    return len(self.sequence_ids)

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = pipeline.source_index(i, len(self))
    return {
        "codes": self._codes[self._offsets[i] : self._offsets[i + 1]].astype(
            np.int32
        ),
        "phrase": self.phrases[i],
        "sequence_id": int(self.sequence_ids[i]),
        "participant_id": int(self.participant_ids[i]),
    }

  def __repr__(self) -> str:
    return f"TokenSource({self.path!r}, sequences={len(self)})"


def subset(source, indices: Iterable[int]) -> "_Subset":
  """The rows `indices` of a source (e.g. a split of the test split by
  signer), with the same per-sequence attributes, so it is a source too."""
  return _Subset(source, indices)


class _Subset:

  _ARRAYS = ("sequence_ids", "participant_ids", "lengths", "hand_frames")

  def __init__(self, source, indices: Iterable[int]):
    indices = np.asarray(indices, np.int64)
    if indices.ndim != 1 or (
        indices.size and (indices.min() < 0 or indices.max() >= len(source))
    ):
      raise IndexError(
          f"indices must be 1-D indices into {len(source)} " "sequences"
      )
    self.source, self.indices = source, indices
    self.num_quantizers = source.num_quantizers
    for name in self._ARRAYS:
      setattr(self, name, np.asarray(getattr(source, name))[indices])
    self.phrases = [source.phrases[i] for i in indices]
    self.origin = dict(
        source.origin, sequences=pipeline.digest(self.sequence_ids)
    )

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return self.source[int(self.indices[operator.index(i)])]

  def __repr__(self) -> str:
    return f"subset({self.source!r}, sequences={len(self)})"


def load_splits(tokens_dir: str) -> tuple[dict[str, TokenSource], CodeSpec]:
  """The train / validation / test splits of a tokenized dataset (local or
  an object store URL, `gs://bucket/tokens`) and its code spec.

  Raises:
    FileNotFoundError: a split is missing (naming the command that writes it).
  """
  if not tokens_dir:
    raise errors.UserError(
        "input=tokens needs --config.tokens=DIR, the output of "
        "`python -m asl_vq.main --config=tokenize`"
    )
  splits = {}
  for split in splits_lib.SPLITS:
    path = os.path.join(tokens_dir, f"{split}.parquet")
    if not epath.Path(path).exists():
      raise FileNotFoundError(
          f"{path}: no tokenized {split} split; run `python -m asl_vq.main "
          f"--config=tokenize --config.checkpoint=RUN --workdir={tokens_dir}` "
          "first"
      )
    splits[split] = TokenSource(path)
  return splits, splits["train"].code_spec


def read_metadata(tokens_dir: str, split: str = "train") -> dict[str, Any]:
  """A tokenized split's metadata (code spec, tokenizer checkpoint and step)
  without reading its codes."""
  path = os.path.join(tokens_dir, f"{split}.parquet")
  with fileio.reading(path) as f:
    return json.loads(pq.read_schema(f).metadata[METADATA_KEY])


def code_spec(tokens_dir: str) -> CodeSpec:
  """The code spec of a tokenized dataset (from its train split)."""
  meta = read_metadata(tokens_dir)
  return CodeSpec(int(meta["num_quantizers"]), int(meta["codebook_size"]))
