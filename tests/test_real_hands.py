"""asl_vq.analysis.real_hands: the protocol, and a run on real letters
(skipped without ../shared/realhands)."""

import os

import numpy as np
import pytest

import asl_vq
import tiny_tokenizer
from asl_vq import metrics
from asl_vq.analysis import real_hands

LETTERS = os.path.join(
    os.path.dirname(__file__),
    "..",
    "..",
    "shared",
    "realhands",
    "spreadthesign_letters.npz",
)


def test_held_out_accuracy_maps_clusters_to_their_commonest_letter():
  clusters = np.array([0, 0, 1, 1, 2, 2, 3])
  labels = np.array([0, 0, 1, 2, 2, 2, 1])
  first = np.array([True, False, True, False, True, False, False])
  # 0 -> 0, 1 -> 1, 2 -> 2 from the first half; held out: (0, 0) right,
  # (1, 2) wrong, (2, 2) right, cluster 3 never fitted: wrong.
  assert real_hands.held_out_accuracy(clusters, labels, first) == 0.5


def test_random_halves_split_every_clip():
  groups = np.repeat([0, 1, 2], [5, 4, 1])
  halves = real_hands.random_halves(groups, seed=3)
  assert [halves[groups == g].sum() for g in range(3)] == [3, 2, 1]
  assert not np.array_equal(halves, real_hands.random_halves(groups, 4))


def test_unknown_language_is_refused(tmp_path):
  path = tmp_path / "letters.npz"
  np.savez(path, **{"ase/A": np.zeros((3, 42, 2), np.float32)})
  assert list(real_hands.load_letters(path, "ase")) == ["a"]
  with pytest.raises(ValueError, match="no clip of language 'bzs'"):
    real_hands.load_letters(path, "bzs")


@pytest.mark.skipif(
    not os.path.exists(LETTERS), reason="../shared/realhands is absent"
)
def test_measure_on_real_asl_letters():
  tok = asl_vq.Tokenizer.load(tiny_tokenizer.workdir())
  clips = real_hands.load_letters(LETTERS, "ase")
  result = real_hands.measure(tok, clips, num_words=6, seed=0)
  assert result["letters"] == 26
  assert result["frames"] == sum(
      int((~np.isnan(c).all(axis=(1, 2))).sum()) for c in clips.values()
  )
  # Held letter shapes: clustering the hands names letters well above the
  # commonest letter's share, even with the tiny tokenizer's few codes as k
  # (at most 32 for 26 letters; 0.21 against 0.05 measured).
  assert result["codes_used_q0"] <= 32
  assert result["accuracy_kmeans"] > 3 * result["chance"]
  words = [w["word"] for w in result["words"]]
  read = tok.transcribe([np.concatenate([clips[c] for c in w]) for w in words])
  assert [w["read"] for w in result["words"]] == read
  assert result["words_score"] == metrics.normalized_levenshtein(words, read)
  assert all(4 <= len(w) <= 8 and set(w) <= set(clips) for w in words)
  assert "spelled words (6)" in real_hands.report("ase", result)
