"""A task's losses over training steps on one repeated batch (the trainers'
"it learns" tests)."""

import functools

import jax

from asl_vq import train
from asl_vq.data import pipeline


def losses_on_a_repeated_batch(task, config, source, steps):
  ds = pipeline.make_dataset(
      source, global_batch_size=config.train.batch_size,
      max_len=config.data.max_len, max_label_len=config.data.max_label_len,
      buckets=tuple(config.data.buckets), seed=0, train=True, flip_prob=0.)
  batch = next(iter(ds))
  batch = {k: batch[k] for k in task.device_keys}
  tx = train.make_optimizer(config)
  state = train.init_state(task, tx, jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(train.train_step, task=task, tx=tx,
                                   base_rng=jax.random.PRNGKey(1)))
  losses = []
  for _ in range(steps):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  return losses
