"""From a config to the train / validation / test sources and their
batch streams.

With no `data.dir`, the embedded synthetic dataset is generated once into a
cache directory (`$ASL_VQ_CACHE`, default `~/.cache/asl_vq`) and used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import jax
import ml_collections
from absl import logging
from jax.experimental import multihost_utils

from asl_vq.data import cache
from asl_vq.data import pipeline
from asl_vq.data import splits


def cache_root() -> str:
  return os.environ.get(
      "ASL_VQ_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "asl_vq")
  )


def embedded_dataset(knobs: dict) -> str:
  """The synthetic dataset for these generator knobs, generated on first use."""
  key = hashlib.sha1(json.dumps(knobs, sort_keys=True).encode()).hexdigest()
  out = os.path.join(cache_root(), "synthetic", key[:12])
  if os.path.exists(os.path.join(out, "train.csv")):
    return out
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(out))
  logging.info("generating the embedded synthetic dataset into %s", out)
  print(
      f"generating the embedded synthetic dataset ({knobs}) into {out}",
      flush=True,
  )
  from asl_vq.data import synthetic  # pylint: disable=g-import-not-at-top

  synthetic.generate(tmp, **knobs)
  try:
    os.rename(tmp, out)  # atomic: a killed run leaves only a .tmp- folder.
  except OSError:  # another process finished first.
    shutil.rmtree(tmp, ignore_errors=True)
  return out


def _prepare(config: ml_collections.ConfigDict) -> str:
  data = config.data
  data_dir = data.dir or embedded_dataset(data.synthetic.to_dict())
  cache_dir = data.cache_dir or os.path.join(data_dir, ".asl_vq_cache")
  sources = (
      ("train", "supplemental") if data.include_supplemental else ("train",)
  )
  report = cache.prepare(
      data_dir,
      cache_dir,
      sources,
      skip_unknown_chars=data.skip_unknown_chars,
      progress=jax.process_index() == 0,
  )
  logging.info("prepared cache %s: %s", cache_dir, report)
  return cache_dir


def load(config: ml_collections.ConfigDict) -> dict[str, cache.SequenceSource]:
  """Prepares (once) and splits by signer; process 0 goes first.

  Raises:
    errors.UserError: `data.fractions` names no 'train' or 'validation'
      split (before anything is prepared).
  """
  splits.check_run_fractions(config.data.fractions, "data.fractions")
  if jax.process_index() == 0:
    cache_dir = _prepare(config)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("asl_vq: process 0 prepared the data")
    if jax.process_index() != 0:
      cache_dir = _prepare(config)  # instant on a shared file system.
    multihost_utils.sync_global_devices("asl_vq: all processes have the data")
  return splits.load_splits(
      cache_dir,
      fractions=dict(config.data.fractions),
      seed=config.data.split_seed,
      include_supplemental=config.data.include_supplemental,
      min_hand_frames=config.data.min_hand_frames,
  )


def _stream_args(config: ml_collections.ConfigDict) -> dict:
  """`pipeline.make_dataset`'s arguments every stream of a run shares."""
  return dict(
      max_len=config.data.max_len,
      resample_method=config.data.resample,
      normalization=config.data.normalization,
      max_label_len=config.data.max_label_len,
      buckets=tuple(config.data.buckets) or None,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )


def train_stream(
    config: ml_collections.ConfigDict, source: pipeline.Source, seed: int
):
  """Shuffled, augmented global batches of `train.batch_size` from `source`
  (`pipeline.make_dataset` with `train=True`), for this process."""
  return pipeline.make_dataset(
      source,
      global_batch_size=config.train.batch_size,
      seed=seed,
      train=True,
      flip_prob=config.data.flip_prob,
      length_grouping=config.data.length_grouping,
      **_stream_args(config),
  )


def eval_stream(config: ml_collections.ConfigDict, source: pipeline.Source):
  """Every sequence of `source` once, in order, in global batches of
  `train.eval_batch_size` (`pipeline.make_dataset` with `train=False`)."""
  return pipeline.make_dataset(
      source,
      global_batch_size=config.train.eval_batch_size,
      seed=config.seed,
      train=False,
      **_stream_args(config),
  )
