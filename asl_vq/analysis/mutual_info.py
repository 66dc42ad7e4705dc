"""Which tokens go with which letters: adjusted mutual information (Table 3).

Every variable is binary per sequence: "token t occurs in the sequence" and
"letter c occurs in the phrase". The AMI of all token x letter pairs comes
from their 2x2 contingency tables at once: the joint counts by one matrix
product, and the expected MI under the hypergeometric model (what
`sklearn.metrics.adjusted_mutual_info_score` subtracts) from the marginal
counts alone, so it is computed once per distinct pair of marginals rather than
per pair of variables. The result is sklearn's AMI (arithmetic normaliser).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import special

from asl_vq import errors
from asl_vq import vocab

_EPS = np.finfo(np.float64).eps
_CHUNK = 1 << 22  # Elements per block of the expected-MI grid.


def occurrence(
    ids: Sequence[np.ndarray], min_count: int = 1
) -> tuple[np.ndarray, np.ndarray]:
  """Per-sequence ids -> (bool [N, V]: id v occurs in sequence n, ids [V]).

  Only ids occurring in at least `min_count` sequences and missing from at
  least `min_count` are kept: a rarer (or near-constant) variable's AMI is
  mostly chance.
  """
  n = len(ids)
  flat = np.concatenate(
      [np.ravel(x).astype(np.int64) for x in ids] or [np.zeros(0, np.int64)]
  )
  rows = np.repeat(np.arange(n), [np.size(x) for x in ids])
  values, cols = np.unique(flat, return_inverse=True)
  width = max(len(values), 1)
  seq, col = np.divmod(np.unique(rows * width + cols.ravel()), width)
  counts = np.bincount(col, minlength=len(values))
  keep = (counts >= min_count) & (n - counts >= min_count)
  kept = keep[col]
  out = np.zeros((n, int(keep.sum())), bool)
  out[seq[kept], (np.cumsum(keep) - 1)[col[kept]]] = True
  return out, values[keep]


def collapse(tokens: np.ndarray) -> np.ndarray:
  """A token sequence with each run of repeats reduced to one token."""
  tokens = np.asarray(tokens)
  if not tokens.size:
    return tokens
  return tokens[np.r_[True, tokens[1:] != tokens[:-1]]]


def bigrams(tokens: np.ndarray, codebook_size: int) -> np.ndarray:
  """Ids u * codebook_size + v of the consecutive pairs (u, v) of the
  collapsed sequence: "v follows u" with u != v, however long each is held
  (a held token would otherwise make (u, u) pairs, copies of the unigram)."""
  c = collapse(tokens).astype(np.int64)
  return c[:-1] * codebook_size + c[1:]


def letter_occurrence(
    phrases: Sequence[str], letters: str = vocab.LETTERS
) -> np.ndarray:
  """bool [N, len(letters)]: the letter occurs in the (lowercased) phrase."""
  return np.array(
      [[c in set(p.lower()) for c in letters] for p in phrases], bool
  ).reshape(len(phrases), len(letters))


def _entropy(count: np.ndarray, n: int) -> np.ndarray:
  p = np.stack([count, n - count]) / n
  return -special.xlogy(p, p).sum(0)


def _expected_cell_mi(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
  """[R], [C] marginals -> [R, C]: E[(k / n) log(n k / (r c))] for the cell
  count k ~ Hypergeometric(n, r, c), as in sklearn's expected MI."""
  k = np.arange(1, n + 1, dtype=np.float64)
  c = cols.astype(np.float64)[None, :, None]
  out = np.zeros((len(rows), len(cols)))
  step = max(1, _CHUNK // max(len(cols) * n, 1))
  for start in range(0, len(rows), step):
    r = rows[start : start + step].astype(np.float64)[:, None, None]
    valid = (k >= r + c - n) & (k <= np.minimum(r, c))
    log_pmf = (
        special.gammaln(r + 1)
        + special.gammaln(c + 1)
        + special.gammaln(n - r + 1)
        + special.gammaln(n - c + 1)
        - special.gammaln(n + 1)
        - special.gammaln(k + 1)
        - special.gammaln(np.maximum(r - k, 0) + 1)
        - special.gammaln(np.maximum(c - k, 0) + 1)
        - special.gammaln(np.maximum(n - r - c + k, 0) + 1)
    )
    log_ratio = (
        np.log(n * k) - np.log(np.maximum(r, 1)) - np.log(np.maximum(c, 1))
    )
    term = k / n * log_ratio * np.exp(np.where(valid, log_pmf, -np.inf))
    out[start : start + step] = term.sum(-1)
  return out


def binary_ami(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """AMI of every column of bool x [N, A] with every column of y [N, B].

  Equals `adjusted_mutual_info_score(x[:, i], y[:, j])` for each pair,
  including its conventions: 1 when both are constant, 0 when one is.
  """
  x, y = np.asarray(x, bool), np.asarray(y, bool)
  if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or not len(x):
    raise errors.UserError(
        f"x and y must be [N, A] and [N, B] with the same N > 0, "
        f"got {x.shape} and {y.shape}"
    )
  n = len(x)
  a = x.sum(0)[:, None]
  b = y.sum(0)[None, :]
  both = x.T.astype(np.float32) @ y.astype(np.float32)  # exact to 2^24.
  both = both.astype(np.int64)
  cells = np.stack([both, a - both, b - both, n - a - b + both]).astype(float)
  rows = np.stack(np.broadcast_arrays(a, a, n - a, n - a)).astype(float)
  cols = np.stack(np.broadcast_arrays(b, n - b, b, n - b)).astype(float)
  with np.errstate(divide="ignore", invalid="ignore"):
    mi = np.where(cells > 0, cells / n * np.log(n * cells / (rows * cols)), 0.0)
  mi = np.maximum(mi.sum(0), 0.0)
  # The expected MI: a table over the distinct marginal counts, then looked up.
  row_values, row_index = np.unique(
      np.concatenate([a, n - a]), return_inverse=True
  )
  col_values, col_index = np.unique(
      np.concatenate([b, n - b], 1), return_inverse=True
  )
  grid = _expected_cell_mi(row_values, col_values, n)
  row_index = row_index.reshape(2, -1, 1)
  col_index = col_index.reshape(1, 2, -1).transpose(1, 0, 2)
  emi = sum(
      grid[row_index[i], col_index[j]] for i in range(2) for j in range(2)
  )
  normaliser = (_entropy(a, n) + _entropy(b, n)) / 2
  den = normaliser - emi
  den = np.where(den < 0, np.minimum(den, -_EPS), np.maximum(den, _EPS))
  num = mi - emi
  num = np.where(num < 0, np.minimum(num, -_EPS), np.maximum(num, _EPS))
  const_x = (a == 0) | (a == n)
  const_y = (b == 0) | (b == n)
  return np.where(
      const_x & const_y, 1.0, np.where(const_x | const_y, 0.0, num / den)
  )


def best_per_letter(
    occurs: np.ndarray, ids: np.ndarray, letters: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Per letter, the id whose occurrence has the highest AMI with it.

  occurs: bool [N, V] (from `occurrence`), ids [V], letters bool [N, L].
  Returns (ids [L], AMI [L]); a letter occurring in no phrase or in every
  phrase has no informative token: id -1, AMI NaN. Ties go to the lower id.
  """
  if not occurs.shape[1]:
    raise errors.UserError(
        "no token passes the min_count filter; lower min_count "
        "or use a bigger split"
    )
  ami = binary_ami(occurs, letters)
  best = np.argmax(ami, 0)
  counts = letters.sum(0)
  usable = (counts > 0) & (counts < len(letters))
  return (
      np.where(usable, np.asarray(ids)[best], -1),
      np.where(usable, ami[best, np.arange(ami.shape[1])], np.nan),
  )


def table3(
    first_codes: Sequence[np.ndarray],
    phrases: Sequence[str],
    codebook_size: int,
    min_count: int,
) -> dict[str, tuple]:
  """Best single token and best bigram per letter a-z, from the first
  quantizer's codes of each sequence: {"single"|"bigram": (ids, AMI)}.
  Bigram ids are u * codebook_size + v (`bigrams`)."""
  letters = letter_occurrence(phrases)
  return {
      "single": best_per_letter(*occurrence(first_codes, min_count), letters),
      "bigram": best_per_letter(
          *occurrence(
              [bigrams(c, codebook_size) for c in first_codes], min_count
          ),
          letters,
      ),
  }
