"""The train loop every experiment shares (tokenizer, translator, probe, LM).

One code path for 1 or N devices and hosts: the global batch is sharded on the
mesh's `data` axis, the state is replicated, and `jax.jit` with shardings does
the rest. Resuming restores the train state and the grain iterator together,
so a resumed run sees exactly the batches it would have seen.

An experiment supplies a `asl_vq.tasks.base.Task`: its variables, its loss,
and its evaluation.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any, Sequence

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from asl_vq import checkpointing
from asl_vq import cli
from asl_vq import errors
from asl_vq import fileio
from asl_vq import metric_writers
from asl_vq import plotting
from asl_vq import progress
from asl_vq import sharding
from asl_vq import workdir as workdir_lib
from asl_vq.data import pipeline

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


OPTIMIZERS = ("schedule_free_adamw", "adamw")


def learning_rate_schedule(
    train_config: ml_collections.ConfigDict, train_size: int
) -> optax.Schedule:
  """The learning rate of each update: `learning_rate` after a warm-up.

  `warmup_epochs` > 0 is the reference's warm-up (main.py:
  `get_constant_schedule_with_warmup(warmup_epochs)` stepped after every
  update with `scheduler.step(epoch + ix / len(loader.dataset))`): update c
  (counted from 0) uses peak * min(1, (e + i / N) / warmup_epochs), where
  update c - 1 was batch i of epoch e and N = `train_size`, the number of
  training sequences (not batches), and update 0 uses 0. Within an epoch
  the rate thus climbs by only batches / N of a step: it rises by one step
  per epoch, and epoch 0 trains at almost 0. `warmup_steps` > 0 is a
  linear warm-up over updates instead (optax's `warmup_constant_schedule`);
  both 0: constant.

  Args:
    train_config: the config's `train` block (learning_rate, batch_size,
      warmup_steps, warmup_epochs).
    train_size: the training split's number of sequences (epochs count
      `train_size // batch_size` updates, as the input pipeline).

  Raises:
    ValueError: both warm-ups set, or a warm-up in epochs with fewer
      sequences than a batch.
  """
  t = train_config
  peak, epochs = t.learning_rate, float(t.warmup_epochs)
  if epochs > 0 and t.warmup_steps > 0:
    raise errors.UserError(
        f"train.warmup_epochs={epochs} and train.warmup_steps="
        f"{t.warmup_steps}: set one of them, the other to 0"
    )
  if epochs > 0:
    steps_per_epoch = train_size // t.batch_size
    if steps_per_epoch < 1:
      raise errors.UserError(
          f"train.warmup_epochs={epochs} with {train_size} "
          f"training sequences, fewer than a batch of "
          f"{t.batch_size}"
      )

    def schedule(count):
      done = jnp.asarray(count, jnp.int32) - 1  # the update before this one
      progress = done // steps_per_epoch + (done % steps_per_epoch) / train_size
      return peak * jnp.clip(progress / epochs, 0.0, 1.0)

    return schedule
  if t.warmup_steps > 0:
    return optax.schedules.warmup_constant_schedule(0.0, peak, t.warmup_steps)
  # (optax's warm-up over 0 steps stays at its initial value, 0.)
  return optax.schedules.constant_schedule(peak)


def make_optimizer(config: ml_collections.ConfigDict, train_size: int):
  """Global-norm clipping, then `train.optimizer`: schedule-free AdamW (the
  tokenizer's, as the reference) or AdamW (the paper's LM: AdamW at 3e-4),
  both at `learning_rate_schedule(config.train, train_size)`.

  `train_size` is the training split's number of sequences; where only the
  optimizer state's structure matters (restoring a checkpoint for
  inference), any positive value will do.

  Raises:
    ValueError: an unknown `train.optimizer`, or a bad warm-up
      (`learning_rate_schedule`).
  """
  t = config.train
  schedule = learning_rate_schedule(t, train_size)
  if t.optimizer == "schedule_free_adamw":
    update = optax.contrib.schedule_free_adamw(
        learning_rate=schedule, weight_decay=t.weight_decay
    )
  elif t.optimizer == "adamw":
    update = optax.adamw(schedule, weight_decay=t.weight_decay)
  else:
    raise errors.UserError(
        f"train.optimizer={t.optimizer!r}: one of " f"{', '.join(OPTIMIZERS)}"
    )
  return optax.chain(optax.clip_by_global_norm(t.grad_clip), update)


def eval_params(state: TrainState):
  """The parameters to evaluate: schedule-free's evaluation point x (not the
  gradient point y), or the parameters themselves for other optimizers."""
  if isinstance(state.opt_state[1], optax.contrib.ScheduleFreeState):
    return optax.contrib.schedule_free_eval_params(
        state.opt_state[1], state.params
    )
  return state.params


def init_state(task: Task, tx, rng) -> TrainState:
  variables = task.init_variables(rng)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      collections={k: v for k, v in variables.items() if k != "params"},
      opt_state=tx.init(params),
      nonfinite_step=jnp.full((), -1, jnp.int32),
  )


def train_step(state: TrainState, batch, *, task: Task, tx, base_rng):
  """One update; a non-finite loss or gradient leaves the state as it was."""
  rng = jax.random.fold_in(base_rng, state.step)

  def loss_fn(params):
    loss, metrics, updates = task.loss(params, state, batch, rng)
    return loss, (metrics, updates)

  (loss, (metrics, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
  )
  param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
  grad_norm = optax.tree.norm(grads)
  new = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, param_updates),
      collections={k: updates.get(k, v) for k, v in state.collections.items()},
      opt_state=opt_state,
  )
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  new = jax.tree.map(
      lambda a, b: jnp.where(finite, a, b),
      new,
      state.replace(step=state.step + 1),
  )
  new = new.replace(
      nonfinite_step=jnp.where(
          (~finite) & (state.nonfinite_step < 0),
          state.step,
          state.nonfinite_step,
      )
  )
  return new, dict(metrics, loss=loss, grad_norm=grad_norm)


def eval_step(state: TrainState, batch, *, task: Task):
  return task.eval_batch(state.variables(eval_params(state)), batch)


def recompute_batch_stats(
    state: TrainState, batches, *, task: Task, mesh, jit_moments, stop=None
) -> TrainState:
  """`state` with BatchNorm statistics recomputed at the schedule-free
  evaluation point: the population mean and variance of training batches.

  The running statistics gathered while training belong to the gradient
  point y (and, at momentum 0.05, mostly to the last batch); evaluation uses
  x. As the reference does before every validation, each batch goes through
  the model in training mode at x (`Task.batch_moments`: no dropout, every
  quantizer, no codebook update); here the K batches' moments are then
  pooled with equal weights (mean = mean of the batch means, variance = mean
  of the batch variances + variance of the batch means) rather than run
  through each layer's momentum, so the result does not depend on which
  batch came last. Params, the other collections and the optimizer state
  are unchanged.

  Raises:
    ValueError: `batches` is empty, or the layers with moments are not those
      with statistics.
    Preempted: `stop()` became true (checked before each batch).
  """
  moments = []
  for batch in batches:
    _check_stop(stop)
    out = jit_moments(state, sharding.to_global(batch, mesh, task.device_keys))
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


class Preempted(cli.Stopped):
  """A SIGTERM (or Ctrl-C) asked the run to stop: raised inside an
  evaluation, and by `fit` once the step is saved, so that a caller running
  several stages (`asl_vq.experiments.paper_tables`) stops too instead of
  going on from a part-trained stage; a command then exits 0 (130 after
  Ctrl-C: `cli.run`)."""


def _check_stop(stop) -> None:
  if stop is not None and stop():
    raise Preempted()


def evaluate(
    state: TrainState,
    dataset,
    *,
    task: Task,
    mesh,
    jit_eval,
    max_batches: int = -1,
    stop=None,
) -> dict[str, float]:
  """One pass over `dataset`: summed statistics and host-side records.

  Raises:
    Preempted: `stop()` became true (checked before each batch).
  """
  sums, records = None, []
  for i, batch in enumerate(dataset):
    if 0 <= max_batches <= i:
      break
    _check_stop(stop)
    gbatch = sharding.to_global(batch, mesh, task.eval_keys)
    s, outputs = jit_eval(state, gbatch)
    s = jax.tree.map(
        lambda x: np.asarray(sharding.local_value(x), np.float64), s
    )
    sums = s if sums is None else jax.tree.map(np.add, sums, s)
    host = {k: sharding.gather(gbatch[k]) for k in _HOST_KEYS if k in gbatch}
    records.extend(task.eval_host(jax.tree.map(sharding.gather, outputs), host))
  return task.eval_metrics(sums, records)


class _Preemption:
  """SIGTERM or Ctrl-C -> save and exit cleanly (multi-host: JAX's sync
  point, SIGTERM only).

  One process: the handler only sets a flag, read after every training
  step and before every evaluation batch, so the run saves within one step
  (or one evaluation batch) plus one checkpoint write. A second Ctrl-C stops
  at once (KeyboardInterrupt; the steps since the last save are lost).
  Several processes: JAX's preemption sync point, read after every step (an
  evaluation in progress finishes first).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested, self.since, self.signal = False, None, "SIGTERM"
    self._previous = {}
    if jax.process_count() == 1:
      self._previous = {
          s: signal.signal(s, self._handler) for s in self.SIGNALS
      }

  def close(self) -> None:
    """Gives the signals back to the handlers they had before."""
    for s, previous in self._previous.items():
      signal.signal(s, previous)

  def _handler(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now.
    self.requested, self.since = True, time.monotonic()
    self.signal = signal.Signals(signum).name

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested


def fit(
    config: ml_collections.ConfigDict,
    workdir: str,
    task: Task,
    train_source: pipeline.Source,
    val_source: pipeline.Source,
    test_source: pipeline.Source | None = None,
    format_eval=None,
) -> dict[str, float]:
  """Trains `task` for `config.train.num_epochs`, resuming from `workdir`.

  Returns the last validation metrics; with a `test_source`, the best
  checkpoint (by validation loss) is then scored on it and the result is
  returned instead and written to `<workdir>/test_metrics.json` (a finished
  run called again returns that file's metrics without scoring again).

  Raises:
    ValueError: `workdir` holds a run of another config
      (`workdir.check_resume`).
    workdir.StaleInputs: `workdir` holds a run made from other inputs (each
      source's `origin`, saved in `<workdir>/inputs.json`).
    Preempted: a SIGTERM arrived; the step reached is saved (the same call
      resumes from it).
  """
  format_eval = format_eval or format_metrics
  inputs = {
      name: source.origin
      for name, source in (
          ("train", train_source),
          ("validation", val_source),
          ("test", test_source),
      )
      if source is not None
  }
  workdir = workdir_lib.write_config(config, workdir, inputs)
  mesh = sharding.make_mesh()
  t = config.train
  sharding.check_batch_size(t.batch_size, mesh)
  sharding.check_batch_size(t.eval_batch_size, mesh)
  train_ds = _training_stream(config, train_source, seed=config.seed)
  eval_ds = functools.partial(
      pipeline.make_dataset,
      global_batch_size=t.eval_batch_size,
      seed=config.seed,
      train=False,
      **_pipeline_args(config),
  )
  val_ds = eval_ds(val_source)
  steps_per_epoch = pipeline.steps_per_epoch(
      train_source, t.batch_size, train=True
  )
  total_steps = steps_per_epoch * t.num_epochs

  tx = make_optimizer(config, len(train_source))
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  repl = sharding.replicated(mesh)
  state = jax.jit(functools.partial(init_state, task, tx), out_shardings=repl)(
      init_rng
  )
  if jax.process_index() == 0:
    summary = task.summary()
    logging.info("parameters: %s", summary)
    print("parameters:", json.dumps(summary), flush=True)

  ckpts = checkpointing.Checkpoints(
      workdir, keep_latest=t.keep_checkpoints, async_saves=t.async_checkpoints
  )
  train_iter = iter(train_ds)
  if ckpts.latest_step() is not None:
    state = ckpts.restore_latest(state, train_iter)
    if jax.process_index() == 0:
      print(
          f"resumed from step {int(sharding.local_value(state.step))}",
          flush=True,
      )
  start = int(sharding.local_value(state.step))
  finished = fileio.read_json(os.path.join(workdir, "test_metrics.json"))
  if start >= total_steps and test_source is not None and finished:
    ckpts.close()  # same config and inputs (`workdir.check_resume`).
    if jax.process_index() == 0:
      print(
          "finished; test (best checkpoint): " + format_eval(finished),
          flush=True,
      )
    return finished

  jit_train = jit_train_step(task, tx, mesh, step_rng)
  jit_eval = jax.jit(
      functools.partial(eval_step, task=task),
      in_shardings=(repl, _batch_sharding(task.eval_keys, mesh)),
      out_shardings=repl,
  )
  preemption = _Preemption()
  stop = lambda: preemption.requested
  at_eval_point = eval_point(config, task, state, train_source, mesh, stop)

  writer = metric_writers.MetricWriter(workdir)
  bar = progress.Progress(total_steps, start)
  pending, val, preempted = [], {}, False

  def evaluates(done: int) -> bool:
    return (
        done % steps_per_epoch == 0
        and (done // steps_per_epoch) % t.eval_every_epochs == 0
        or done == total_steps
    )

  def validate(done: int) -> dict[str, float]:
    """Evaluated and kept as `best` with the BatchNorm statistics of the
    evaluation point; training goes on from `state`. Raises `Preempted`."""
    eval_state = at_eval_point(state)
    val = evaluate(
        eval_state,
        val_ds,
        task=task,
        mesh=mesh,
        jit_eval=jit_eval,
        max_batches=t.max_eval_batches,
        stop=stop,
    )
    writer.write(done, "validation", val)
    bar.message(f"epoch {done // steps_per_epoch}: val " + format_eval(val))
    ckpts.save_best(done, eval_state, {"loss": val["loss"]})
    return val

  def save_and_stop(done: int) -> None:
    """Within the notice: the step's state, no evaluation first (a resumed
    run does it first)."""
    saving = time.monotonic()
    check_finite(state, ckpts)
    ckpts.save_latest(done, state, train_iter, wait=True)
    now = time.monotonic()
    since = (
        f", {now - preemption.since:.1f} s after {preemption.signal}"
        if preemption.since is not None
        else ""
    )
    bar.message(
        f"preempted: saved step {done} in {now - saving:.1f} s"
        f"{since}; run the same command to resume"
    )

  try:
    try:
      if start and evaluates(start) and not ckpts.has_best(start):
        val = validate(start)  # preempted at this step before evaluating.
    except Preempted:
      preempted = True  # the state at `start` is saved already.
    for step in range(start, start if preempted else total_steps):
      batch = sharding.to_global(next(train_iter), mesh, task.device_keys)
      state, m = jit_train(state, batch)
      if pending:
        # At most two steps in flight: a notice waits for one step before
        # its save (not for every step queued since the last log), and the
        # bar's steps/s and ETA are the device's.
        jax.block_until_ready(pending[-1])
      pending.append(m)
      done = step + 1
      bar.update(done)  # every step, no host sync: steps/s and ETA.
      epoch_end = done % steps_per_epoch == 0
      log = done % t.log_every_steps == 0 or epoch_end or done == total_steps
      save = (
          done % t.checkpoint_every_steps == 0
          or epoch_end
          or done == total_steps
      )
      preempted = preemption.reached(done)
      if log or save:
        check_finite(state, ckpts)  # one host sync; nothing broken is saved.
      if log:
        pending = jax.tree.map(sharding.local_value, pending)
        avg = {k: float(np.mean([x[k] for x in pending])) for k in pending[0]}
        pending = []
        writer.write(done, "train", avg)
        bar.update(done, avg["loss"])
      if not preempted and evaluates(done):
        try:
          val = validate(done)
        except Preempted:
          preempted = True
      if preempted:
        save_and_stop(done)
        break
      if save:
        ckpts.save_latest(done, state, train_iter)
    if test_source is not None and not preempted:
      bar.message("scoring the best checkpoint on the test split ...")
      try:
        val = evaluate(
            ckpts.restore_best(state),
            eval_ds(test_source),
            task=task,
            mesh=mesh,
            jit_eval=jit_eval,
            stop=stop,
        )
      except Preempted:  # every step is saved: a rerun scores the test.
        preempted = True
        bar.message(
            "preempted before the test score; run the same command "
            "to score it"
        )
      else:
        writer.write(total_steps, "test", val)
        bar.message("test (best checkpoint): " + format_eval(val))
        if jax.process_index() == 0:
          fileio.write_json(os.path.join(workdir, "test_metrics.json"), val)
  finally:
    preemption.close()
    bar.close()
    writer.close()
    ckpts.close()
  if preempted:  # no figures: the notice is short.
    raise Preempted(
        f"{workdir}: preempted; run the same command to resume",
        exit_code=130 if preemption.signal == "SIGINT" else 0,
    )
  if jax.process_index() == 0:
    plotting.plot_learning_curves(workdir, task.curves)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("asl_vq: training done")
  return val


def _pipeline_args(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`pipeline.make_dataset`'s arguments every stream of a run shares."""
  return dict(
      max_len=config.data.max_len,
      resample_method=config.data.resample,
      normalization=config.data.normalization,
      max_label_len=config.data.max_label_len,
      buckets=tuple(config.data.buckets) or None,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )


def _training_stream(
    config: ml_collections.ConfigDict, source: pipeline.Source, seed: int
):
  """Shuffled, augmented training batches of `source` (`pipeline.make_dataset`
  with `train=True`)."""
  return pipeline.make_dataset(
      source,
      global_batch_size=config.train.batch_size,
      seed=seed,
      train=True,
      flip_prob=config.data.flip_prob,
      length_grouping=config.data.length_grouping,
      **_pipeline_args(config),
  )


def eval_point(
    config: ml_collections.ConfigDict,
    task: Task,
    state: TrainState,
    train_source: pipeline.Source,
    mesh,
    stop=None,
):
  """state -> state at the evaluation point (`recompute_batch_stats` over
  the first `train.bn_batches` batches, at most an epoch, of a training
  stream of its own: the same batches every time, and the training stream
  and its checkpointed position untouched); the identity when the model has
  no BatchNorm or `train.bn_batches` is 0 (the training point's running
  statistics). `stop`: see `recompute_batch_stats`."""
  t = config.train
  if "batch_stats" not in state.collections or t.bn_batches <= 0:
    return lambda s: s
  stream = _training_stream(config, train_source, seed=config.seed + 1)
  num_batches = min(
      t.bn_batches,
      pipeline.steps_per_epoch(train_source, t.batch_size, train=True),
  )
  jit_moments = jit_batch_moments(task, mesh)
  return lambda s: recompute_batch_stats(
      s,
      itertools.islice(iter(stream), num_batches),
      task=task,
      mesh=mesh,
      jit_moments=jit_moments,
      stop=stop,
  )


def _batch_sharding(keys: tuple[str, ...], mesh) -> dict[str, Any]:
  return {k: sharding.data_sharding(mesh) for k in keys}


def jit_train_step(task: Task, tx, mesh, base_rng):
  """`train_step` jit-ed as `fit` runs it: (state, batch) -> (state,
  metrics), the state replicated over `mesh` and donated (the input state's
  buffers are invalid after the call), the batch's `task.device_keys` split
  over its `data` axis (`sharding.to_global`)."""
  repl = sharding.replicated(mesh)
  return jax.jit(
      functools.partial(train_step, task=task, tx=tx, base_rng=base_rng),
      in_shardings=(repl, _batch_sharding(task.device_keys, mesh)),
      out_shardings=(repl, repl),
      donate_argnums=(0,),
  )


def jit_batch_moments(task: Task, mesh):
  """(state, batch) -> `task.batch_moments` at the evaluation point
  (`eval_params`), jit-ed as `eval_point` runs it (shardings as
  `jit_train_step`'s, nothing donated): `recompute_batch_stats`'s
  `jit_moments`."""
  repl = sharding.replicated(mesh)
  return jax.jit(
      lambda s, batch: task.batch_moments(s.variables(eval_params(s)), batch),
      in_shardings=(repl, _batch_sharding(task.device_keys, mesh)),
      out_shardings=repl,
  )


def check_finite(state: TrainState, ckpts: checkpointing.Checkpoints) -> None:
  bad = int(sharding.local_value(state.nonfinite_step))
  if bad >= 0:
    raise FloatingPointError(
        f"the loss or its gradient was not finite at step {bad}; the update "
        f"was skipped and nothing after it saved (last checkpoint: step "
        f"{ckpts.latest_step()}). Lower train.learning_rate or check the data."
    )


def format_metrics(
    val: dict[str, float],
    keys: Sequence[str] = (
        "loss",
        "score",
        "accuracy",
        "majority_accuracy",
        "balanced_accuracy",
    ),
) -> str:
  return " ".join(f"{k} {val[k]:.4g}" for k in keys if k in val)
