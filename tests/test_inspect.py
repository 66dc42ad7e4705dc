"""Tests of `python -m asl_vq.data.inspect`."""

import json
import os
import subprocess
import sys

import pytest

from asl_vq.data import inspect
import kaggle_fixture


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return kaggle_fixture.write_dataset(tmp_path_factory.mktemp("kaggle"))


def _run(*args):
  return subprocess.run(
      [sys.executable, "-m", "asl_vq.data.inspect", *args],
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
  )


def test_json_on_the_fixture(dataset):
  result = _run(f"--data_dir={dataset.root}", "--json")
  assert result.returncode == 0, result.stderr
  stats = json.loads(result.stdout)  # Exactly one JSON object.
  assert list(stats) == ["train", "supplemental"]
  train = stats["train"]
  assert train["sequences"] == 9
  assert train["usable_sequences"] == 7  # Not 103 (no hand), not 204 (absent).
  assert train["would_keep"] == 6
  assert train["unlisted_sequences"] == 1
  assert train["files"] == 3
  assert train["frames"] == 6 + 5 + 4 + 7 + 1 + 5 + 4 + 3
  assert train["hand_frames"] == 5 + 5 + 0 + 7 + 1 + 4 + 4 + 2
  assert train["frame_length"]["max"] == 7
  assert train["frame_length"]["p50"] == 4.5
  assert train["phrase_length"] == {"mean": 14.56, "min": 1, "max": 23}
  assert train["signers"] == 4
  assert train["left_hand_fraction"] == round(20 / 28, 4)
  assert train["right_hand_fraction"] == round(17 / 28, 4)
  assert train["both_hands_fraction"] == round(9 / 28, 4)
  assert train["unknown_characters"] == []
  assert {"'", ",", "w", "."} <= set(train["characters"])
  assert {
      r: v["first_ids"]
      for r, v in train["skipped_by_reason"].items()
      if v["count"]
  } == kaggle_fixture.SKIPPED["train"]
  supplemental = stats["supplemental"]
  assert (
      supplemental["sequences"],
      supplemental["frames"],
      supplemental["signers"],
      supplemental["skipped"],
  ) == (2, 7, 2, 0)


def test_unknown_characters_are_counted(tmp_path):
  kaggle_fixture.write_dataset(tmp_path, supplemental=False, unknown_char=True)
  stats = inspect.summarize(tmp_path, progress=False)
  assert list(stats) == ["train"]
  assert stats["train"]["unknown_characters"] == ['"']
  assert stats["train"]["skipped_by_reason"]["unknown_character"] == {
      "count": 1,
      "first_ids": [kaggle_fixture.UNKNOWN_CHAR_SEQUENCE],
  }


def test_table_by_default(dataset):
  result = _run(f"--data_dir={dataset.root}")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].split() == ["train", "supplemental"]
  assert lines[1].split() == ["sequences", "9", "2"]
  assert any(l.split()[:3] == ["skipped:", "no_hand", "1"] for l in lines)
  assert "inspect train" in result.stderr  # Progress goes to stderr.


def test_missing_directory_is_one_line_and_exit_1(tmp_path):
  result = _run(f"--data_dir={tmp_path / 'nowhere'}", "--json")
  assert result.returncode == 1
  assert result.stdout == ""
  assert result.stderr.strip().splitlines() == [
      f"error: {tmp_path / 'nowhere'}: data directory does not exist"
  ]


def test_corrupt_parquet_is_one_line_and_exit_1(tmp_path):
  kaggle_fixture.write_dataset(tmp_path, supplemental=False)
  path = os.path.join(tmp_path, "train_landmarks", "2000.parquet")
  with open(path, "wb") as f:
    f.write(os.urandom(300))
  result = _run(f"--data_dir={tmp_path}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  error = result.stderr.strip().splitlines()[-1]
  assert error.startswith(f"error: {path}: not a readable parquet file")
