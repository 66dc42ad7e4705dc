"""SIGTERM (a preemption notice, ~30 s): the run saves the step it is at and
exits within one training step (or evaluation batch) plus one checkpoint
write; never after an evaluation; the resumed run evaluates first."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import pytest

from asl_vq import checkpointing
from asl_vq import config_lib
from asl_vq import metric_writers
from asl_vq import preemption
from asl_vq import train
from asl_vq.experiments import paper_tables
from asl_vq.tasks import tokenizer as tokenizer_task
import xla_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "sent_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)
def test_a_notice_saves_and_exits_within_a_step_and_a_save(
    tmp_path, sent_signal
):
  """SIGTERM, and Ctrl-C alike (it once printed a KeyboardInterrupt
  traceback and lost the steps since the last save)."""
  metrics = tmp_path / "metrics.jsonl"
  proc = subprocess.Popen(
      [
          sys.executable,
          "-m",
          "asl_vq.main",
          "--config=tokenizer:tiny",
          f"--workdir={tmp_path}",
          "--config.train.num_epochs=1000",
          "--config.train.log_every_steps=1",
          "--config.train.checkpoint_every_steps=1000000",
          "--config.train.eval_every_epochs=1000",
      ],
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env=xla_env.env(os.environ, devices=2),
  )
  seen, arrivals, deadline = 0, [], time.time() + 900
  while len(arrivals) < 6:  # steps are running (log every step).
    assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
    rows = len(metric_writers.read_metrics(str(metrics)))
    if rows > seen:
      seen = rows
      arrivals.append(time.monotonic())
    time.sleep(0.01)
  step_time = max(b - a for a, b in zip(arrivals[1:], arrivals[2:]))
  sent = time.monotonic()
  proc.send_signal(sent_signal)
  out = proc.communicate(timeout=900)[0]
  exited = time.monotonic() - sent

  # Ctrl-C saves too, then fails the command, so that `train && next` stops.
  assert proc.returncode == (130 if sent_signal == signal.SIGINT else 0), out[
      -3000:
  ]
  found = re.search(
      r"preempted: saved step (\d+) in ([\d.]+) s, ([\d.]+) s "
      rf"after {sent_signal.name}; run the same command to "
      "resume",
      out,
  )
  assert found, out[-3000:]
  step, save, latency = int(found[1]), float(found[2]), float(found[3])
  print(
      f"step {step_time:.2f} s, save {save:.2f} s, saved {latency:.2f} s "
      f"after {sent_signal.name}, exited after {exited:.2f} s"
  )
  assert checkpointing.Checkpoints(str(tmp_path)).latest_step() == step
  # The bound: the step in flight and the one dispatched after it (the
  # loop runs one step ahead of the device), then the write.
  assert latency <= save + 2 * step_time + 1.0, (latency, save, step_time)
  # No long tail after the save: no evaluation, no figures.
  assert exited - latency < 15.0, (exited, latency)
  assert not (tmp_path / "learning_curves.png").exists()
  assert "validation" not in out


@pytest.mark.slow
def test_the_loop_runs_at_most_one_step_ahead_of_the_device(
    tmp_path, monkeypatch
):
  """Steps dispatched but not run pile up between two host syncs (logging
  every 50 steps at the `paper` preset left a notice waiting 148 s for
  them, and the ETA optimistic): with a device step slower than the host's
  loop, each new step finds at most the one before it unfinished. Without
  the bound this reads 0, 1, 2, 3 between epoch ends."""
  config = config_lib.load("tokenizer", "tiny")
  config.train.num_epochs = 8
  config.train.eval_every_epochs = 100
  config.train.log_every_steps = 1000

  def slow(x):
    time.sleep(0.1)  # far slower than the loop's host side, even loaded.
    return x

  slow_down = jax.jit(
      lambda x: jax.pure_callback(
          slow, jax.ShapeDtypeStruct(x.shape, x.dtype), x
      )
  )
  jit_train_step = train.jit_train_step
  unfinished, returned = [], []

  def slow_steps(*args):
    step = jit_train_step(*args)

    def run(state, batch):
      unfinished.append(sum(not m.is_ready() for m in returned))
      state, metrics = step(state, batch)
      metrics = dict(metrics, loss=slow_down(metrics["loss"]))
      returned.append(metrics["loss"])
      return state, metrics

    return run

  monkeypatch.setattr(train, "jit_train_step", slow_steps)
  tokenizer_task.run(config, str(tmp_path))
  assert len(unfinished) > 16 and max(unfinished) == 1, unfinished


@pytest.mark.slow
def test_sigterm_during_an_evaluation_saves_and_the_resumed_run_evaluates_first(
    tmp_path, monkeypatch, capsys
):
  config = config_lib.load("tokenizer", "tiny")
  config.train.num_epochs = 2
  evaluate = train.Evaluator.__call__
  calls = []

  def preempted_evaluate(*args, **kwargs):
    calls.append(1)
    os.kill(os.getpid(), signal.SIGTERM)  # arrives during the evaluation.
    return evaluate(*args, **kwargs)

  monkeypatch.setattr(train.Evaluator, "__call__", preempted_evaluate)
  with pytest.raises(preemption.Preempted):  # callers stop too (paper_tables).
    tokenizer_task.run(config, str(tmp_path))
  ckpts = checkpointing.Checkpoints(str(tmp_path))
  epoch = ckpts.latest_step()
  assert calls == [1] and epoch > 0
  assert not ckpts.has_best(epoch)  # nothing evaluated at that step.
  assert "preempted: saved step" in capsys.readouterr().out
  before = metric_writers.read_metrics(str(tmp_path / "metrics.jsonl"))
  assert all(r["split"] == "train" for r in before)
  assert not (tmp_path / "test_metrics.json").exists()
  ckpts.close()

  monkeypatch.setattr(train.Evaluator, "__call__", evaluate)
  tokenizer_task.run(config, str(tmp_path))
  rows = metric_writers.read_metrics(str(tmp_path / "metrics.jsonl"))
  resumed = [(r["step"], r["split"]) for r in rows[len(before) :]]
  assert resumed[0] == (epoch, "validation"), resumed
  assert (2 * epoch, "validation") in resumed and resumed[-1][1] == "test"
  assert (tmp_path / "test_metrics.json").exists()


def test_sigterm_stops_the_paper_tables_at_the_stage_it_reached(
    tmp_path, monkeypatch
):
  """A preempted stage ends the whole command: the next stage never starts
  from a part-trained tokenizer (it once went on to tokenize with it)."""
  evaluate = train.Evaluator.__call__

  def preempted_evaluate(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return evaluate(*args, **kwargs)

  monkeypatch.setattr(train.Evaluator, "__call__", preempted_evaluate)
  with pytest.raises(preemption.Preempted):
    paper_tables.run_all(str(tmp_path), "tiny", ["rvq"])
  assert sorted(
      p.name for p in tmp_path.iterdir() if not p.name.startswith(".")
  ) == ["timings.json", "tokenizer_rvq"], list(tmp_path.iterdir())
  # The stopped stage's time so far is kept (a resumed call adds to it).
  timings = json.loads((tmp_path / "timings.json").read_text())
  assert list(timings) == ["tokenizer_rvq"] and timings["tokenizer_rvq"] > 0
  assert (
      checkpointing.Checkpoints(str(tmp_path / "tokenizer_rvq")).latest_step()
      > 0
  )
