"""The trainers' tests' helpers: a task's losses over training steps on one
repeated batch ("it learns"), and parameter trees compared leaf by leaf."""

import functools

import jax
import numpy as np

from asl_vq import optimizers
from asl_vq import train
from asl_vq.data import pipeline


def losses_on_a_repeated_batch(task, config, source, steps):
  ds = pipeline.make_dataset(
      source,
      global_batch_size=config.train.batch_size,
      max_len=config.data.max_len,
      max_label_len=config.data.max_label_len,
      buckets=tuple(config.data.buckets),
      seed=0,
      train=True,
      flip_prob=0.0,
  )
  batch = next(iter(ds))
  batch = {k: batch[k] for k in task.device_keys}
  tx = optimizers.make_optimizer(config, len(source))
  state = jax.jit(functools.partial(train.init_state, task.init_variables, tx))(
      jax.random.PRNGKey(0)
  )
  step = jax.jit(
      functools.partial(
          train.train_step,
          loss_fn=task.loss,
          tx=tx,
          base_rng=jax.random.PRNGKey(1),
      )
  )
  losses = []
  for _ in range(steps):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  return losses


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(
        np.asarray(x), np.asarray(y), rtol=rtol, atol=atol
    )
