"""The competition's character vocabulary and the special symbols.

Ids 0..58 are the 59 characters of `character_to_prediction_index.json`; the
special symbols follow: pad 59 (also the CTC blank), start 60, end 61, mask 62.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import numpy as np
from etils import epath

from asl_vq import errors

CHARACTERS = " !#$%&'()*+,-./0123456789:;=?@[_abcdefghijklmnopqrstuvwxyz~"
assert len(CHARACTERS) == 59, len(CHARACTERS)

CHAR_TO_ID = {c: i for i, c in enumerate(CHARACTERS)}
PAD_ID = 59
BLANK_ID = PAD_ID
START_ID = 60
END_ID = 61
MASK_ID = 62
VOCAB_SIZE = 63
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class UnknownCharacterError(errors.UserError):
  """A phrase holds a character outside the competition's vocabulary."""


def encode(phrase: str, sequence_id: object = None) -> np.ndarray:
  """Phrase -> int32 ids (characters only, no start/end)."""
  try:
    return np.fromiter(
        (CHAR_TO_ID[c] for c in phrase), dtype=np.int32, count=len(phrase)
    )
  except KeyError as e:
    where = f"sequence {sequence_id}: " if sequence_id is not None else ""
    raise UnknownCharacterError(
        f"{where}phrase {phrase!r} holds character {e.args[0]!r}, which is "
        "not in the competition vocabulary"
    ) from None


def decode(ids: Iterable[int]) -> str:
  """Ids -> phrase; stops at the end symbol, skips pad/start/mask."""
  out = []
  for i in ids:
    i = int(i)
    if i == END_ID:
      break
    if 0 <= i < len(CHARACTERS):
      out.append(CHARACTERS[i])
  return "".join(out)


def unknown_characters(phrase: str) -> Sequence[str]:
  return sorted({c for c in phrase if c not in CHAR_TO_ID})


def as_json_dict() -> dict[str, int]:
  return dict(CHAR_TO_ID)


def check_json(path: str | os.PathLike) -> None:
  """Checks a dataset's `character_to_prediction_index.json` against ours."""
  try:
    theirs = json.loads(epath.Path(path).read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise errors.UserError(
        f"{path}: cannot read the character map: {e}"
    ) from None
  if theirs != CHAR_TO_ID:
    diff = sorted(set(theirs.items()) ^ set(CHAR_TO_ID.items()))[:5]
    raise errors.UserError(
        f"{path}: the character map differs from the competition's "
        f"(first differences: {diff})"
    )
