"""Test-wide setup: 8 simulated CPU devices, and a private data cache."""

import os

import session_cache
import xla_env
from asl_vq import runtime

# Before JAX is imported anywhere: the sharded code paths run on 8 devices
# (and kernels compile at -O0: see xla_env).
os.environ.setdefault("XLA_FLAGS", xla_env.flags(8))
# The session's data in a folder of its own, removed when the process that
# made it ends (the xdist workers and the subprocesses inherit it).
if "ASL_VQ_CACHE" not in os.environ:
  os.environ["ASL_VQ_CACHE"] = session_cache.data_folder()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Every test process and the entry points' subprocesses share one
# compilation cache and keep every program in it, not only those over a
# second: most of the suite's are small, and many tests and subprocesses
# compile the same ones. The session's cache holds the programs of earlier
# sessions that passed (tests/session_cache.py: JAX keys a program by its
# content, compile options and jax version, so a changed program is
# compiled again, never mistaken for another); the full suite then takes
# about two thirds of its time from cold (docs/results.md). A
# JAX_COMPILATION_CACHE_DIR already set is used as it is (a fresh folder
# for a cold run).
# The process that opens the session's cache (pytest's, before its workers
# start) closes it.
_SESSION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _SESSION_CACHE = session_cache.open_session()
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
# No GPU autotuning cache beside it: JAX (0.10.2) puts that cache's folder,
# under the compile cache's, into every program's cache key, so a session's
# own folder would miss every program of the store.
os.environ.setdefault("JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES", "none")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# Before any test module starts JAX: XLA:CPU's pools sized for the 8 devices'
# collectives, as every command does first (`cli.run`).
runtime.setup()


def pytest_configure(config):
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


def pytest_sessionfinish(exitstatus):
  """The session's compile cache: its new programs join the store if every
  test passed (in the process that opened it, once the workers are done)."""
  if _SESSION_CACHE is not None:
    session_cache.close_session(_SESSION_CACHE, passed=exitstatus == 0)
