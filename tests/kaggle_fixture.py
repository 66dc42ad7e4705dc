"""Writes a small dataset in the exact Kaggle layout, awkward cases included.

All 1629 landmark columns in the real order, several sequences per file,
`sequence_id` as a pandas index (with pandas metadata) in some files and as a
plain column in others, frames not starting at 0, rows shuffled, a phrase
with commas and quotes (and, optionally, one with a character outside
the vocabulary), a sequence with no hand at all, a one-frame
sequence, a CSV row whose sequence is absent from its file and a sequence in
a file but not in the CSV. The hand values are random but returned, so that
tests can check what the reader gives back exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asl_vq import vocab
from asl_vq.data import layout

H = layout.NUM_HAND_POINTS


@dataclasses.dataclass(frozen=True)
class Seq:
  """One sequence: which frames (in file order) show which hand."""

  sequence_id: int
  participant_id: int
  phrase: str
  first_frame: int = 0
  left: str = ""  # One character per frame: '1' hand detected, '0' not.
  right: str = ""
  in_csv: bool = True
  in_file: bool = True


# source -> file_id -> (sequence_id as a pandas index?, sequences).
FILES = {
    "train": {
        1000: (
            True,
            [
                Seq(101, 1, "he said 'hi, there', ok", 10, "110011", "011001"),
                Seq(102, 2, "1600 pennsylvania ave", 3, "11111", "11111"),
                Seq(103, 1, "no hands here", 7, "0000", "0000"),
            ],
        ),
        2000: (
            False,
            [
                Seq(201, 3, "www.example.com", 100, "0000000", "1111111"),
                Seq(202, 2, "x", 5, "1", "0"),
                Seq(203, 4, "+1-555-0100", 0, "11110", "00000"),
                Seq(204, 3, "absent from its file", in_file=False),
                Seq(299, 4, "not in the csv", 1, "11", "11", in_csv=False),
            ],
        ),
        3000: (
            False,
            [
                Seq(301, 3, "https://a.b/c?d=e", 20, "1111", "1100"),
                Seq(302, 4, "42 main st", 2, "101", "000"),
            ],
        ),
    },
    "supplemental": {
        5000: (
            True,
            [
                Seq(501, 1, "the quick brown fox", 4, "1111", "0000"),
                Seq(502, 5, "hello, world", 9, "011", "110"),
            ],
        ),
    },
}
UNKNOWN_CHAR_SEQUENCE = 302
# '"' is outside the vocabulary; in the CSV it is also escaped as '""'.
UNKNOWN_CHAR_PHRASE = 'the "42, main" st'
KEPT = {"train": [101, 102, 201, 203, 301, 302], "supplemental": [501, 502]}
SKIPPED = {
    "train": {
        "absent_from_file": [204],
        "no_hand": [103],
        "too_few_hand_frames": [202],
    },
    "supplemental": {},
}
LISTED = {
    s: [q.sequence_id for _, seqs in files.values() for q in seqs if q.in_csv]
    for s, files in FILES.items()
}


@dataclasses.dataclass(frozen=True)
class Fixture:
  root: str
  hands: dict[int, np.ndarray]  # Expected reader output: [T, 42, 2] by frame.
  phrases: dict[int, str]
  participants: dict[int, int]


def _hands(rng: np.random.Generator, seq: Seq) -> np.ndarray:
  hands = rng.uniform(0.05, 0.95, (len(seq.left), 2 * H, 2)).astype(np.float32)
  hands[np.array(list(seq.left)) == "0", :H] = np.nan
  hands[np.array(list(seq.right)) == "0", H:] = np.nan
  hands[0, 3:7] = np.nan  # A few undetected points in a detected hand.
  return hands


def write_landmarks(
    path: str, seqs: list[Seq], pandas_index: bool, rng: np.random.Generator
) -> dict[int, np.ndarray]:
  """One landmark file with rows shuffled; returns the hands by sequence."""
  expected, ids, frames, hands = {}, [], [], []
  for seq in seqs:
    if not seq.in_file:
      continue
    h = _hands(rng, seq)
    expected[seq.sequence_id] = h
    ids += [seq.sequence_id] * len(h)
    frames += range(seq.first_frame, seq.first_frame + len(h))
    hands.append(h)
  hands = np.concatenate(hands)
  order = rng.permutation(len(ids))
  columns = {
      name: rng.uniform(-1, 2, len(ids)).astype(np.float32)
      for name in layout.landmark_columns()
  }
  for j, (x, y) in enumerate(zip(layout.HAND_X_COLUMNS, layout.HAND_Y_COLUMNS)):
    columns[x], columns[y] = hands[:, j, 0], hands[:, j, 1]
  frame_type = pa.int16() if pandas_index else pa.int64()
  arrays = {layout.FRAME_COLUMN: pa.array(frames, frame_type)}
  arrays.update((n, pa.array(v)) for n, v in columns.items())
  index = {layout.INDEX_COLUMN: pa.array(ids, pa.int64())}
  # pandas writes the index last; a plain column goes first.
  arrays = {**arrays, **index} if pandas_index else {**index, **arrays}
  table = pa.table(arrays).take(order)
  if pandas_index:
    table = table.replace_schema_metadata(
        {
            b"pandas": layout.pandas_metadata(
                table.column_names, table.schema.types
            )
        }
    )
  pq.write_table(table, path)
  return expected


def write_dataset(
    root: str | os.PathLike,
    *,
    supplemental: bool = True,
    unknown_char: bool = False,
    seed: int = 0,
) -> Fixture:
  """Writes the dataset of `FILES` under `root` (created)."""
  root = os.fspath(root)
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(seed)
  hands, phrases, participants = {}, {}, {}
  for source, files in FILES.items():
    if source == "supplemental" and not supplemental:
      continue
    csv_name, landmark_dir = layout.SOURCES[source]
    os.makedirs(os.path.join(root, landmark_dir), exist_ok=True)
    rows = []
    for file_id, (pandas_index, seqs) in files.items():
      rel_path = f"{landmark_dir}/{file_id}.parquet"
      hands.update(
          write_landmarks(os.path.join(root, rel_path), seqs, pandas_index, rng)
      )
      for seq in seqs:
        phrase = (
            UNKNOWN_CHAR_PHRASE
            if unknown_char and seq.sequence_id == UNKNOWN_CHAR_SEQUENCE
            else seq.phrase
        )
        phrases[seq.sequence_id] = phrase
        participants[seq.sequence_id] = seq.participant_id
        if seq.in_csv:
          rows.append(
              [rel_path, file_id, seq.sequence_id, seq.participant_id, phrase]
          )
    with open(os.path.join(root, csv_name), "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(layout.METADATA_COLUMNS)
      writer.writerows(rows)
  with open(os.path.join(root, layout.CHARACTER_MAP), "w") as f:
    json.dump(vocab.as_json_dict(), f)
  return Fixture(root, hands, phrases, participants)
