"""Files that are never seen half-written, and resumable part directories.

Every derived output (the data cache, token splits, checkpoint side files)
is written under a temporary name and renamed into place, so a reader never
sees a partial file even when the writer is killed.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable


def atomic_write(path: str, write: Callable[[str], None]) -> None:
  """Writes via `write(tmp)`, then renames: readers never see half a file."""
  tmp = f"{path}.tmp"
  write(tmp)
  with open(tmp, "rb+") as f:
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, obj: object) -> None:
  def write(tmp):
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=1)
  atomic_write(path, write)


def read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def start_parts(parts_dir: str, stamp: dict) -> None:
  """Keeps the parts of an interrupted run of the same work (same `stamp`,
  any JSON object), else clears them; resumable writers share this."""
  path = os.path.join(parts_dir, "fingerprint.json")
  if read_json(path) != stamp:
    shutil.rmtree(parts_dir, ignore_errors=True)
    os.makedirs(parts_dir)
    write_json(path, stamp)
