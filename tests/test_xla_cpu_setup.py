"""What `asl_vq.runtime.setup()` (every command's first step) sets up for
XLA:CPU before JAX starts its backend: thread pools with room for several
collectives in flight per simulated device (an 8-device train step once
waited for ever with the default max(cores, devices) = 8 threads; see
asl_vq/runtime.py); and that `import asl_vq` sets up nothing."""

import os
import subprocess
import sys

import pytest

import xla_env

# The threads of XLA:CPU's intra-op pool (TSL names them tf_XLAEigen), the
# one collective thunks block on. A new thread names itself once it runs, so
# the count is read until it reaches the expected one (or 60 s pass).
COUNT_POOL = """
import jax, os, sys, time
from asl_vq import runtime
runtime.setup()
expected, mode = int(sys.argv[1]), sys.argv[2:]
if mode == ["gloo"]:
  runtime.default_cpu_threads_for_gloo()
jax.devices()

def count():
  names = []
  for t in os.listdir("/proc/self/task"):
    try:
      names.append(open(f"/proc/self/task/{t}/comm").read().strip())
    except OSError:   # a short-lived thread, gone (or going) since.
      pass
  return sum(n == "tf_XLAEigen" for n in names)

end = time.monotonic() + 60
while count() != expected and time.monotonic() < end:
  time.sleep(0.05)
print(count())
"""


def _assert_pool_threads(expected, devices, *mode, **env):
  environ = {
      k: v
      for k, v in xla_env.env(os.environ, devices=devices).items()
      if k != "NPROC"
  }
  run = subprocess.run(
      [sys.executable, "-c", COUNT_POOL, str(expected), *mode],
      capture_output=True,
      text=True,
      env={**environ, **env},
      timeout=300,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  assert int(run.stdout.split()[-1]) == expected, (devices, mode, env)


@pytest.mark.skipif(
    not os.path.isdir("/proc/self/task"),
    reason="counts threads through Linux's /proc",
)
def test_simulated_devices_get_threads_for_several_collectives_each():
  from asl_vq import runtime  # pylint: disable=g-import-not-at-top

  per_device = runtime.THREADS_PER_DEVICE
  cores = len(os.sched_getaffinity(0))  # what XLA's default counts.
  _assert_pool_threads(max(os.cpu_count(), 8 * per_device), 8)
  _assert_pool_threads(max(os.cpu_count(), 4 * per_device), 4)
  # One device runs no in-process collective: XLA's default pool.
  _assert_pool_threads(cores, 1)
  # The user's setting is kept.
  _assert_pool_threads(12, 8, PJRT_NPROC="12")
  # Collectives between processes over gloo: XLA's own pools.
  _assert_pool_threads(max(cores, 4), 4, "gloo")
  _assert_pool_threads(12, 4, "gloo", PJRT_NPROC="12")


IMPORT_EVERYTHING = """
import os, pkgutil, importlib
import jax, flax, optax, orbax.checkpoint, grain  # their own changes first
before = dict(os.environ)
import asl_vq
for m in pkgutil.walk_packages(asl_vq.__path__, "asl_vq."):
  # (asl_vq.main defines its flags on import, as Flax's examples do, and
  # shares names with other commands; data.video needs MediaPipe.)
  if m.name not in ("asl_vq.main", "asl_vq.data.video") and not (
      m.name.endswith("__main__")):
    importlib.import_module(m.name)
changed = {k for k in set(before) | set(os.environ)
           if before.get(k) != os.environ.get(k)}
print(sorted(changed))
"""


def test_importing_the_package_changes_no_environment_variable():
  run = subprocess.run(
      [sys.executable, "-c", IMPORT_EVERYTHING],
      capture_output=True,
      text=True,
      env=xla_env.env(os.environ, devices=2),
      timeout=300,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.split("\n")[-2] == "[]", run.stdout


def test_setup_after_the_backend_started_is_refused():
  run = subprocess.run(
      [
          sys.executable,
          "-c",
          "import jax; jax.devices(); from asl_vq import runtime; runtime.setup()",
      ],
      capture_output=True,
      text=True,
      env=xla_env.env(os.environ, devices=2),
      timeout=300,
  )
  assert run.returncode == 1
  assert "after JAX started its backend: call it first" in run.stderr
