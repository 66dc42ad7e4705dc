"""The prepared cache: one pass over the parquet, then memory-mapped reads.

Reading 1629-column parquet files at every epoch is slow, so `prepare`
converts each source once into `cache_dir`:

  <source>.frames.npy     float32 [N_frames, 42, 2]: the raw hands (NaN for
                          no detection, no-hand frames kept) of the kept
                          sequences, concatenated.
  <source>.index.parquet  one row per kept sequence: sequence_id,
                          participant_id, phrase, file_id, offset, length,
                          hand_frames.
  <source>.report.json    counts, skips and the input fingerprint (the
                          files' content, `fileio.sha256`, and the options).
                          Written last: it marks the cache complete.
  <source>.parts/         per landmark file results while preparing, so that
                          an interrupted run resumes; removed at the end.
  <source>.digests.json   each input file's size, mtime and sha256, so that
                          a file is read again only when those change.
  <source>.lock           held while one process prepares the source.

Every file is written under a temporary name and then renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
from typing import Iterable, Iterator, Sequence

from absl import logging
from etils import epath
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tqdm

from asl_vq import errors
from asl_vq import fileio
from asl_vq import vocab
from asl_vq.data import layout
from asl_vq.data import pipeline
from asl_vq.data import reader

SKIP_REASONS = (
    "unknown_character",
    "absent_from_file",
    "no_hand",
    "too_few_hand_frames",
)
_FIRST_IDS = 10
_VERSION = 2  # 2: files by content (`fileio.sha256`), not size and mtime.


def cache_paths(cache_dir: str | os.PathLike, source: str) -> dict[str, str]:
  """The files of one source in the cache directory."""
  base = os.path.join(cache_dir, source)
  return {
      "frames": f"{base}.frames.npy",
      "index": f"{base}.index.parquet",
      "report": f"{base}.report.json",
      "parts": f"{base}.parts",
      "digests": f"{base}.digests.json",
  }


def skip_reason(
    phrase: str, hand_frames: int | None, *, min_hand_frames: int
) -> str | None:
  """Why a sequence is skipped, or None; `hand_frames` is None if absent."""
  if vocab.unknown_characters(phrase):
    return "unknown_character"
  if hand_frames is None:
    return "absent_from_file"
  if hand_frames == 0:
    return "no_hand"
  if hand_frames < min_hand_frames:
    return "too_few_hand_frames"
  return None


class Skips:
  """Counts skipped sequences per reason and keeps the first few ids."""

  def __init__(self):
    self.counts = dict.fromkeys(SKIP_REASONS, 0)
    self.first_ids = {r: [] for r in SKIP_REASONS}

  def add(self, reason: str, sequence_id: int) -> None:
    self.counts[reason] += 1
    if len(self.first_ids[reason]) < _FIRST_IDS:
      self.first_ids[reason].append(int(sequence_id))

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def as_dict(self) -> dict[str, dict[str, object]]:
    return {
        r: {"count": self.counts[r], "first_ids": self.first_ids[r]}
        for r in SKIP_REASONS
    }

  def log(self, what: str) -> None:
    if self.total:
      logging.warning(
          "%s: skipped %d sequences: %s",
          what,
          self.total,
          ", ".join(
              f"{r} {n} (e.g. {self.first_ids[r]})"
              for r, n in self.counts.items()
              if n
          ),
      )


def _stat(path: str) -> list[int]:
  """A file's size and mtime (ns); what an object store gives."""
  if fileio.is_remote(path):
    st = epath.Path(path).stat()
    return [int(st.length), int(st.mtime)]
  st = os.stat(path)
  return [st.st_size, st.st_mtime_ns]


def _fingerprint(
    data_dir: str, source: str, options: dict, memo_path: str
) -> str:
  """Hash of the input files' names and content digests (`fileio.sha256`),
  and the options. Digests are kept in `memo_path` by (size, mtime), so a
  file is read again only when those change: `touch` or a copy without
  times costs one read of each such file and keeps the cache; a rewritten
  file with other values remakes it."""
  csv_path, landmark_dir = reader.source_paths(data_dir, source)
  files = [csv_path, os.path.join(data_dir, layout.CHARACTER_MAP)]
  files += sorted(
      os.path.join(landmark_dir, p.name)
      for p in epath.Path(landmark_dir).iterdir()
      if p.name.endswith(".parquet")
  )
  memo = fileio.read_json(memo_path) or {}
  entries, seen = [], {}
  for f in files:
    if not epath.Path(f).exists():
      continue
    name, stat = os.path.relpath(f, data_dir), _stat(f)
    known = memo.get(name)
    digest = known[1] if known and known[0] == stat else fileio.sha256(f)
    seen[name] = [stat, digest]
    entries.append((name, digest))
  if seen != memo:
    fileio.write_json(memo_path, seen)
  payload = json.dumps(
      {
          "version": _VERSION,
          "source": source,
          "options": options,
          "files": entries,
      },
      sort_keys=True,
  )
  return hashlib.sha256(payload.encode()).hexdigest()


def _convert_file(
    data_dir: str,
    meta: reader.Metadata,
    rel_path: str,
    rows: np.ndarray,
    min_hand_frames: int,
) -> dict[str, object]:
  """The kept sequences and the skips of one landmark file (one part)."""
  by_id = reader.read_hands(os.path.join(data_dir, rel_path))
  kept, lengths, hand_frames, chunks = [], [], [], []
  skip_rows, skip_codes = [], []
  for r in rows:
    hands = by_id.get(int(meta.sequence_id[r]))
    n = None if hands is None else int(reader.hand_frame_mask(hands).sum())
    reason = skip_reason(meta.phrase[r], n, min_hand_frames=min_hand_frames)
    if reason:
      skip_rows.append(r)
      skip_codes.append(SKIP_REASONS.index(reason))
      continue
    kept.append(r)
    lengths.append(len(hands))
    hand_frames.append(n)
    chunks.append(hands)
  listed = set(meta.sequence_id[rows].tolist())
  return {
      "row": np.asarray(kept, np.int64),
      "length": np.asarray(lengths, np.int64),
      "hand_frames": np.asarray(hand_frames, np.int64),
      "frames": (
          np.concatenate(chunks)
          if chunks
          else np.empty((0, layout.NUM_POINTS, 2), np.float32)
      ),
      "skip_row": np.asarray(skip_rows, np.int64),
      "skip_reason": np.asarray(skip_codes, np.int8),
      "unlisted": np.int64(len(set(by_id) - listed)),
  }


def _write_part(path: str, arrays: dict[str, object]) -> None:
  fileio.atomic_write(path, lambda f: np.savez(f, **arrays))


@contextlib.contextmanager
def _open_part(path: str) -> Iterator[np.lib.npyio.NpzFile]:
  """A part's arrays, each read when first indexed."""
  with fileio.reading(path) as f, np.load(f) as part:
    yield part


def _assemble(
    paths: dict[str, str],
    meta: reader.Metadata,
    num_parts: int,
    source: str,
    fingerprint: str,
    options: dict,
) -> dict:
  """Concatenates the parts into the frames, the index and the report."""
  part_paths = [
      os.path.join(paths["parts"], f"{i:06d}.npz") for i in range(num_parts)
  ]
  rows, lengths, hand_frames = [], [], []
  skips, unlisted = Skips(), 0
  for p in part_paths:
    with _open_part(p) as part:
      rows.append(part["row"])
      lengths.append(part["length"])
      hand_frames.append(part["hand_frames"])
      for r, code in zip(part["skip_row"], part["skip_reason"]):
        skips.add(SKIP_REASONS[code], meta.sequence_id[r])
      unlisted += int(part["unlisted"])
  rows = np.concatenate(rows or [np.zeros(0, np.int64)])
  lengths = np.concatenate(lengths or [np.zeros(0, np.int64)])
  hand_frames = np.concatenate(hand_frames or [np.zeros(0, np.int64)])
  offsets = np.cumsum(lengths) - lengths

  def write_frames(f):
    # The .npy header, then each part's frames: one part in memory at a time.
    np.lib.format.write_array_header_1_0(
        f,
        {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False,
            "shape": (int(lengths.sum()), layout.NUM_POINTS, 2),
        },
    )
    for p in part_paths:
      with _open_part(p) as part:
        f.write(part["frames"].astype(np.float32, copy=False).tobytes())

  fileio.atomic_write(paths["frames"], write_frames)
  index = pa.table(
      {
          "sequence_id": meta.sequence_id[rows],
          "participant_id": meta.participant_id[rows],
          "phrase": pa.array([meta.phrase[r] for r in rows], pa.string()),
          "file_id": meta.file_id[rows],
          "offset": offsets,
          "length": lengths,
          "hand_frames": hand_frames,
      }
  )
  fileio.atomic_write(paths["index"], lambda f: pq.write_table(index, f))
  report = {
      "source": source,
      "sequences": len(meta),
      "kept": len(rows),
      "skipped": skips.total,
      "skipped_by_reason": skips.as_dict(),
      "unlisted_sequences": unlisted,
      "files": num_parts,
      "frames": int(lengths.sum()),
      "hand_frames": int(hand_frames.sum()),
      "options": options,
      "fingerprint": fingerprint,
  }
  fileio.write_json(paths["report"], report)
  skips.log(f"{source} ({meta.csv_path})")
  return report


def _check_phrases(meta: reader.Metadata) -> None:
  for sequence_id, phrase in zip(meta.sequence_id, meta.phrase):
    try:
      vocab.encode(phrase, int(sequence_id))
    except vocab.UnknownCharacterError as e:
      raise vocab.UnknownCharacterError(
          f"{meta.csv_path}: {e} (prepare with skip_unknown_chars=True to "
          "skip such sequences)"
      ) from None


@contextlib.contextmanager
def _exclusive(cache_dir: str, source: str) -> Iterator[None]:
  """One process at a time prepares a source of a local cache: two runs
  started at once on a fresh cache once removed each other's parts (the
  second cleared `<source>.parts` under the first). The second waits, then
  finds the cache complete. An object store has no lock: there, one
  command at a time (a multi-host run's process 0 goes first)."""
  if fileio.is_remote(cache_dir):
    yield
    return
  with open(os.path.join(cache_dir, f"{source}.lock"), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _prepare_source(
    data_dir: str, cache_dir: str, source: str, options: dict, progress: bool
) -> dict:
  with _exclusive(cache_dir, source):
    return _prepare_locked(data_dir, cache_dir, source, options, progress)


def _prepare_locked(
    data_dir: str, cache_dir: str, source: str, options: dict, progress: bool
) -> dict:
  paths = cache_paths(cache_dir, source)
  fingerprint = _fingerprint(data_dir, source, options, paths["digests"])
  done = fileio.read_json(paths["report"])
  if (
      done
      and done.get("fingerprint") == fingerprint
      and epath.Path(paths["frames"]).exists()
      and epath.Path(paths["index"]).exists()
  ):
    logging.info("%s: reusing the prepared cache in %s", source, cache_dir)
    return dict(done, reused=True)
  # Incomplete until the new report is written.
  epath.Path(paths["report"]).unlink(missing_ok=True)
  meta = reader.read_metadata(data_dir, source)
  if not options["skip_unknown_chars"]:
    _check_phrases(meta)
  fileio.start_parts(paths["parts"], {"fingerprint": fingerprint})
  files = meta.files()
  for i, (rel_path, rows) in enumerate(
      tqdm.tqdm(
          files,
          desc=f"prepare {source}",
          unit="file",
          file=sys.stderr,
          disable=not progress,
      )
  ):
    part = os.path.join(paths["parts"], f"{i:06d}.npz")
    if not epath.Path(part).exists():
      _write_part(
          part,
          _convert_file(
              data_dir, meta, rel_path, rows, options["min_hand_frames"]
          ),
      )
  report = _assemble(paths, meta, len(files), source, fingerprint, options)
  epath.Path(paths["parts"]).rmtree()
  return dict(report, reused=False)


def prepare(
    data_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    sources: Sequence[str] = ("train",),
    *,
    skip_unknown_chars: bool = False,
    min_hand_frames: int = 2,
    progress: bool = True,
) -> dict[str, dict]:
  """Converts each source of a Kaggle-layout dataset into the cache.

  Args:
    data_dir: the dataset directory (train.csv, train_landmarks/, ...),
      local or an object store URL (`gs://bucket/asl`).
    cache_dir: where the cache goes (created if needed), local or an object
      store URL (then each process reads the frames whole into memory, where
      a local cache is memory-mapped).
    sources: `train` and/or `supplemental`.
    skip_unknown_chars: skip (and count) phrases with a character outside the
      vocabulary instead of raising `vocab.UnknownCharacterError`.
    min_hand_frames: sequences with fewer frames with a hand are skipped.
    progress: show a progress bar over the landmark files.

  Returns:
    source -> report: sequences (CSV rows), kept, skipped, skipped_by_reason
    ({reason: {count, first_ids}}), unlisted_sequences (in a landmark file
    but not in the CSV), files, frames, hand_frames, options, fingerprint,
    reused (True when a complete cache of the same inputs was found).
  """
  data_dir, cache_dir = os.fspath(data_dir), os.fspath(cache_dir)
  if isinstance(sources, str):
    sources = (sources,)
  if min_hand_frames < 1:
    raise errors.UserError(
        f"min_hand_frames must be >= 1, got {min_hand_frames}"
    )
  reader.check_data_dir(data_dir)
  epath.Path(cache_dir).mkdir(parents=True, exist_ok=True)
  options = {
      "skip_unknown_chars": bool(skip_unknown_chars),
      "min_hand_frames": int(min_hand_frames),
  }
  return {
      s: _prepare_source(data_dir, cache_dir, s, options, progress)
      for s in sources
  }


def _load_frames(path: str) -> np.ndarray:
  """Memory-mapped if local; read whole from an object store."""
  if fileio.is_remote(path):
    with fileio.reading(path) as f:
      return np.load(f)
  return np.load(path, mmap_mode="r")


class SequenceSource:
  """Random access to the prepared sequences of one source.

  A grain `RandomAccessDataSource`. The frames are memory-mapped on first use
  and not pickled, so the source can be sent to worker processes. The
  per-sequence arrays (`hand_frames`, `lengths`, ...) let the input pipeline
  plan batches without loading any frames.
  """

  num_quantizers = None  # landmarks, not codes (`pipeline.Source`).

  def __init__(
      self,
      cache_dir: str | os.PathLike,
      source: str = "train",
      rows: Iterable[int] | None = None,
  ):
    paths = cache_paths(cache_dir, source)
    if not epath.Path(paths["report"]).exists():
      raise reader.DataError(
          f"{cache_dir}: no complete {source!r} cache (run prepare first)"
      )
    with fileio.reading(paths["index"]) as f:
      index = pq.read_table(f)
    n = index.num_rows
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= n)):
      raise IndexError(f"rows must be 1-D indices into {n} sequences")
    self.cache_dir, self.source, self.rows = os.fspath(cache_dir), source, rows
    column = lambda name: index[name].to_numpy()[rows]
    self.sequence_ids = column("sequence_id")
    self.participant_ids = column("participant_id")
    self.offsets = column("offset")
    self.lengths = column("length")
    self.hand_frames = column("hand_frames")
    self.phrases = index["phrase"].take(pa.array(rows)).to_pylist()
    self._frames_path = paths["frames"]
    self._frames = _load_frames(self._frames_path)
    report = fileio.read_json(paths["report"]) or {}
    self.origin = {
        "data": str(report.get("fingerprint", ""))[:16],
        "sequences": pipeline.digest(self.sequence_ids),
    }
    shape = self._frames.shape
    needed = int(
        (index["offset"].to_numpy() + index["length"].to_numpy()).max(initial=0)
    )
    if shape[1:] != (layout.NUM_POINTS, 2) or shape[0] < needed:
      raise reader.DataError(
          f"{self._frames_path}: shape {shape} does not "
          f"match the index {paths['index']}"
      )

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, i: int) -> dict[str, object]:
    i = pipeline.source_index(i, len(self))
    if self._frames is None:
      self._frames = _load_frames(self._frames_path)
    start = self.offsets[i]
    return {
        "hands": np.array(self._frames[start : start + self.lengths[i]]),
        "phrase": self.phrases[i],
        "sequence_id": int(self.sequence_ids[i]),
        "participant_id": int(self.participant_ids[i]),
    }

  def __getstate__(self) -> dict:
    return dict(self.__dict__, _frames=None)

  def __repr__(self) -> str:
    return (
        f"SequenceSource(cache_dir={self.cache_dir!r}, "
        f"source={self.source!r}, sequences={len(self)})"
    )


class ConcatSource:
  """Several sources read as one (train.csv rows plus supplemental)."""

  num_quantizers = None  # landmarks, not codes (`pipeline.Source`).

  def __init__(self, sources: Sequence[SequenceSource]):
    self.sources = list(sources)
    self._ends = np.cumsum([len(s) for s in self.sources])
    join = lambda name: np.concatenate(
        [getattr(s, name) for s in self.sources] or [np.zeros(0, np.int64)]
    )
    self.sequence_ids = join("sequence_ids")
    self.participant_ids = join("participant_ids")
    self.lengths = join("lengths")
    self.hand_frames = join("hand_frames")
    self.phrases = [p for s in self.sources for p in s.phrases]
    self.origin = {
        "data": "+".join(s.origin["data"] for s in self.sources),
        "sequences": pipeline.digest(self.sequence_ids),
    }

  def __len__(self) -> int:
    return int(self._ends[-1]) if self.sources else 0

  def __getitem__(self, i: int) -> dict[str, object]:
    i = pipeline.source_index(i, len(self))
    k = int(np.searchsorted(self._ends, i, side="right"))
    return self.sources[k][i - (self._ends[k - 1] if k else 0)]

  def __repr__(self) -> str:
    return f"ConcatSource({', '.join(map(repr, self.sources))})"
