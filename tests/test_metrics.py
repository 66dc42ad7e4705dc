"""The normalised total Levenshtein metric against hand-computed cases."""

import pytest

from asl_vq import metrics


@pytest.mark.parametrize(
    "ref,pred,distance",
    [
        ("abc", "abc", 0),
        ("abc", "abxc", 1),  # insertion
        ("abcd", "abd", 1),  # deletion
        ("abc", "axc", 1),  # substitution
        ("abc", "", 3),  # empty prediction
        ("ab", "ba", 2),  # a transposition costs 2 (plain, not Damerau)
    ],
)
def test_single_phrase(ref, pred, distance):
  assert metrics.normalized_levenshtein([ref], [pred]) == pytest.approx(
      (len(ref) - distance) / len(ref)
  )


def test_total_normalised_not_mean_of_phrases():
  refs, preds = ["a", "bcdefghij"], ["", "bcdefghij"]
  # Total: (10 - 1) / 10 = 0.9; a mean of per-phrase scores would be 0.5.
  assert metrics.normalized_levenshtein(refs, preds) == pytest.approx(0.9)


def test_can_be_negative_and_checks_lengths():
  assert metrics.normalized_levenshtein(["a"], ["xyz"]) == pytest.approx(-2.0)
  with pytest.raises(ValueError, match="1 references but 2 predictions"):
    metrics.normalized_levenshtein(["a"], ["a", "b"])
