"""XLA_FLAGS of every test process, the pytest workers' and their
subprocesses': simulated CPU devices, and LLVM's -O0 for the kernels.

The suite compiles hundreds of small programs and runs each for a few
steps: at -O0 the tiny tokenizer's train step compiles in a third less
time (~19 s -> ~13 s; a cold tiny run 68 s -> 53 s) with the same losses
(to the 4 printed decimals), so most of the suite's time, compilation,
shrinks. Users' runs keep XLA's default optimisation level. A process
started with XLA_FLAGS already set keeps them (conftest's setdefault);
the subprocesses the tests start always get these.
"""

import os
import subprocess
import sys

FAST_COMPILE = "--xla_backend_optimization_level=0"


def flags(devices: int = 8) -> str:
  """XLA_FLAGS for a process with `devices` simulated CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"


def env(os_environ, devices: int = 8, **extra) -> dict[str, str]:
  """A copy of `os_environ` with XLA_FLAGS for `devices` and `extra`, and
  without PJRT_NPROC (`runtime.setup()` set it for this process's devices;
  the subprocess's own setup sizes its pools; one set by hand is dropped
  too unless given in `extra`)."""
  out = {k: v for k, v in os_environ.items() if k != "PJRT_NPROC"}
  return dict(out, XLA_FLAGS=flags(devices), **extra)


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
  """`python -m module *args` on one simulated device (compiles fastest),
  its output captured as text."""
  return subprocess.run(
      [sys.executable, "-m", module, *args],
      capture_output=True,
      text=True,
      timeout=900,
      env=env(os.environ, devices=1),
  )
