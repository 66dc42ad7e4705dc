"""Summarises a Kaggle-layout dataset: what to run first on a new download.

  python -m asl_vq.data.inspect --data_dir=DIR [--json]

Reads the metadata and the landmark parquet directly (hand columns only) and
reports, per source, the counts, lengths, hands and signers, and what
`cache.prepare` would skip and why (unknown characters counted as with
`skip_unknown_chars=True`). Bad input: one line on stderr, exit 1.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
import numpy as np
import tqdm

from asl_vq import cli
from asl_vq import vocab
from asl_vq.data import cache
from asl_vq.data import layout
from asl_vq.data import reader

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Kaggle-layout dataset " "(local or gs://...)."
)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object on stdout.")
_MIN_HAND_FRAMES = flags.DEFINE_integer(
    "min_hand_frames", 2, "As in prepare: fewer hand frames are skipped."
)

PERCENTILES = (5, 50, 95, 97)


def _length_stats(lengths: list[int]) -> dict[str, float | None]:
  keys = [f"p{p}" for p in PERCENTILES] + ["max"]
  if not lengths:
    return dict.fromkeys(keys)
  values = [round(float(v), 2) for v in np.percentile(lengths, PERCENTILES)]
  return dict(zip(keys, values + [int(max(lengths))]))


def summarize_source(
    data_dir: str,
    source: str,
    *,
    min_hand_frames: int = 2,
    progress: bool = True,
) -> dict[str, object]:
  """The statistics of one source (see the module docstring)."""
  meta = reader.read_metadata(data_dir, source)
  skips = cache.Skips()
  lengths, hand_lengths = [], []
  left = right = both = unlisted = 0
  files = meta.files()
  for rel_path, rows in tqdm.tqdm(
      files,
      desc=f"inspect {source}",
      unit="file",
      file=sys.stderr,
      disable=not progress,
  ):
    by_id = reader.read_hands(os.path.join(data_dir, rel_path))
    unlisted += len(set(by_id) - set(meta.sequence_id[rows].tolist()))
    for r in rows:
      hands = by_id.get(int(meta.sequence_id[r]))
      n = None
      if hands is not None:
        has_left = reader.hand_frame_mask(hands[:, : layout.NUM_HAND_POINTS])
        has_right = reader.hand_frame_mask(hands[:, layout.NUM_HAND_POINTS :])
        n = int((has_left | has_right).sum())
        lengths.append(len(hands))
        hand_lengths.append(n)
        left += int(has_left.sum())
        right += int(has_right.sum())
        both += int((has_left & has_right).sum())
      reason = cache.skip_reason(
          meta.phrase[r], n, min_hand_frames=min_hand_frames
      )
      if reason:
        skips.add(reason, meta.sequence_id[r])
  hand_frames = sum(hand_lengths)
  phrase_lengths = [len(p) for p in meta.phrase]
  seen = set("".join(meta.phrase))
  fraction = lambda n: round(n / hand_frames, 4) if hand_frames else None
  return {
      "sequences": len(meta),
      "usable_sequences": sum(n > 0 for n in hand_lengths),
      "would_keep": len(meta) - skips.total,
      "unlisted_sequences": unlisted,
      "files": len(files),
      "frames": sum(lengths),
      "hand_frames": hand_frames,
      "frame_length": _length_stats(lengths),
      "hand_frame_length": _length_stats([n for n in hand_lengths if n]),
      "phrase_length": {
          "mean": (
              round(float(np.mean(phrase_lengths)), 2)
              if phrase_lengths
              else None
          ),
          "min": min(phrase_lengths, default=None),
          "max": max(phrase_lengths, default=None),
      },
      "characters": "".join(sorted(seen)),
      "unknown_characters": list(vocab.unknown_characters("".join(seen))),
      "left_hand_fraction": fraction(left),
      "right_hand_fraction": fraction(right),
      "both_hands_fraction": fraction(both),
      "signers": len(np.unique(meta.participant_id)),
      "skipped": skips.total,
      "skipped_by_reason": skips.as_dict(),
  }


def summarize(
    data_dir: str | os.PathLike,
    *,
    min_hand_frames: int = 2,
    progress: bool = True,
) -> dict[str, dict[str, object]]:
  """source -> statistics, for `train` and each other source present."""
  data_dir = os.fspath(data_dir)
  reader.check_data_dir(data_dir)
  return {
      s: summarize_source(
          data_dir, s, min_hand_frames=min_hand_frames, progress=progress
      )
      for s in reader.available_sources(data_dir)
  }


def _format(value: object) -> str:
  if isinstance(value, str):
    return repr(value)  # Shows a leading space among the characters.
  if isinstance(value, dict):
    return " / ".join("-" if v is None else f"{v:g}" for v in value.values())
  return "-" if value is None else str(value)


def format_table(stats: dict[str, dict[str, object]]) -> str:
  """A human-readable table: one row per statistic, one column per source."""
  rows = [["", *stats]]
  for key, value in next(iter(stats.values())).items():
    if key == "skipped_by_reason":
      for reason in value:
        rows.append(
            [f"  skipped: {reason}"]
            + [
                f"{s[key][reason]['count']} (e.g. {s[key][reason]['first_ids']})"
                if s[key][reason]["count"]
                else "0"
                for s in stats.values()
            ]
        )
      continue
    label = (
        key if not isinstance(value, dict) else (f"{key} ({'/'.join(value)})")
    )
    rows.append([label] + [_format(s[key]) for s in stats.values()])
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return "\n".join(
      "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows
  )


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  stats = summarize(_DATA_DIR.value, min_hand_frames=_MIN_HAND_FRAMES.value)
  print(json.dumps(stats) if _JSON.value else format_table(stats))


if __name__ == "__main__":
  flags.mark_flag_as_required("data_dir")
  cli.run(main)
