"""Tokenize the train / validation / test splits into `<workdir>/<split>.parquet`.

The file layout is `asl_vq.data.tokens`'s. The work is resumable: a finished
split made from the same inputs is skipped (one made from another tokenizer,
by the content of its weights, or other data is made again); within a split, every `part_batches`
batches of sequences become one part file under `<split>.parquet.parts/`, so
a killed run redoes at most one part; the parts are then assembled into the
split file (written under a temporary name and renamed). Only process 0 tokenizes, on its own devices;
the other processes wait.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from typing import Any

from etils import epath
import jax
import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tqdm
from absl import logging
from jax.experimental import multihost_utils

from asl_vq import errors
from asl_vq import fileio
from asl_vq import inference
from asl_vq.data import datasets
from asl_vq.data import pipeline
from asl_vq.data import splits as splits_lib
from asl_vq.data import tokens


def _write_part(path: str, table: pa.Table) -> None:
  fileio.atomic_write(path, lambda f: pq.write_table(table, f))


def _read_part(path: str) -> pa.Table:
  with fileio.reading(path) as f:
    return pq.read_table(f)


# The metadata fields that decide a split's codes, compared by content: the
# tokenizer's fingerprint (its weights, not its path or step), the code
# spec and length, the raw split's origin. `checkpoint` and `step` are
# provenance only: a copy of the run elsewhere makes the same tokens.
CONTENT_FIELDS = (
    "tokenizer",
    "num_quantizers",
    "codebook_size",
    "max_len",
    "data",
)


def stale_fields(path: str, metadata: dict[str, Any]) -> dict[str, tuple]:
  """{field: (stored, current)} of the `CONTENT_FIELDS` in which the split
  file `path` was made from other inputs than `metadata`; {} when none."""
  with fileio.reading(path) as f:
    stored = json.loads(pq.read_schema(f).metadata[tokens.METADATA_KEY])
  return {
      k: (stored.get(k), metadata.get(k))
      for k in CONTENT_FIELDS
      if stored.get(k) != metadata.get(k)
  }


def tokenize_split(
    tok: inference.Tokenizer,
    source: pipeline.Source,
    path: str,
    *,
    batch_size: int,
    part_batches: int,
    metadata: dict[str, Any],
    desc: str = "",
) -> None:
  """Writes `path` (see the module docstring). An existing file made from
  the same inputs (`metadata`) is kept; one made from others (e.g. an
  earlier step of the tokenizer) is made again, and the change is said."""
  if epath.Path(path).exists():
    stale = stale_fields(path, metadata)
    if not stale:
      logging.info("%s exists: skipped", path)
      return
    print(
        f"{path}: made from other inputs ("
        + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in stale.items())
        + "): tokenizing again",
        flush=True,
    )
  n, part_size = len(source), batch_size * part_batches
  ids = np.asarray(source.sequence_ids, np.int64)
  parts_dir = f"{path}.parts"
  fileio.start_parts(
      parts_dir,
      dict(
          metadata,
          part_size=part_size,
          sequence_ids=hashlib.sha256(ids.tobytes()).hexdigest(),
      ),
  )
  part_paths = [
      os.path.join(parts_dir, f"{p:06d}.parquet")
      for p in range(math.ceil(n / part_size))
  ]
  q = tok.code_spec.num_quantizers
  with tqdm.tqdm(
      total=n, desc=f"tokenize {desc}", unit="seq", file=sys.stderr
  ) as bar:
    for p, part in enumerate(part_paths):
      stop = min((p + 1) * part_size, n)
      if epath.Path(part).exists():
        bar.update(stop - p * part_size)
        continue
      # One call per part: the Tokenizer groups the part's sequences by
      # bucket, so its batches are full (per-batch calls left them ~1/4 full).
      items = [source[i] for i in range(p * part_size, stop)]
      codes = tok.encode([ex["hands"] for ex in items])
      frames = [
          pipeline.kept_frames(
              ex["hands"], tok.max_len, tok.config.data.resample
          )
          for ex in items
      ]
      _write_part(
          part,
          tokens.to_table(
              [
                  dict(ex, codes=c, frames=f)
                  for ex, c, f in zip(items, codes, frames)
              ],
              q,
              metadata,
          ),
      )
      bar.update(len(items))
  table = pa.concat_tables(
      [_read_part(p) for p in part_paths] or [tokens.to_table([], q, metadata)]
  )
  if not np.array_equal(table["sequence_id"].to_numpy(), ids):
    raise RuntimeError(
        f"{parts_dir}: the parts do not hold the split's "
        "sequences in order; delete the folder and rerun"
    )
  fileio.atomic_write(path, lambda f: pq.write_table(table, f))
  epath.Path(parts_dir).rmtree()


def verify_split(
    tok: inference.Tokenizer,
    source: pipeline.Source,
    path: str,
    *,
    chunk_size: int,
    atol: float = 1e-5,
) -> float:
  """Max |decode(stored codes) - decode(encode(raw))|; raises above `atol`.

  `chunk_size`: sequences per Tokenizer call (large, so batches are full)."""
  stored = tokens.TokenSource(path)
  if not np.array_equal(stored.sequence_ids, source.sequence_ids):
    raise RuntimeError(f"{path}: its sequences are not the split's")
  diff = 0.0
  for start in range(0, len(source), chunk_size):
    idx = range(start, min(start + chunk_size, len(source)))
    fresh = tok.encode([source[i]["hands"] for i in idx])
    for a, b in zip(
        tok.decode([stored[i]["codes"] for i in idx]), tok.decode(fresh)
    ):
      diff = max(diff, float(np.abs(a - b).max(initial=0.0)))
  if diff > atol:
    raise RuntimeError(
        f"{path}: decoding the stored codes differs from "
        f"encoding and decoding the raw data by {diff:g}"
    )
  return diff


def data_config(
    tokenizer_config: ml_collections.ConfigDict,
    config: ml_collections.ConfigDict,
) -> ml_collections.ConfigDict:
  """The tokenizer run's config with the non-empty `config.data` overrides."""
  out = ml_collections.ConfigDict(tokenizer_config.to_dict())
  for key, value in config.data.items():
    if value:
      out.data[key] = value
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict]:
  """Tokenizes every split; returns per split its sequences, code frames and
  (with `config.verify`) the verification's max abs difference."""
  if not config.checkpoint:
    raise errors.UserError(
        "config.checkpoint is required: the tokenizer's training "
        "workdir (--config.checkpoint=RUN)"
    )
  # Every process restores (Orbax restores collectively); one does the work.
  tok = inference.Tokenizer.load(
      config.checkpoint, batch_size=config.batch_size
  )
  splits = datasets.load(data_config(tok.config, config))
  metadata = dict(
      checkpoint=fileio.abspath(config.checkpoint),
      step=tok.step,
      tokenizer=tok.fingerprint,
      num_quantizers=tok.code_spec.num_quantizers,
      codebook_size=tok.code_spec.codebook_size,
      max_len=tok.max_len,
  )
  report = {}
  if jax.process_index() == 0:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    for name in splits_lib.SPLITS:
      path = os.path.join(workdir, f"{name}.parquet")
      tokenize_split(
          tok,
          splits[name],
          path,
          batch_size=tok.batch_size,
          part_batches=config.part_batches,
          metadata=dict(metadata, data=splits[name].origin),
          desc=name,
      )
      stored = tokens.TokenSource(path)
      report[name] = dict(
          sequences=len(stored), frames=int(stored.lengths.sum())
      )
      if config.verify:
        report[name]["max_abs_diff"] = verify_split(
            tok,
            splits[name],
            path,
            chunk_size=tok.batch_size * config.part_batches,
        )
      print(f"{name}: {json.dumps(report[name])} -> {path}", flush=True)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("asl_vq: tokenized")
  return report
