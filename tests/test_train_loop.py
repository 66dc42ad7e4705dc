"""The tokenizer's training: loss falls, sharding is exact, resume is exact."""

import functools
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from asl_vq import checkpointing
from asl_vq import config_lib
from asl_vq import metric_writers
from asl_vq import train
from asl_vq.data import datasets
from asl_vq.data import pipeline
from asl_vq.tasks import tokenizer_training

EPOCHS = ("--config.train.num_epochs=8",)
KILLS = 10   # SIGKILLs of one run, at random points.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "rvq_ctc.py")


def _config(arg="tiny"):
  return config_lib.load("rvq_ctc", arg)


def _run_main(workdir, *extra, env_devices=8, wait=True, env=None):
  env = dict(os.environ, **(env or {}))
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={env_devices}"
  cmd = [sys.executable, "-m", "asl_vq.main", f"--config={CONFIG}:tiny",
         f"--workdir={workdir}", *extra]
  proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  if not wait:
    return proc
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0, out[-4000:]
  return out


def _params(workdir, which="latest"):
  state = checkpointing.restore(workdir, which)
  return jax.tree.map(np.asarray, state["params"])


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                               atol=atol)


def full_steps(workdir):
  return max(int(p.name) for p in (workdir / "checkpoints").iterdir()
             if p.name.isdigit())


@pytest.fixture(scope="module")
def tiny_batch():
  config = _config()
  splits = datasets.load(config)
  ds = pipeline.make_dataset(
      splits["train"], global_batch_size=config.train.batch_size,
      max_len=config.data.max_len, max_label_len=config.data.max_label_len,
      buckets=tuple(config.data.buckets), seed=0, train=True)
  return config, next(iter(ds))


def _step_on(mesh, config, batch, steps=2, tx=None):
  task, tx = tokenizer_training.TokenizerTask(config), tx or train.make_optimizer(config)
  repl = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P("data"))
  state = jax.jit(functools.partial(train.init_state, task, tx),
                  out_shardings=repl)(jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(train.train_step, task=task, tx=tx,
                                   base_rng=jax.random.PRNGKey(1)),
                 in_shardings=(repl, {k: data for k in tokenizer_training.DEVICE_KEYS}),
                 out_shardings=(repl, repl))
  gbatch = {k: jax.device_put(batch[k], data) for k in tokenizer_training.DEVICE_KEYS}
  losses = []
  for _ in range(steps):
    state, m = step(state, gbatch)
    losses.append(float(m["loss"]))
  return jax.device_get(state), losses


def test_one_step_on_8_devices_equals_1_device(tiny_batch):
  # Plain SGD: Adam would turn float noise in the gradients of parameters
  # whose true gradient is 0 (e.g. attention key biases) into full steps.
  config, batch = tiny_batch
  assert jax.device_count() == 8
  sgd = optax.sgd(0.1)
  one, l1 = _step_on(Mesh(np.array(jax.devices()[:1]), ("data",)), config,
                     batch, tx=sgd)
  eight, l8 = _step_on(Mesh(np.array(jax.devices()), ("data",)), config,
                       batch, tx=sgd)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  _assert_trees_close(one.params, eight.params, rtol=1e-4, atol=1e-5)
  _assert_trees_close(one.collections["vq"], eight.collections["vq"], rtol=1e-4, atol=1e-5)
  _assert_trees_close(one.collections["batch_stats"],
                      eight.collections["batch_stats"], rtol=1e-4,
                      atol=1e-5)


def test_loss_falls_on_a_repeated_batch(tiny_batch):
  config, batch = tiny_batch
  _, losses = _step_on(Mesh(np.array(jax.devices()[:1]), ("data",)), config,
                       batch, steps=30)
  assert losses[-1] < 0.8 * losses[1], losses


def test_nonfinite_loss_skips_the_update_and_names_the_step(tiny_batch):
  config, batch = tiny_batch
  bad = dict(batch)
  bad["inputs"] = np.full_like(batch["inputs"], np.nan)
  task, tx = tokenizer_training.TokenizerTask(config), train.make_optimizer(config)
  state = train.init_state(task, tx, jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(train.train_step, task=task, tx=tx,
                                   base_rng=jax.random.PRNGKey(1)))
  state, _ = step(state, {k: batch[k] for k in tokenizer_training.DEVICE_KEYS})
  before = jax.device_get(state.params)
  state, _ = step(state, {k: bad[k] for k in tokenizer_training.DEVICE_KEYS})
  assert int(state.nonfinite_step) == 1
  _assert_trees_close(before, state.params, rtol=0, atol=0)
  with pytest.raises(FloatingPointError, match="not finite at step 1"):
    train.check_finite(state, type("C", (), {"latest_step": lambda s: 0})())


def test_main_trains_writes_outputs_and_resumes_exactly_after_sigkills(
    tmp_path):
  full = tmp_path / "full"
  out = _run_main(str(full), *EPOCHS)
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
  saved = lambda: max((int(p.name) for p in (killed / "checkpoints").iterdir()
                       if p.name.isdigit()), default=0) if (
                           killed / "checkpoints").exists() else 0
  log = []
  for k in range(KILLS):
    before = saved()
    proc = _run_main(str(killed), *extra, wait=False, env=env)
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
  total = int(full_steps(full))
  assert 0 < log[-1] < total, log
  out = _run_main(str(killed), *extra, env=env)
  assert f"resumed from step {log[-1]}" in out
  assert int(full_steps(killed)) == total
  _assert_trees_close(_params(full), _params(killed), rtol=1e-6, atol=1e-7)


def test_two_processes_agree_with_one(tmp_path):
  single = tmp_path / "single"
  _run_main(str(single), env_devices=4)
  multi = tmp_path / "multi"
  port = 20000 + os.getpid() % 20000
  procs = [
      _run_main(str(multi), f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2", f"--process_id={i}", env_devices=2,
                wait=False) for i in range(2)]
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
  _assert_trees_close(*vq, rtol=1e-4, atol=1e-5)
