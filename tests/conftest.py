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
# compilation cache, under the session's $ASL_VQ_CACHE, and keep every
# program in it, not only those over a second: most of the suite's are
# small, and many tests and subprocesses compile the same ones. (The
# in-process all-reduce abort once seen with the cache on was not the
# cache: most likely XLA:CPU's pool threads running out, all blocked in
# collectives, as in a hang seen since; asl_vq/runtime.py.) A developer
# may keep the cache from session to session by setting
# JAX_COMPILATION_CACHE_DIR (JAX keys a program by its content, compile
# options and jax version): the fast tier then runs about 3x faster
# (tests/test_translate.py, test_losses.py, test_probe.py: 52.5 s
# cold, 17.0 s warm, both beside another test process on 2 cores). Not by default: JAX writes an entry in place, so a
# process killed mid-write (tests/test_main_run.py kills runs) would leave
# a truncated entry that every later session warns about.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.environ["ASL_VQ_CACHE"], "jax")
)
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
