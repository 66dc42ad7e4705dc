"""The train loop every experiment (a `asl_vq.tasks.base.Task`) shares.

One code path for 1 or N devices and hosts: the global batch is sharded on
the mesh's `data` axis, the state replicated. Resuming restores the state
and the grain iterator together: a resumed run sees the batches it would
have seen.
"""

from __future__ import annotations

import functools
import json
import os
from typing import TYPE_CHECKING, Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from asl_vq import checkpointing
from asl_vq import eval_point
from asl_vq import fileio
from asl_vq import metric_writers
from asl_vq import optimizers
from asl_vq import plotting
from asl_vq import preemption
from asl_vq import progress
from asl_vq import sharding
from asl_vq import workdir as workdir_lib
from asl_vq.data import datasets
from asl_vq.data import pipeline
from asl_vq.data import splits as splits_lib

if TYPE_CHECKING:
  from asl_vq.tasks.base import Task

# Batch entries `Task.eval_host` sees (gathered from every host).
_HOST_KEYS = ("input_mask", "labels", "label_mask", "example_mask")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  # The model's other variable collections ('batch_stats' of BatchNorm, the
  # RVQ's 'vq', ...), as `Task.init_variables` returns them; {} when none.
  collections: dict[str, Any]
  opt_state: Any
  # The first step whose loss was not finite (-1: none). Such a step leaves
  # the state untouched, so nothing broken is ever saved.
  nonfinite_step: jax.Array

  def variables(self, params=None) -> dict[str, Any]:
    """For `model.apply`: the params and the model's collections."""
    return {
        "params": self.params if params is None else params,
        **self.collections,
    }


def init_state(init_variables, tx, rng) -> TrainState:
  """Step 0: `init_variables(rng)` (a model's {'params': ..., and its
  other collections}, e.g. `Task.init_variables`) and `tx`'s state."""
  variables = init_variables(rng)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      collections={k: v for k, v in variables.items() if k != "params"},
      opt_state=tx.init(params),
      nonfinite_step=jnp.full((), -1, jnp.int32),
  )


def train_step(state: TrainState, batch, *, loss_fn, tx, base_rng):
  """One update of `loss_fn(params, state, batch, rng)` -> (loss, metrics,
  updated collections) (`Task.loss`); a non-finite loss or gradient leaves
  the state as it was."""
  rng = jax.random.fold_in(base_rng, state.step)

  def loss_and_updates(params):
    loss, metrics, updates = loss_fn(params, state, batch, rng)
    return loss, (metrics, updates)

  (loss, (metrics, updates)), grads = jax.value_and_grad(
      loss_and_updates, has_aux=True
  )(state.params)
  param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
  grad_norm = optax.tree.norm(grads)
  new = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, param_updates),
      collections={k: updates.get(k, v) for k, v in state.collections.items()},
      opt_state=opt_state,
  )
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  skipped = state.replace(step=state.step + 1)
  new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, skipped)
  first = (~finite) & (state.nonfinite_step < 0)
  bad = jnp.where(first, state.step, state.nonfinite_step)
  return new.replace(nonfinite_step=bad), dict(
      metrics, loss=loss, grad_norm=grad_norm
  )


def eval_step(state: TrainState, batch, *, task: Task):
  return task.eval_batch(state.variables(optimizers.eval_params(state)), batch)


class Evaluator:
  """Scores a state on a dataset: `task.eval_batch` (jit-ed, the batch's
  `task.eval_keys` split over `mesh`'s `data` axis) summed over its
  batches, with `task.eval_host`'s records, into `task.eval_metrics`.
  `check_stop` is called before each batch (`Preemption.check`).
  """

  def __init__(self, task: Task, mesh, check_stop=lambda: None):
    self.task, self.mesh, self.check_stop = task, mesh, check_stop
    repl = sharding.replicated(mesh)
    self.jit_eval = jax.jit(
        functools.partial(eval_step, task=task),
        in_shardings=(repl, sharding.batch_shardings(mesh, task.eval_keys)),
        out_shardings=repl,
    )

  def __call__(
      self, state: TrainState, dataset, max_batches: int = -1
  ) -> dict[str, float]:
    """The metrics of one pass over `dataset` (its first `max_batches`
    batches; -1: all).

    Raises:
      preemption.Preempted: from `check_stop`.
    """
    task, sums, records = self.task, None, []
    for i, batch in enumerate(dataset):
      if 0 <= max_batches <= i:
        break
      self.check_stop()
      gbatch = sharding.to_global(batch, self.mesh, task.eval_keys)
      s, outputs = self.jit_eval(state, gbatch)
      s = jax.tree.map(
          lambda x: np.asarray(sharding.local_value(x), np.float64), s
      )
      sums = s if sums is None else jax.tree.map(np.add, sums, s)
      host = {k: sharding.gather(gbatch[k]) for k in _HOST_KEYS if k in gbatch}
      outputs = jax.tree.map(sharding.gather, outputs)
      records.extend(task.eval_host(outputs, host))
    return task.eval_metrics(sums, records)


def itstime(done: int, every: int, total: int, epoch: int = 0) -> bool:
  """Whether a periodic action is due after step `done` (counted from 1):
  every `every` steps (<= 0: never), at each end of an epoch of `epoch`
  steps (0: no), and after the last step, `total` (big_vision's `itstime`).
  """
  return (
      (every > 0 and done % every == 0)
      or (epoch > 0 and done % epoch == 0)
      or done == total
  )


def fit(
    config: ml_collections.ConfigDict,
    workdir: str,
    task: Task,
    splits: dict[str, pipeline.Source],
) -> dict[str, float]:
  """Trains `task` on `splits['train']` for `config.train.num_epochs`,
  resuming from `workdir`.

  Steps are logged, saved and evaluated on `splits['validation']` (the best
  checkpoint: lowest validation loss) when `itstime`; a stop is checked
  after every step. Returns the last validation metrics or, with a
  `splits['test']`, the best checkpoint's on it (also written to
  `<workdir>/test_metrics.json`, which a finished run called again returns).

  Raises:
    errors.UserError: `workdir` holds a run of another config or inputs
      (`workdir.check_resume`, `workdir.StaleInputs`).
    FloatingPointError: a non-finite loss (`check_finite`).
    preemption.Preempted: a SIGTERM or Ctrl-C; the step reached is saved.
  """
  t, train_source = config.train, splits["train"]
  origins = {k: splits[k].origin for k in splits_lib.SPLITS if k in splits}
  workdir = workdir_lib.write_config(config, workdir, origins)
  mesh = sharding.make_mesh()
  tx = optimizers.make_optimizer(config, len(train_source))
  epoch = pipeline.steps_per_epoch(train_source, t.batch_size, train=True)
  total, eval_every = epoch * t.num_epochs, epoch * t.eval_every_epochs
  state, ckpts, train_iter = _start(
      config, workdir, task, tx, mesh, train_source
  )
  start = int(sharding.local_value(state.step))
  test_source = splits.get("test")
  finished = fileio.read_json(os.path.join(workdir, "test_metrics.json"))
  if start >= total and test_source is not None and finished:
    ckpts.close()  # same config and inputs (`workdir.check_resume`).
    _say("finished; test (best checkpoint): " + task.format_eval(finished))
    return finished

  step_rng = jax.random.split(jax.random.PRNGKey(config.seed))[1]
  jit_train = jit_train_step(task.loss, task.device_keys, tx, mesh, step_rng)
  stop = preemption.Preemption()
  score = Evaluator(task, mesh, stop.check)
  at_eval_point = eval_point.make(
      config, task, state, train_source, mesh, stop.check
  )
  val_ds = datasets.eval_stream(config, splits["validation"])
  writer = metric_writers.MetricWriter(workdir)
  bar = progress.Progress(total, start)

  def validate(state, done: int) -> dict[str, float]:
    eval_state = at_eval_point(state)
    val = score(eval_state, val_ds, t.max_eval_batches)
    writer.write(done, "validation", val)
    bar.message(f"epoch {done // epoch}: val " + task.format_eval(val))
    ckpts.save_best(done, eval_state, {"loss": val["loss"]})
    return val

  val, pending, done = {}, [], start
  with stop:  # until the save after a stop is done.
    try:
      if start and itstime(start, eval_every, total):
        if not ckpts.has_best(start):  # stopped before evaluating it.
          val = validate(state, start)
      for done in range(start + 1, total + 1):
        batch = sharding.to_global(next(train_iter), mesh, task.device_keys)
        state, metrics = jit_train(state, batch)
        if pending:  # at most two steps in flight: a notice waits for one.
          jax.block_until_ready(pending[-1])
        pending.append(metrics)
        bar.update(done)  # every step, no host sync: steps/s and ETA.
        log = itstime(done, t.log_every_steps, total, epoch)
        save = itstime(done, t.checkpoint_every_steps, total, epoch)
        if log or save:
          check_finite(state, ckpts)  # one host sync; nothing broken saved.
        if log:
          pending = _log(writer, bar, done, pending)
        stop.check(done)
        if itstime(done, eval_every, total):
          val = validate(state, done)
        if save:
          ckpts.save_latest(done, state, train_iter)
      if test_source is not None:
        bar.message("scoring the best checkpoint on the test split ...")
        test_ds = datasets.eval_stream(config, test_source)
        val = score(ckpts.restore_best(state), test_ds)
        writer.write(total, "test", val)
        bar.message("test (best checkpoint): " + task.format_eval(val))
        if jax.process_index() == 0:
          fileio.write_json(os.path.join(workdir, "test_metrics.json"), val)
    except preemption.Preempted:
      check_finite(state, ckpts)
      raise stop.save(
          workdir, done, state, ckpts, train_iter, bar.message
      ) from None
    finally:
      for resource in (bar, writer, ckpts):
        resource.close()
  _finish(workdir, task)
  return val


def _start(
    config: ml_collections.ConfigDict,
    workdir: str,
    task: Task,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    train_source: pipeline.Source,
) -> tuple[TrainState, checkpointing.Checkpoints, Any]:
  """The initial (or restored) state, replicated over `mesh`, the run's
  checkpoints and its training stream's iterator (restored with the state).
  """
  for size in (config.train.batch_size, config.train.eval_batch_size):
    sharding.check_batch_size(size, mesh)
  init_rng = jax.random.split(jax.random.PRNGKey(config.seed))[0]
  state = jax.jit(
      functools.partial(init_state, task.init_variables, tx),
      out_shardings=sharding.replicated(mesh),
  )(init_rng)
  if jax.process_index() == 0:
    summary = task.summary()
    logging.info("parameters: %s", summary)
    _say("parameters: " + json.dumps(summary))
  ckpts = checkpointing.Checkpoints(
      workdir,
      keep_latest=config.train.keep_checkpoints,
      async_saves=config.train.async_checkpoints,
  )
  train_iter = iter(
      datasets.train_stream(config, train_source, seed=config.seed)
  )
  if ckpts.latest_step() is not None:
    state = ckpts.restore_latest(state, train_iter)
    step = int(sharding.local_value(state.step))
    _say(f"resumed from step {step}")
  return state, ckpts, train_iter


def _say(line: str) -> None:
  if jax.process_index() == 0:
    print(line, flush=True)


def _log(writer, bar, done: int, pending: list[dict[str, jax.Array]]) -> list:
  """Writes the mean of each training metric over the `pending` steps'
  (one host sync) and shows the loss; returns no pending steps."""
  pending = jax.tree.map(sharding.local_value, pending)
  avg = {k: float(np.mean([m[k] for m in pending])) for k in pending[0]}
  writer.write(done, "train", avg)
  bar.update(done, avg["loss"])
  return []


def _finish(workdir: str, task: Task) -> None:
  """After a whole run: the learning curves (process 0), then every
  process waits for the others."""
  if jax.process_index() == 0:
    plotting.plot_learning_curves(workdir, task.curves)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("asl_vq: training done")


def jit_train_step(loss_fn, device_keys, tx, mesh, base_rng):
  """`train_step` of `loss_fn` (`Task.loss`'s signature) jit-ed as `fit`
  runs it: (state, batch) -> (state, metrics), the state replicated over
  `mesh` and donated (the input state's buffers are invalid after the
  call), the batch's `device_keys` split over its `data` axis
  (`sharding.to_global`)."""
  repl = sharding.replicated(mesh)
  return jax.jit(
      functools.partial(train_step, loss_fn=loss_fn, tx=tx, base_rng=base_rng),
      in_shardings=(repl, sharding.batch_shardings(mesh, device_keys)),
      out_shardings=(repl, repl),
      donate_argnums=(0,),
  )


def check_finite(state: TrainState, ckpts: checkpointing.Checkpoints) -> None:
  """Raises FloatingPointError if a step's loss or gradient was not finite
  (`TrainState.nonfinite_step`); one host sync."""
  bad = int(sharding.local_value(state.nonfinite_step))
  if bad >= 0:
    raise FloatingPointError(
        f"the loss or its gradient was not finite at step {bad}; the update "
        f"was skipped and nothing after it saved (last checkpoint: step "
        f"{ckpts.latest_step()}). Lower train.learning_rate or check the data."
    )
