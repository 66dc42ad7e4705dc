"""Process-wide runtime settings, applied on request, never on import.

`setup()` sizes XLA:CPU for this project's simulated-device runs; every
command calls it first (`cli.run`), and so do the tests (`tests/conftest.py`);
a library user who wants it calls it before JAX starts its backend.
`import asl_vq` changes nothing. Both workarounds were seen with jax and
jaxlib 0.10.2 on a 2-core x86 CPU; tests/test_xla_cpu_setup.py checks what
they set.
"""

import os as _os
import re as _re
import sys as _sys

# XLA:CPU runs the simulated devices of `--xla_force_host_platform_device_count`
# (or `JAX_NUM_CPU_DEVICES`) on thread pools of max(cores, devices) threads,
# sized for one collective in flight per device ("Need at least
# CpuDeviceCount threads to launch one collective", xla/pjrt/cpu/
# cpu_client.cc). But each collective blocks its thread until every device
# has joined, and the thunk executor releases a device's next collective
# while a loop or conditional holding collectives is still running (the
# collectives share a resource that gives only a scheduling edge). Our train
# step has such loops (the RVQ's loop over quantizers, the k-means start in
# it) and a conditional, so a device can hold several threads: the devices
# ahead then took all 8 threads of an 8-device run, and the others' turn of
# the same all-reduce waited in the pool queue for ever (seen in the test
# suite under load: all 8 pool threads in AllReduce rendezvous, nothing
# running). With THREADS_PER_DEVICE threads per simulated device, up to that
# many collectives per device may be in flight (an 8-device tiny run took
# ~4% longer on 2 cores: 54.5 and 55.3 s against 51.6 and 53.8 s). A value
# the user set (PJRT_NPROC, or Google's NPROC, which XLA also reads) is kept.
THREADS_PER_DEVICE = 8

# A participant late for a collective ends the run: in one process the
# all-reduce ends it with SIGABRT after 40 s ("Termination timeout ...
# Exiting to ensure a consistent program state"); between processes (gloo) a
# collective fails after 30 s. A process is that late without anything being
# wrong when process 0 alone prepares the data, writes figures, or compiles
# slower on a busy CPU. Set before JAX starts its backend; a value the user
# put in XLA_FLAGS is kept. GPUs and TPUs ignore both settings.
_CPU_COLLECTIVE_TIMEOUTS = {
    "xla_cpu_collective_call_terminate_timeout_seconds": 1800,
    "xla_cpu_collective_timeout_seconds": 1800,
}


def _simulated_cpu_devices(flags: str) -> int:
  found = _re.findall(r"--xla_force_host_platform_device_count=(\d+)", flags)
  count = int(found[-1]) if found else 1
  env = _os.environ.get("JAX_NUM_CPU_DEVICES", "")
  return max(count, int(env) if env.isdigit() else 1)


def setup() -> None:
  """XLA_FLAGS' CPU collective timeouts and PJRT_NPROC's thread pools (see
  above), for this process and the ones it starts; values the user set are
  kept. A second call changes nothing.

  Raises:
    RuntimeError: the first call came after JAX started its backend (too
      late: it belongs before the first device is used).
  """
  global _pjrt_nproc, _done
  if _done:
    return
  if _backend_started():
    raise RuntimeError(
        "asl_vq.runtime.setup() after JAX started its backend: call it first"
    )
  flags = _os.environ.get("XLA_FLAGS", "")
  extra = [
      f"--{k}={v}"
      for k, v in _CPU_COLLECTIVE_TIMEOUTS.items()
      if f"--{k}=" not in flags
  ]
  _os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
  devices = _simulated_cpu_devices(flags)
  if devices > 1 and not {"PJRT_NPROC", "NPROC"} & set(_os.environ):
    _pjrt_nproc = str(max(_os.cpu_count() or 1, THREADS_PER_DEVICE * devices))
    _os.environ["PJRT_NPROC"] = _pjrt_nproc
  _done = True


_pjrt_nproc = None  # What setup set, if anything.
_done = False


def _backend_started() -> bool:
  jax = _sys.modules.get("jax")
  if jax is None:
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  return xla_bridge.backends_are_initialized()


def default_cpu_threads_for_gloo() -> None:
  """XLA's own thread pool sizes again, for a run whose collectives go
  between processes over gloo; call before JAX starts its backend.

  A workaround, seen on this project's 2-core CPU: with THREADS_PER_DEVICE
  threads (32 for 4 devices) both processes of the 2-host test aborted on
  their first run ("Received data size doesn't match expected size. Is
  there a distributed collective mismatch"), likely several collectives in
  flight per device reaching gloo in another order on each process; with
  XLA's max(cores, devices) threads (4 here) the test had passed 10 times in
  a row. XLA's pools on a many-core machine are that large anyway, and with
  one thread per device the starvation above stays possible in gloo runs.
  A PJRT_NPROC the user set is kept.
  """
  if _pjrt_nproc is not None and _os.environ.get("PJRT_NPROC") == _pjrt_nproc:
    del _os.environ["PJRT_NPROC"]
