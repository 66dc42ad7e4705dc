"""The tokenizer's training step: loss falls, 8 devices equal 1, a non-finite
loss skips the update (resume after SIGKILL and two processes:
test_main_run)."""

import functools

import jax
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from asl_vq import config_lib
from asl_vq import optimizers
from asl_vq import train
from asl_vq.data import datasets
from asl_vq.data import pipeline
from asl_vq.tasks import tokenizer as tokenizer_task
import train_helpers


def _config(arg="tiny"):
  return config_lib.load("tokenizer", arg)


@pytest.fixture(scope="module")
def tiny_batch():
  config = _config()
  splits = datasets.load(config)
  ds = pipeline.make_dataset(
      splits["train"],
      global_batch_size=config.train.batch_size,
      max_len=config.data.max_len,
      max_label_len=config.data.max_label_len,
      buckets=tuple(config.data.buckets),
      seed=0,
      train=True,
  )
  return config, next(iter(ds))


def _init_and_step(mesh, config, tx=None):
  """The initial state and the jit-ed step on `mesh`, and a function that
  places a batch there (the tests on one device share these programs)."""
  task = tokenizer_task.TokenizerTask(config)
  tx = tx or optimizers.make_optimizer(config, config.train.batch_size)
  repl = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P("data"))
  state = jax.jit(
      functools.partial(train.init_state, task.init_variables, tx),
      out_shardings=repl,
  )(jax.random.PRNGKey(0))
  step = jax.jit(
      functools.partial(
          train.train_step,
          loss_fn=task.loss,
          tx=tx,
          base_rng=jax.random.PRNGKey(1),
      ),
      in_shardings=(
          repl,
          {k: data for k in tokenizer_task.TokenizerTask.device_keys},
      ),
      out_shardings=(repl, repl),
  )
  place = lambda batch: {
      k: jax.device_put(batch[k], data)
      for k in tokenizer_task.TokenizerTask.device_keys
  }
  return state, step, place


def _step_on(mesh, config, batch, steps=2, tx=None):
  state, step, place = _init_and_step(mesh, config, tx)
  gbatch = place(batch)
  losses = []
  for _ in range(steps):
    state, m = step(state, gbatch)
    losses.append(float(m["loss"]))
  return jax.device_get(state), losses


@pytest.mark.slow
def test_one_step_on_8_devices_equals_1_device(tiny_batch):
  # Plain SGD: Adam would turn float noise in the gradients of parameters
  # whose true gradient is 0 (e.g. attention key biases) into full steps.
  config, batch = tiny_batch
  assert jax.device_count() == 8
  sgd = optax.sgd(0.1)
  one, l1 = _step_on(
      Mesh(np.array(jax.devices()[:1]), ("data",)), config, batch, tx=sgd
  )
  eight, l8 = _step_on(
      Mesh(np.array(jax.devices()), ("data",)), config, batch, tx=sgd
  )
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  close = functools.partial(
      train_helpers.assert_trees_close, rtol=1e-4, atol=1e-5
  )
  close(one.params, eight.params)
  close(one.collections["vq"], eight.collections["vq"])
  close(one.collections["batch_stats"], eight.collections["batch_stats"])


def test_loss_falls_on_a_repeated_batch(tiny_batch):
  config, batch = tiny_batch
  _, losses = _step_on(
      Mesh(np.array(jax.devices()[:1]), ("data",)), config, batch, steps=30
  )
  assert losses[-1] < 0.8 * losses[1], losses


def test_nonfinite_loss_skips_the_update_and_names_the_step(tiny_batch):
  config, batch = tiny_batch
  bad = dict(batch)
  bad["inputs"] = np.full_like(batch["inputs"], np.nan)
  state, step, place = _init_and_step(
      Mesh(np.array(jax.devices()[:1]), ("data",)), config
  )
  state, _ = step(state, place(batch))
  before = jax.device_get(state.params)
  state, _ = step(state, place(bad))
  assert int(state.nonfinite_step) == 1
  train_helpers.assert_trees_close(before, state.params, rtol=0, atol=0)
  with pytest.raises(FloatingPointError, match="not finite at step 1"):
    train.check_finite(state, type("C", (), {"latest_step": lambda s: 0})())


def test_the_evaluation_measures_the_error_in_the_inputs_units():
  """`image_error_sums`: a point moved by 0.5 (model units) along x, whose
  value was divided by 0.1, is 0.05 away in the input's units; a palm of 0.2
  (wrist to middle knuckle) makes that a quarter of a palm; points not
  detected (scale 0) and padded frames do not count."""
  inputs = np.zeros((1, 3, 42, 2), np.float32)
  inputs[0, :, 30] = [0.0, 2.0]  # right middle knuckle 2 above its wrist
  scale = np.zeros_like(inputs)
  scale[0, :2, 21:] = 0.1  # the right hand detected in frames 0 and 1.
  recon = inputs.copy()
  recon[0, 0, 25, 0] += 0.5
  recon[0, 2] += 9.0  # frame 2: padding.
  valid = np.array([[True, True, False]])
  sums = tokenizer_task.image_error_sums(
      recon, {"inputs": inputs, "scale": scale}, valid
  )
  assert float(sums["points"]) == 42 and float(sums["palm_points"]) == 42
  np.testing.assert_allclose(float(sums["image_sum"]), 0.05, rtol=1e-5)
  np.testing.assert_allclose(float(sums["palms_sum"]), 0.25, rtol=1e-5)
  metrics = tokenizer_task.TokenizerTask(
      config_lib.load("tokenizer", "tiny")
  ).eval_metrics(
      {
          "examples": np.float64(1),
          "loss": np.float64(1.0),
          "code_counts": np.ones((4, 32)),
          **{k: np.asarray(v, np.float64) for k, v in sums.items()},
      },
      [("a", "a")],
  )
  assert metrics["image_error"] == pytest.approx(0.05 / 42)
  assert metrics["image_error_palms"] == pytest.approx(0.25 / 42)
  assert "image_sum" not in metrics and "points" not in metrics
