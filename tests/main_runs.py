"""`python -m asl_vq.main` on the tiny preset in a subprocess, and what its
workdir holds (the kill-anywhere and the two-process tests)."""

import os
import subprocess
import sys

import jax
import numpy as np

from asl_vq import checkpointing
import xla_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "tokenizer.py")


def run_main(workdir, *extra, devices=8, wait=True, env=None):
  """The tiny tokenizer run in `workdir` with `extra` flags, on `devices`
  simulated devices: its output (asserting exit 0), or with wait=False the
  running process."""
  env = xla_env.env(os.environ, devices=devices, **(env or {}))
  cmd = [
      sys.executable,
      "-m",
      "asl_vq.main",
      f"--config={CONFIG}:tiny",
      f"--workdir={workdir}",
      *extra,
  ]
  proc = subprocess.Popen(
      cmd,
      env=env,
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  if not wait:
    return proc
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0, out[-4000:]
  return out


def params(workdir, which="latest"):
  """The parameters of a workdir's checkpoint, as numpy arrays."""
  state = checkpointing.restore(str(workdir), which)
  return jax.tree.map(np.asarray, state["params"])
