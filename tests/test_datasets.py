"""The embedded dataset: generated once per knob set, split by signer."""

import os

import numpy as np

from asl_vq.data import datasets


def test_embedded_dataset_is_generated_once_and_reused(tmp_path, monkeypatch):
  monkeypatch.setenv("ASL_VQ_CACHE", str(tmp_path))
  knobs = dict(num_sequences=12, seed=3, num_signers=4, frames_per_char=2.0)
  first = datasets.embedded_dataset(knobs)
  csv = os.path.join(first, "train.csv")
  mtime = os.stat(csv).st_mtime_ns
  assert datasets.embedded_dataset(dict(knobs)) == first
  assert os.stat(csv).st_mtime_ns == mtime
  other = datasets.embedded_dataset(dict(knobs, seed=4))
  assert other != first
  # Nothing half-written is left beside the datasets.
  assert not [
      p for p in os.listdir(os.path.dirname(first)) if p.startswith(".tmp-")
  ]


def test_load_splits_the_embedded_dataset_by_signer(tmp_path, monkeypatch):
  monkeypatch.setenv("ASL_VQ_CACHE", str(tmp_path))
  import ml_collections  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict(
      dict(
          data=dict(
              dir="",
              cache_dir="",
              include_supplemental=False,
              skip_unknown_chars=False,
              split_seed=0,
              min_hand_frames=2,
              fractions=dict(train=0.6, validation=0.2, test=0.2),
              synthetic=dict(
                  num_sequences=40, seed=0, num_signers=10, frames_per_char=2.0
              ),
          )
      )
  )
  splits = datasets.load(config)
  assert set(splits) == {"train", "validation", "test"}
  signers = {k: set(np.asarray(v.participant_ids)) for k, v in splits.items()}
  assert not signers["train"] & signers["validation"]
  assert not signers["train"] & signers["test"]
  assert not signers["validation"] & signers["test"]
  assert sum(len(v) for v in splits.values()) == 40
