"""The Kaggle ASL Fingerspelling on-disk layout: file names and columns."""

from __future__ import annotations

LANDMARK_TYPES = (("face", 468), ("left_hand", 21), ("pose", 33),
                  ("right_hand", 21))
NUM_HAND_POINTS = 21
NUM_POINTS = 2 * NUM_HAND_POINTS  # left 0..20 then right 0..20.

METADATA_COLUMNS = ("path", "file_id", "sequence_id", "participant_id",
                    "phrase")
SOURCES = {
    # source name -> (metadata csv, landmark directory)
    "train": ("train.csv", "train_landmarks"),
    "supplemental": ("supplemental_metadata.csv", "supplemental_landmarks"),
}
CHARACTER_MAP = "character_to_prediction_index.json"
INDEX_COLUMN = "sequence_id"
FRAME_COLUMN = "frame"


def landmark_columns() -> list[str]:
  """All 1629 landmark columns in the real file order (x..., y..., z...)."""
  return [f"{axis}_{kind}_{i}" for axis in "xyz"
          for kind, n in LANDMARK_TYPES for i in range(n)]


def hand_columns(axis: str) -> list[str]:
  """The 42 hand columns of one axis: left 0..20 then right 0..20."""
  return [f"{axis}_{side}_hand_{i}" for side in ("left", "right")
          for i in range(NUM_HAND_POINTS)]


HAND_X_COLUMNS = hand_columns("x")
HAND_Y_COLUMNS = hand_columns("y")
NUM_LANDMARK_COLUMNS = 1629
assert len(landmark_columns()) == NUM_LANDMARK_COLUMNS
