"""Paths local or remote, files never seen half-written, resumable parts.

The paths of runs and of what they read and write (workdirs, data, caches,
tokens, reports) may be local (`runs/x`) or object store URLs that
`etils.epath` opens (`gs://bucket/runs/x`; gcsfs, from the `gcs` extra).
`os.path.join` builds both; the helpers here do what `os` cannot do for a
URL.

Every derived output (the data cache, token splits, checkpoint side files)
is written so that a reader never sees a partial file, even when the writer
is killed: locally under a temporary name, fsynced, then renamed into place;
on an object store an object only appears, whole, when its upload ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import IO, Callable, Iterator

from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` is an object store URL (`gs://...`), not a local path."""
  return "://" in os.fspath(path)


def abspath(path: str | os.PathLike) -> str:
  """`os.path.abspath` of a local path; an object store URL as it is."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[bytes]], None]
) -> None:
  """Calls `write(f)` on a binary file that appears at `path` only whole,
  and not at all if `write` fails."""
  if is_remote(path):
    # Not through an object store file: closing one, even on an error,
    # uploads what was written.
    with writing(path) as local, open(local, "wb") as f:
      write(f)
    return
  tmp = f"{os.fspath(path)}.tmp"
  with open(tmp, "wb") as f:
    write(f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[str | IO[bytes]]:
  """What to hand a reader that takes a name or a binary file (pyarrow,
  numpy): a local `path` itself, else the object open for reading."""
  if not is_remote(path):
    yield os.fspath(path)
    return
  with epath.Path(path).open("rb") as f:
    yield f


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[str]:
  """A local file name through which to write `path`, for writers that take
  only names (matplotlib's figures and animations): `path` itself if local,
  else a temporary file, uploaded to `path` when the block ends without an
  error."""
  if not is_remote(path):
    yield os.fspath(path)
    return
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, os.path.basename(path))
    yield local
    epath.Path(local).copy(path, overwrite=True)


def append_text(path: str | os.PathLike, text: str) -> None:
  """Appends `text` to a file (made if missing). An object store has no
  append: there the object is read and written again whole."""
  path = epath.Path(path)
  if is_remote(path):
    path.write_text((path.read_text() if path.exists() else "") + text)
  else:
    with path.open("a") as f:
      f.write(text)


def sha256(path: str | os.PathLike) -> str:
  """The hex sha256 of a file's bytes (local or `gs://`): what derived
  outputs record of their inputs, so that they are keyed on content."""
  h = hashlib.sha256()
  with epath.Path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()


def write_json(path: str | os.PathLike, obj: object) -> None:
  atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def read_json(path: str | os.PathLike) -> dict | None:
  try:
    return json.loads(epath.Path(path).read_text())
  except (OSError, ValueError):
    return None


def start_parts(parts_dir: str | os.PathLike, stamp: dict) -> None:
  """Keeps the parts of an interrupted run of the same work (same `stamp`,
  any JSON object), else clears them; resumable writers share this."""
  path = os.path.join(parts_dir, "fingerprint.json")
  if read_json(path) != stamp:
    epath.Path(parts_dir).rmtree(missing_ok=True)
    epath.Path(parts_dir).mkdir(parents=True)
    write_json(path, stamp)
