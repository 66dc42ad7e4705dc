"""asl_vq: discrete tokens for ASL fingerspelling (JAX/Flax).

`asl_vq.Tokenizer` is imported on first use, so that `import asl_vq.data...`
(e.g. the synthetic generator) does not load JAX.
"""

import os as _os

__version__ = "0.1.0"

# XLA:CPU's collectives give up on a late participant: in one process (the
# simulated devices of `--xla_force_host_platform_device_count`) the
# all-reduce ends the process with SIGABRT once a device thread is 40 s late
# ("Termination timeout ... Exiting to ensure a consistent program state");
# between processes (gloo) a collective fails after 30 s. On a loaded CPU
# (8 simulated devices on 2 busy cores), or while process 0 alone prepares
# the data, writes figures or compiles slower, a participant is that late
# without anything being wrong. Set here, before JAX starts its backend;
# a value the user put in XLA_FLAGS is kept. GPUs and TPUs ignore them.
_CPU_COLLECTIVE_TIMEOUTS = {
    "xla_cpu_collective_call_terminate_timeout_seconds": 1800,
    "xla_cpu_collective_timeout_seconds": 1800,
}


def _patient_cpu_collectives() -> None:
  flags = _os.environ.get("XLA_FLAGS", "")
  extra = [f"--{k}={v}" for k, v in _CPU_COLLECTIVE_TIMEOUTS.items()
           if f"--{k}=" not in flags]
  _os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


_patient_cpu_collectives()


def __getattr__(name):
  if name == "Tokenizer":
    from asl_vq.inference import Tokenizer  # pylint: disable=g-import-not-at-top
    return Tokenizer
  raise AttributeError(f"module 'asl_vq' has no attribute {name!r}")
