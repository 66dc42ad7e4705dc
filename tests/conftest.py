"""Test-wide setup: 8 simulated CPU devices, and a private data cache."""

import os
import tempfile

import xla_env
from asl_vq import runtime

# Before JAX is imported anywhere: the sharded code paths run on 8 devices
# (and kernels compile at -O0: see xla_env).
os.environ.setdefault("XLA_FLAGS", xla_env.flags(8))
os.environ.setdefault("ASL_VQ_CACHE", tempfile.mkdtemp(prefix="asl_vq_test_"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Every test process and the entry points' subprocesses share one persistent
# compilation cache and keep every program in it, not only those over a
# second: most of the suite's are small, and many tests and subprocesses
# compile the same ones. It outlives the session (JAX keys a program by its
# content, compile options and jax version, so a changed program is
# compiled again, never mistaken for another): the second run of the fast
# tier on a machine takes about 60% of the first's (docs/results.md).
# A run that tests/test_main_run.py kills gets a copy of it (JAX writes an
# entry in place, so a process killed mid-write would leave a truncated
# entry that every later session warns about). JAX_COMPILATION_CACHE_DIR
# picks another directory, e.g. a fresh one for a cold run. Its size is
# kept by `trim_compile_cache` at each session's start, not by JAX's own
# LRU bookkeeping: that lists and locks the whole directory at every write
# and made the suite half again as slow (877 s against 573 s).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
        "asl_vq",
        "tests",
        "jax",
    ),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# Before any test module starts JAX: XLA:CPU's pools sized for the 8 devices'
# collectives, as every command does first (`cli.run`).
runtime.setup()


# The compile cache's size after `trim_compile_cache`.
COMPILE_CACHE_BYTES = 2 << 30


def trim_compile_cache(directory: str, keep: int = COMPILE_CACHE_BYTES):
  """Deletes the programs written longest ago from the compile cache
  `directory` until the rest fit in `keep` bytes."""
  if not os.path.isdir(directory):
    return
  with os.scandir(directory) as found:
    entries = sorted(
        (e.stat().st_mtime, e.stat().st_size, e.path)
        for e in found
        if e.is_file()
    )
  total = sum(size for _, size, _ in entries)
  for _, size, path in entries:
    if total <= keep:
      break
    os.remove(path)
    total -= size


def pytest_configure(config):
  if not hasattr(config, "workerinput"):  # once, before the workers start.
    trim_compile_cache(os.environ["JAX_COMPILATION_CACHE_DIR"])
  config.addinivalue_line(
      "markers",
      "slow: over ~5 s on a 2-core CPU (a training run, a subprocess run, "
      "a model of the paper's size compiled); the fast tier (-m 'not "
      "slow') leaves it out; its file is scheduled first",
  )
  # pytest-xdist's --dist loadfile hands out files with the most tests first
  # by default, which sent the longest (few-test) files last and left one
  # worker idle for their tail; the order below is the one to keep (this
  # overrides an explicit --loadscope-reorder).
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  """Files holding `slow` tests first (most slow tests first), the rest in
  collection order: with `-n 2 --dist loadfile` the long files start early
  (roughly: xdist gives a worker its next file while the last is still
  running) and the short ones fill in around them."""
  slow = {}
  for item in items:
    slow.setdefault(item.path, 0)
    slow[item.path] += item.get_closest_marker("slow") is not None
  rank = {path: i for i, path in enumerate(slow)}
  items.sort(key=lambda item: (-slow[item.path], rank[item.path]))
