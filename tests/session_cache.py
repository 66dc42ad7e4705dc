"""The tests' JAX compilation cache: a store kept from session to session,
and a copy of it for each session, whose new programs join the store only
after a session that passed.

JAX (0.10) writes a cache entry in place and never rewrites one that exists,
so a process killed mid-write (a test that kills runs, a timeout, Ctrl-C)
leaves a truncated entry that every later reader warns about and compiles
again. A session therefore writes into a folder of its own, made of hard
links to the store's entries (both under ROOT: one file system); after a
session that passed, its new entries are linked into the store, and the
store is trimmed to STORE_BYTES, the programs read least recently going
first. (JAX's own size limit is not used: it lists and locks the whole
folder at every write, which made the suite half again as slow.)
"""

import atexit
import os
import shutil
import tempfile
import time

ROOT = os.path.join(os.path.expanduser("~"), ".cache", "asl_vq", "tests")
STORE = os.path.join(ROOT, "jax")
STORE_BYTES = 512 << 20  # a few versions of the suite's programs.
STALE_SECONDS = 24 * 3600  # the folder of a session that was killed.


def link_new(src: str, dst: str) -> int:
  """Hard-links each cache entry (`*-cache`) of `src` that `dst` lacks into
  `dst` (a copy across file systems); returns how many."""
  os.makedirs(dst, exist_ok=True)
  count = 0
  for name in os.listdir(src):
    target = os.path.join(dst, name)
    if not name.endswith("-cache") or os.path.exists(target):
      continue
    try:
      os.link(os.path.join(src, name), target)
    except FileExistsError:  # another session's, just now.
      continue
    except OSError:
      shutil.copy2(os.path.join(src, name), target)
    count += 1
  return count


def data_folder() -> str:
  """A new folder for a session's data (`$ASL_VQ_CACHE`: synthetic datasets,
  the tiny runs), removed when this process exits; a killed session's goes
  with the stale session folders (at the next `open_session`: a session
  with its own JAX_COMPILATION_CACHE_DIR opens none)."""
  os.makedirs(ROOT, exist_ok=True)
  path = tempfile.mkdtemp(prefix="session-data-", dir=ROOT)
  atexit.register(shutil.rmtree, path, True)
  return path


def linked_copy(src: str) -> str:
  """A new session folder under ROOT holding hard links to `src`'s entries
  (removed as stale a day after, should its session be killed)."""
  os.makedirs(ROOT, exist_ok=True)
  path = tempfile.mkdtemp(prefix="session-", dir=ROOT)
  link_new(src, path)
  return path


def open_session() -> str:
  """A new session's folder, holding the store's entries (the folders of
  sessions killed a day ago or more are removed first)."""
  os.makedirs(STORE, exist_ok=True)
  for name in os.listdir(ROOT):
    path = os.path.join(ROOT, name)
    try:
      stale = time.time() - os.path.getmtime(path) > STALE_SECONDS
    except FileNotFoundError:  # another session's, just removed.
      continue
    if name.startswith("session-") and stale:
      shutil.rmtree(path, ignore_errors=True)
  return linked_copy(STORE)


def close_session(path: str, passed: bool) -> None:
  """Removes a session's folder; after a session that `passed`, its new
  entries join the store first, which is then trimmed."""
  if passed:
    link_new(path, STORE)
    trim(STORE)
  shutil.rmtree(path, ignore_errors=True)


def trim(directory: str, keep: int = STORE_BYTES) -> None:
  """Deletes cache entries of `directory`, those read (or written) least
  recently first, until the rest fit in `keep` bytes."""
  entries = []
  for name in os.listdir(directory):
    if name.endswith("-cache"):
      try:
        s = os.stat(os.path.join(directory, name))
      except FileNotFoundError:
        continue
      entries.append((max(s.st_atime, s.st_mtime), s.st_size, name))
  total = sum(size for _, size, _ in entries)
  for _, size, name in sorted(entries):
    if total <= keep:
      break
    try:
      os.remove(os.path.join(directory, name))
    except FileNotFoundError:
      pass
    total -= size
