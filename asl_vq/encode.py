r"""Hand landmarks -> codes with a trained tokenizer, one record per sequence.

  python -m asl_vq.encode --tokenizer=RUN --input=PATH[,PATH...] \
      [--input=PATH ...] --out=codes.jsonl [--which=best] [--batch_size=16] \
      [--transcribe]

Each PATH is a `.pose` file (`asl_vq.data.pose`), a video (its hands from
`asl_vq.data.video`), a Kaggle-layout dataset directory (one that holds
train.csv: every sequence its metadata CSVs list), or a directory searched
recursively for these. `--out` gets one record per sequence
(`asl_vq.code_records`: id, source, num_frames, fps, frames, codes [T', Q]
and their text form, the statistics, hands seen and image size that put
decoded frames back into the picture; with `--transcribe` also the CTC
head's reading of the hands, `Tokenizer.transcribe`) as JSONL, CSV or
parquet by its extension. Codes are
those of `Tokenizer.encode_frames`: one group per input frame with a hand,
none resampled (longer sequences in overlapping windows), each record with
its frames' indices and, for `.pose` files and videos, the frame rate; a
sequence without a hand gets none. Transcripts read the whole sequence
(resampled to the model's length when longer). `--out` may be `gs://...`;
inputs are local. Bad input: one line on stderr, exit 1; an input file that
cannot be read is left out and named at the end (exit 1), the other records
written.

`encode` and `sequences` are the API behind the command.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Iterable, Iterator, Sequence

import numpy as np
import tqdm
from absl import flags

from asl_vq import cli
from asl_vq import code_records
from asl_vq import errors
from asl_vq import fileio
from asl_vq.data import layout
from asl_vq.data import pose as pose_lib
from asl_vq.data import reader
from asl_vq.inference import FrameCodes
from asl_vq.inference import Tokenizer
from asl_vq.models import tokenizer as tokenizer_lib

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
_KAGGLE_MARKER = layout.SOURCES["train"][0]  # train.csv


@dataclasses.dataclass(frozen=True)
class Item:
  """One input sequence; hands None: listed, but absent from its file, or
  its file could not be read (`error` then says why)."""

  id: str
  source: str
  hands: np.ndarray | None  # float32 [T, 42, 2], NaN: no hand.
  error: str | None = None
  fps: float | None = None  # where the input says.
  size: tuple[int, int] | None = None  # (width, height) pixels, likewise.


class UnreadableInputs(errors.UserError):
  """Some inputs could not be read; the others were encoded and written."""


def _video_hands(path: str) -> tuple[np.ndarray, float, tuple[int, int]]:
  try:
    from asl_vq.data import video  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.MissingExtra(
        f"{path}: reading videos needs "
        f"asl_vq.data.video, which failed to import "
        f"({e})"
    ) from None
  info = video.info(path)
  return (*video.hands(path), (info.width, info.height))


# What one unreadable input file raises (a bad `.pose` or landmark file, a
# video that does not open): its records are left out and named, the rest
# encoded. A missing optional extra (ImportError) stops the command.
_UNREADABLE = (ValueError, OSError)


def _file_items(path: str, id_: str) -> Iterator[Item]:
  try:
    if path.lower().endswith(".pose"):
      hands, fps, size = pose_lib.read_sized(path)
    else:
      hands, fps, size = _video_hands(path)
  except _UNREADABLE as e:
    yield Item(id_, path, None, cli.one_line(e))
    return
  yield Item(
      id_,
      path,
      hands,
      fps=float(fps) if fps and math.isfinite(fps) else None,
      size=size if all(size) else None,
  )


def _kaggle_items(metadata: Sequence[reader.Metadata]) -> Iterator[Item]:
  for meta in metadata:
    data_dir = os.path.dirname(meta.csv_path)
    for rel_path, rows in meta.files():
      path = os.path.join(data_dir, rel_path)
      try:
        by_id, error = reader.read_hands(path), None
      except _UNREADABLE as e:
        by_id, error = {}, cli.one_line(e)
      for r in rows:
        sid = int(meta.sequence_id[r])
        yield Item(str(sid), path, by_id.get(sid), error)


def _is_input_file(name: str) -> bool:
  return name.lower().endswith((".pose",) + VIDEO_EXTENSIONS)


def _kaggle_metadata(data_dir: str) -> list[reader.Metadata]:
  reader.check_data_dir(data_dir)
  return [
      reader.read_metadata(data_dir, s)
      for s in reader.available_sources(data_dir)
  ]


def input_paths(values: Sequence[str]) -> list[str]:
  """The paths of `--input` values: a value that exists is one path (a file
  name may hold commas); any other is split at its commas, each part
  stripped, empty parts dropped."""
  return [
      p.strip()
      for v in values
      for p in ([v] if os.path.exists(v) else v.split(","))
      if p.strip()
  ]


def sequences(paths: Sequence[str]) -> tuple[Iterator[Item], int]:
  """(the inputs' sequences, in order, read as iterated; how many there are).

  See the module docstring for what a path may be. Ids: a file's stem (its
  path under a searched directory, without extension), a Kaggle sequence's
  `sequence_id`. Metadata is read now, so that a bad path fails early.

  A file that cannot be read gives its items with `error` set (see
  `encode`), so that the others are still encoded.

  Raises:
    ValueError: a path that does not exist, is remote (`gs://`), or holds
      no input; a dataset's bad metadata (`reader.DataError`).
  """
  parts, count = [], 0
  for path in paths:
    if fileio.is_remote(path):
      raise errors.UserError(
          f"{path}: encode reads local inputs only; copy them "
          f"here first (gcloud storage cp -r {path} .)"
      )
    path = os.path.normpath(path)
    if os.path.isfile(path):
      if not _is_input_file(path):
        raise errors.UserError(
            f"{path}: not a .pose file nor a video "
            f"({', '.join(VIDEO_EXTENSIONS)})"
        )
      parts.append(
          _file_items(path, os.path.splitext(os.path.basename(path))[0])
      )
      count += 1
      continue
    if not os.path.isdir(path):
      raise errors.UserError(f"{path}: no such file or directory")
    found = 0
    for root, dirs, files in os.walk(path):
      dirs.sort()
      if _KAGGLE_MARKER in files:
        metadata = _kaggle_metadata(root)
        parts.append(_kaggle_items(metadata))
        found += sum(len(m) for m in metadata)
        dirs.clear()  # Its landmark directories hold no other inputs.
        continue
      for name in sorted(filter(_is_input_file, files)):
        file_path = os.path.join(root, name)
        id_ = os.path.splitext(os.path.relpath(file_path, path))[0]
        parts.append(_file_items(file_path, id_.replace(os.sep, "/")))
        found += 1
    if not found:
      raise errors.UserError(
          f"{path}: holds no .pose file, video or Kaggle-layout "
          f"dataset ({_KAGGLE_MARKER})"
      )
    count += found
  return (item for part in parts for item in part), count


def _encode_chunk(
    tokenizer: Tokenizer, items: Sequence[Item], transcribe: bool
) -> list[dict]:
  """Records of items, in order; those with a hand in one `encode_frames`
  call (and one transcribe call)."""
  with_hand = [
      i for i, item in enumerate(items) if not np.isnan(item.hands).all()
  ]
  q = tokenizer.code_spec.num_quantizers
  got = [None] * len(items)
  hands = [items[i].hands for i in with_hand]
  for i, frame_codes in zip(
      with_hand,
      tokenizer.encode_frames(hands, [items[i].fps for i in with_hand]),
  ):
    got[i] = frame_codes
  texts = [""] * len(items) if transcribe else [None] * len(items)
  if transcribe:
    for i, t in zip(with_hand, tokenizer.transcribe(hands)):
      texts[i] = t
  none = FrameCodes(  # a sequence with no hand: no code group.
      codes=np.zeros((0, q), np.int32),
      frames=np.zeros(0, np.int64),
      missing=np.zeros(0, np.int64),
      num_frames=0,
      fps=None,
      mean=np.zeros((0, 2, 2), np.float32),
      std=np.zeros((0, 2, 2), np.float32),
      seen=np.zeros((0, 2), bool),
  )
  return [
      code_records.record(
          item.id,
          item.source,
          len(item.hands),
          g.codes,
          tokenizer.to_text(g.codes),
          t,
          frames=g.frames,
          fps=item.fps,
          mean=g.mean,
          std=g.std,
          seen=g.seen,
          size=item.size,
      )
      for item, g, t in zip(items, [g or none for g in got], texts)
  ]


def encode(
    tokenizer: Tokenizer,
    items: Iterable[Item],
    out: str,
    *,
    total: int | None = None,
    progress: bool = True,
    transcribe: bool = False,
) -> int:
  """Writes the records of `items` (e.g. `sequences`' first) to `out`;
  returns how many. `transcribe`: each record also holds the CTC head's
  transcript ('' for a sequence without a hand).

  Sequences go to `tokenizer.encode` a few batches at a time; `total` sizes
  the progress bar. An item without hands (listed in a Kaggle metadata CSV
  but absent from its landmark file) is left out, with a warning on stderr.
  `out` is local or `gs://...`.

  Raises:
    UnreadableInputs: some input files could not be read (named, with why);
      every other record is written to `out` first.
    ValueError: an unknown output extension, two sequences with the same
      id, or `transcribe` with a tokenizer without a CTC head.
  """
  code_records.file_format(out)
  if transcribe and not tokenizer.config.model.use_ctc:
    raise errors.UserError(f"--transcribe: {tokenizer_lib.NO_CTC_HEAD}")
  chunk = tokenizer.batch_size * len(tokenizer.buckets)
  sources, absent, unreadable, pending, written = {}, [], {}, [], 0
  with (
      code_records.Writer(out, transcribe) as writer,
      tqdm.tqdm(
          total=total,
          desc="encode",
          unit="seq",
          file=sys.stderr,
          disable=not progress,
      ) as bar,
  ):
    for item in items:
      bar.update()
      if item.error is not None:
        unreadable[item.source] = item.error
        continue
      if item.hands is None:
        absent.append(item.id)
        continue
      if item.id in sources:
        raise errors.UserError(
            f"two sequences have the id {item.id!r} (from "
            f"{sources[item.id]} and {item.source}); encode "
            "them into separate files"
        )
      sources[item.id] = item.source
      pending.append(item)
      if len(pending) == chunk:
        writer.write(_encode_chunk(tokenizer, pending, transcribe))
        written, pending = written + len(pending), []
    if pending:
      writer.write(_encode_chunk(tokenizer, pending, transcribe))
      written += len(pending)
  if absent:
    print(
        f"warning: left out {len(absent)} sequences listed in a metadata "
        f"CSV but absent from their landmark file (e.g. {absent[:3]})",
        file=sys.stderr,
    )
  if unreadable:
    (source, why), *_ = unreadable.items()
    why = why if source in why else f"{source}: {why}"
    raise UnreadableInputs(
        f"{out}: wrote the {written} sequences read; {len(unreadable)} input "
        f"file(s) could not be read and are left out, e.g. {why}"
        + (
            f" (and {', '.join(list(unreadable)[1:4])}"
            f"{' ...' if len(unreadable) > 4 else ''})"
            if len(unreadable) > 1
            else ""
        )
    )
  return written


FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a program, so importing the module defines no flags."""
  cli.define_tokenizer_flags()
  flags.DEFINE_multi_string(
      "input",
      None,
      ".pose files, videos, Kaggle-layout dataset directories, "
      "or directories of these; repeat the flag, or separate paths with "
      "commas (a value that names an existing path is one path, commas and "
      "all).",
  )
  flags.DEFINE_string("out", None, "Output file: .jsonl, .csv or .parquet.")
  flags.DEFINE_integer("batch_size", 16, "Sequences per model call.")
  flags.DEFINE_bool(
      "transcribe",
      False,
      "Add each record's transcript: the "
      "tokenizer's CTC head read greedily (needs a tokenizer "
      "trained with CTC).",
  )
  flags.mark_flags_as_required(["input", "out"])


def main(argv):
  cli.start(argv)
  code_records.file_format(FLAGS.out)  # Before the slow model load.
  items, count = sequences(input_paths(FLAGS.input))
  tokenizer = Tokenizer.load(FLAGS.tokenizer, FLAGS.which, FLAGS.batch_size)
  n = encode(
      tokenizer, items, FLAGS.out, total=count, transcribe=FLAGS.transcribe
  )
  print(f"{FLAGS.out}: {n} sequences")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
