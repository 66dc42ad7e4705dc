"""What `import asl_vq` sets up for XLA:CPU before JAX starts its backend:
thread pools with room for several collectives in flight per simulated
device (an 8-device train step once waited for ever with the default
max(cores, devices) = 8 threads; see asl_vq/__init__.py)."""

import os
import subprocess
import sys

import pytest

import xla_env

# The threads of XLA:CPU's intra-op pool (TSL names them tf_XLAEigen), the
# one collective thunks block on.
COUNT_POOL = """
import asl_vq, jax, os, sys
if sys.argv[1:] == ["gloo"]:
  asl_vq.default_cpu_threads_for_gloo()
jax.devices()
names = []
for t in os.listdir("/proc/self/task"):
  try:
    names.append(open(f"/proc/self/task/{t}/comm").read().strip())
  except OSError:   # a short-lived thread, gone (or going) since.
    pass
print(sum(n == "tf_XLAEigen" for n in names))
"""


def _pool_threads(devices, *args, **env):
  environ = {k: v for k, v in xla_env.env(os.environ, devices=devices).items()
             if k != "NPROC"}
  run = subprocess.run([sys.executable, "-c", COUNT_POOL, *args],
                       capture_output=True, text=True,
                       env={**environ, **env}, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  return int(run.stdout.split()[-1])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"),
                    reason="counts threads through Linux's /proc")
def test_simulated_devices_get_threads_for_several_collectives_each():
  import asl_vq   # pylint: disable=g-import-not-at-top
  per_device = asl_vq.THREADS_PER_DEVICE
  cores = len(os.sched_getaffinity(0))   # what XLA's default counts.
  assert _pool_threads(8) == max(os.cpu_count(), 8 * per_device)
  assert _pool_threads(4) == max(os.cpu_count(), 4 * per_device)
  # One device runs no in-process collective: XLA's default pool.
  assert _pool_threads(1) == cores
  # The user's setting is kept.
  assert _pool_threads(8, PJRT_NPROC="12") == 12
  # Collectives between processes over gloo: XLA's own pools.
  assert _pool_threads(4, "gloo") == max(cores, 4)
  assert _pool_threads(4, "gloo", PJRT_NPROC="12") == 12
