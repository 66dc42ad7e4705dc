"""The competition metric: normalised total Levenshtein, (N - D) / N."""

from __future__ import annotations

from typing import Sequence

from rapidfuzz.distance import Levenshtein

from asl_vq import errors


def normalized_levenshtein(
    references: Sequence[str], predictions: Sequence[str]
) -> float:
  """(N - D) / N over a whole set, not a mean of per-phrase scores.

  N is the total number of reference characters and D the summed plain
  (not Damerau) Levenshtein distance (edits, in characters). The score is at
  most 1 (every prediction exact); 0 when D = N, e.g. every prediction
  empty; and below 0, without bound, when the predictions need more edits
  than the references hold characters (predictions longer than their
  references and wrong, as an untrained decoder's often are), as in the
  competition. So a negative score means worse than predicting nothing, not
  a diverged run.
  """
  if len(references) != len(predictions):
    raise errors.UserError(
        f"{len(references)} references but " f"{len(predictions)} predictions"
    )
  total = sum(len(r) for r in references)
  if total == 0:
    raise errors.UserError("the references hold no characters")
  distance = sum(
      Levenshtein.distance(r, p) for r, p in zip(references, predictions)
  )
  return (total - distance) / total
