"""The embedded dataset: generated once per knob set, split by signer."""

import os

import ml_collections
import numpy as np
import pytest

from asl_vq import errors
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


def test_fractions_without_a_validation_split_are_refused_first(
    tmp_path, monkeypatch
):
  monkeypatch.setenv("ASL_VQ_CACHE", str(tmp_path))
  config = ml_collections.ConfigDict(
      dict(data=dict(fractions=dict(train=0.8, test=0.2)))
  )
  with pytest.raises(errors.UserError, match=r"no \['validation'\] split"):
    datasets.load(config)
  assert not os.listdir(tmp_path)  # nothing prepared.
