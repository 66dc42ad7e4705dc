"""Kill anywhere: a tiny tokenizer run SIGKILLed at random points, each
start resuming the last, ends equal to an uninterrupted run (issue 12, 7)."""

import os
import signal
import time

import numpy as np
import pytest

from asl_vq import checkpointing
import main_runs
import train_helpers

EPOCHS = ("--config.train.num_epochs=8",)
KILLS = 7   # SIGKILLs of one run, at random points (3 early, 4 late).


@pytest.mark.slow
def test_main_trains_writes_outputs_and_resumes_exactly_after_sigkills(
    tmp_path):
  full = tmp_path / "full"
  out = main_runs.run_main(str(full), *EPOCHS)
  assert "parameters:" in out
  for name in ("metrics.jsonl", "learning_curves.png", "config.json"):
    assert (full / name).stat().st_size > 0, name
  assert list((full / "tensorboard").iterdir())
  assert list((full / "checkpoints").iterdir())

  # Kill anywhere: SIGKILL at random points of a run that saves after every
  # step, with its data in a cache of its own (its programs are the full
  # run's, compiled once). Every
  # third kill falls at a random time after the start (imports, data
  # generation, cache preparation, compilation); the others at a random
  # time just after a new checkpoint appears (the next steps and saves).
  # Each start resumes what the last left; nothing half-written is ever
  # read; the end equals the uninterrupted run.
  killed = tmp_path / "killed"
  env = {"ASL_VQ_CACHE": str(tmp_path / "cache"),   # data: made in the run.
         "JAX_COMPILATION_CACHE_DIR": os.path.join(   # programs: the full run's.
             os.environ["ASL_VQ_CACHE"], "jax")}
  extra = (*EPOCHS, "--config.train.checkpoint_every_steps=1")
  rng = np.random.default_rng(0)

  def saved():   # The newest step on disk, read without Orbax: a run that
    # is being killed writes there (Orbax renames a step's folder into its
    # number only when the step is complete).
    folder = killed / "checkpoints"
    return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()),
               default=0) if folder.exists() else 0

  log = []
  for k in range(KILLS):
    before = saved()
    proc = main_runs.run_main(str(killed), *extra, wait=False, env=env)
    if k % 3 == 0:
      time.sleep(rng.uniform(0.2, 4.0))
    else:
      while saved() == before and proc.poll() is None:
        time.sleep(0.02)
      time.sleep(rng.uniform(0.0, 0.3))
    assert proc.poll() is None, f"finished before kill {k}: {log}"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    log.append(saved())
  total = checkpointing.Checkpoints(str(full)).latest_step()
  assert 0 < log[-1] < total, log
  out = main_runs.run_main(str(killed), *extra, env=env)
  assert f"resumed from step {log[-1]}" in out
  assert checkpointing.Checkpoints(str(killed)).latest_step() == total
  train_helpers.assert_trees_close(main_runs.params(full),
                                   main_runs.params(killed), rtol=1e-6,
                                   atol=1e-7)
