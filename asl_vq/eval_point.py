"""BatchNorm statistics at the schedule-free evaluation point.

Schedule-free AdamW trains at the gradient point y and evaluates at x
(`asl_vq.optimizers.eval_params`). The running BatchNorm statistics gathered
while training belong to y (and, at momentum 0.05, mostly to the last
batch), so before every validation the statistics are recomputed at x over
a fixed set of training batches, as the reference does (its main.py runs
the training loader through the model at x before validating).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable

from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asl_vq import errors
from asl_vq import optimizers
from asl_vq import sharding
from asl_vq.data import datasets
from asl_vq.data import pipeline

# (state, global batch) -> `Task.batch_moments` at the evaluation point,
# jit-ed (`jit_batch_moments`).
MomentsFn = Callable[[Any, dict[str, jax.Array]], dict[str, Any]]


def jit_batch_moments(task, mesh) -> MomentsFn:
  """(state, batch) -> `task.batch_moments` at the evaluation point
  (`optimizers.eval_params`), jit-ed with the state replicated over `mesh`
  and the batch's `task.device_keys` split over its `data` axis."""
  return jax.jit(
      lambda s, b: task.batch_moments(
          s.variables(optimizers.eval_params(s)), b
      ),
      in_shardings=(
          sharding.replicated(mesh),
          sharding.batch_shardings(mesh, task.device_keys),
      ),
      out_shardings=sharding.replicated(mesh),
  )


def recompute_batch_stats(
    state,
    batches: Iterable[dict[str, np.ndarray]],
    *,
    device_keys: tuple[str, ...],
    mesh,
    jit_moments: MomentsFn,
    check_stop: Callable[[], None] = lambda: None,
):
  """`state` (a `train.TrainState`) with BatchNorm statistics recomputed at
  the evaluation point: the population mean and variance of `batches`.

  Each batch goes through the model in training mode at x (`jit_moments`:
  no dropout, every quantizer, no codebook update); the K batches' moments
  are then pooled with equal weights (mean = mean of the batch means,
  variance = mean of the batch variances + variance of the batch means)
  rather than run through each layer's momentum, so the result does not
  depend on which batch came last. Params, the other collections and the
  optimizer state are unchanged.

  Raises:
    errors.UserError: `batches` is empty.
    RuntimeError: the layers with moments are not those with statistics, or
      a layer ran more than once in a pass.
    preemption.Preempted: from `check_stop`, called before each batch.
  """
  moments = []
  for batch in batches:
    check_stop()
    out = jit_moments(state, sharding.to_global(batch, mesh, device_keys))
    moments.append(
        traverse_util.flatten_dict(
            jax.tree.map(
                lambda x: np.asarray(sharding.local_value(x), np.float64), out
            )
        )
    )
  if not moments:
    raise errors.UserError(
        "no batches to recompute the BatchNorm statistics on"
    )
  old = traverse_util.flatten_dict(state.collections["batch_stats"])
  if set(old) != set(moments[0]):
    raise RuntimeError(
        "BatchNorm layers with moments differ from those with "
        f"statistics: {sorted(set(old) ^ set(moments[0]))}"
    )
  new = {}
  for path in old:
    if any(len(m[path]) != 1 for m in moments):
      raise RuntimeError(
          f"BatchNorm layer {'/'.join(path[:-1])} ran more than "
          "once in a pass; its statistics are ambiguous"
      )
    values = np.stack([m[path][0] for m in moments])  # [K, C]
    if path[-1] == "mean":
      new[path] = values.mean(0)
    else:
      means = np.stack([m[path[:-1] + ("mean",)][0] for m in moments])
      new[path] = values.mean(0) + means.var(0)
  new = jax.tree.map(
      lambda o, n: jnp.asarray(n, o.dtype),
      state.collections["batch_stats"],
      traverse_util.unflatten_dict(new),
  )
  return state.replace(
      collections=dict(
          state.collections,
          batch_stats=jax.device_put(new, sharding.replicated(mesh)),
      )
  )


def make(
    config: ml_collections.ConfigDict,
    task,
    state,
    train_source: pipeline.Source,
    mesh,
    check_stop: Callable[[], None] = lambda: None,
):
  """state -> state at the evaluation point: `recompute_batch_stats` over
  the first `train.bn_batches` batches (at most an epoch) of a training
  stream of its own (seed + 1), so the same batches every time and the
  training stream and its checkpointed position untouched. The identity
  when the model has no BatchNorm or `train.bn_batches` is 0 (the training
  point's running statistics). `task`: the run's `tasks.base.Task`."""
  t = config.train
  if "batch_stats" not in state.collections or t.bn_batches <= 0:
    return lambda s: s
  stream = datasets.train_stream(config, train_source, seed=config.seed + 1)
  num_batches = min(
      t.bn_batches,
      pipeline.steps_per_epoch(train_source, t.batch_size, train=True),
  )
  jit_moments = jit_batch_moments(task, mesh)
  return lambda s: recompute_batch_stats(
      s,
      itertools.islice(iter(stream), num_batches),
      device_keys=task.device_keys,
      mesh=mesh,
      jit_moments=jit_moments,
      check_stop=check_stop,
  )
