"""Two processes (jax.distributed over gloo, 2 simulated devices each) train
the tiny tokenizer as one process with 4 devices does."""

import os

import numpy as np
import pytest

from asl_vq import checkpointing
from asl_vq import metric_writers
import main_runs
import train_helpers


@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path):
  single = tmp_path / "single"
  main_runs.run_main(str(single), devices=4)
  multi = tmp_path / "multi"
  port = 20000 + os.getpid() % 20000
  procs = [
      main_runs.run_main(
          str(multi), f"--coordinator_address=127.0.0.1:{port}",
          "--num_processes=2", f"--process_id={i}", devices=2, wait=False)
      for i in range(2)]
  outs = [p.communicate(timeout=900)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], "\n".join(
      f"--- process {i} (exit {p.returncode}):\n{o[-3000:]}"
      for i, (p, o) in enumerate(zip(procs, outs)))
  # Behaviour, not raw parameters: Adam turns float noise in the gradients of
  # parameters that cannot matter (attention key biases, a LayerNorm bias
  # before a BatchNorm) into lr-sized differences that change no output.
  rows = [metric_writers.read_metrics(str(d / "metrics.jsonl"))
          for d in (single, multi)]
  assert [(r["step"], r["split"]) for r in rows[0]] == [
      (r["step"], r["split"]) for r in rows[1]]
  assert any(r["split"] == "validation" for r in rows[0])
  for a, b in zip(*rows):
    assert a.keys() == b.keys()
    for k in set(a) - {"split"}:
      np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=1e-5, err_msg=k)
  vq = [checkpointing.restore(str(d), "latest")["collections"]["vq"]
        for d in (single, multi)]
  train_helpers.assert_trees_close(*vq, rtol=1e-4, atol=1e-5)
