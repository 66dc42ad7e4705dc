"""Training and evaluation of the tokenizer (encoder -> RVQ -> CTC, decoder).

One code path for 1 or N devices and hosts: the global batch is sharded on the
mesh's `data` axis, the state is replicated, and `jax.jit` with shardings does
the rest. Resuming restores the train state and the grain iterator together.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from asl_vq import checkpointing
from asl_vq import losses
from asl_vq import metric_writers
from asl_vq import metrics as metrics_lib
from asl_vq import progress
from asl_vq import sharding
from asl_vq import vocab
from asl_vq.data import datasets
from asl_vq.data import pipeline
from asl_vq.models import tokenizer as tokenizer_lib

DEVICE_KEYS = ("inputs", "input_mask", "labels", "label_paddings",
               "example_mask")
CURVES = ("loss", "recon", "ctc", "commit", "score", "perplexity_q0",
          "usage_q0")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  vq: Any
  opt_state: Any
  # The first step whose loss was not finite (-1: none). Such a step leaves
  # the state untouched, so nothing broken is ever saved.
  nonfinite_step: jax.Array


def model_config(config: ml_collections.ConfigDict
                 ) -> tokenizer_lib.TokenizerConfig:
  return tokenizer_lib.TokenizerConfig(**config.model.to_dict())


def make_model(config: ml_collections.ConfigDict):
  return tokenizer_lib.TokenizerModel(model_config(config))


def make_optimizer(config: ml_collections.ConfigDict):
  t = config.train
  return optax.chain(
      optax.clip_by_global_norm(t.grad_clip),
      optax.contrib.schedule_free_adamw(
          learning_rate=t.learning_rate, warmup_steps=t.warmup_steps,
          weight_decay=t.weight_decay))


def eval_params(state: TrainState):
  """The schedule-free evaluation parameters (x, not the gradient point y)."""
  return optax.contrib.schedule_free_eval_params(state.opt_state[1],
                                                 state.params)


def init_state(model, tx, rng, max_len: int) -> TrainState:
  inputs = jnp.zeros((2, max_len, 42, 2), jnp.float32)
  mask = jnp.ones((2, max_len), bool)
  p_rng, vq_rng, d_rng = jax.random.split(rng, 3)
  variables = model.init({"params": p_rng, "vq": vq_rng, "dropout": d_rng},
                         inputs, mask, train=False)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables.get("batch_stats", {}), vq=variables["vq"],
      opt_state=tx.init(params), nonfinite_step=jnp.full((), -1, jnp.int32))


def sample_num_quantizers(rng, mode: str, num_quantizers: int,
                          batch_size: int):
  """Quantizer dropout: n_q ~ U{1..Q} per batch, per example, or all Q."""
  if mode == "none":
    return None
  shape = {"batch": (), "example": (batch_size,)}[mode]
  return jax.random.randint(rng, shape, 1, num_quantizers + 1)


def _loss(out, batch, commit_weight):
  return losses.tokenizer_loss(
      out, batch["inputs"], batch["input_mask"], labels=batch["labels"],
      label_mask=batch["label_paddings"] == 0,
      example_mask=batch["example_mask"], commit_weight=commit_weight)


def train_step(state: TrainState, batch, *, model, tx, config, base_rng):
  rng = jax.random.fold_in(base_rng, state.step)
  q_rng, d_rng, vq_rng = jax.random.split(rng, 3)
  n_q = sample_num_quantizers(q_rng, config.train.quantizer_dropout,
                              config.model.num_quantizers,
                              batch["inputs"].shape[0])

  def loss_fn(params):
    out, updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats, "vq": state.vq},
        batch["inputs"], batch["input_mask"], n_q=n_q, train=True,
        rngs={"dropout": d_rng, "vq": vq_rng},
        mutable=["batch_stats", "vq"])
    total, parts = _loss(out, batch, config.train.commit_weight)
    return total, (parts, updates, out)

  (loss, (parts, updates, out)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, param_updates),
      batch_stats=updates.get("batch_stats", state.batch_stats),
      vq=updates["vq"], opt_state=opt_state)
  finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
  new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new,
                     state.replace(step=state.step + 1))
  new = new.replace(nonfinite_step=jnp.where(
      (~finite) & (state.nonfinite_step < 0), state.step,
      state.nonfinite_step))
  step_metrics = dict(parts, loss=loss, grad_norm=optax.global_norm(grads))
  for name in ("perplexity", "used", "replaced"):
    for q in range(config.model.num_quantizers):
      step_metrics[f"{name}_q{q}"] = out[name][q]
  return new, step_metrics


def eval_step(state: TrainState, batch, *, model, config):
  """Loss parts summed over valid examples, CTC logits and code counts."""
  variables = {"params": eval_params(state), "batch_stats": state.batch_stats,
               "vq": state.vq}
  out = model.apply(variables, batch["inputs"], batch["input_mask"],
                    train=False)
  total, parts = _loss(out, batch, config.train.commit_weight)
  n = jnp.sum(batch["example_mask"].astype(jnp.float32))
  sums = {k: v * n for k, v in dict(parts, loss=total).items()}
  sums["examples"] = n
  codes = out["codes"]
  valid = batch["input_mask"] & batch["example_mask"][:, None]
  counts = jax.vmap(
      lambda c: jnp.zeros(config.model.codebook_size, jnp.int32).at[c].add(
          valid.astype(jnp.int32)), in_axes=-1)(codes)
  logits = out.get("ctc_logits")
  if logits is None:   # no CTC head: predict nothing, the score says so.
    logits = jnp.zeros(batch["input_mask"].shape + (vocab.VOCAB_SIZE,)
                       ).at[..., vocab.BLANK_ID].set(1.0)
  return sums, counts, logits


def _code_statistics(counts: np.ndarray) -> dict[str, float]:
  """Per quantizer: usage (fraction of codes used) and perplexity."""
  stats = {}
  for q, c in enumerate(counts):
    p = c / max(c.sum(), 1)
    nz = p[p > 0]
    stats[f"usage_q{q}"] = float((c > 0).mean())
    stats[f"perplexity_q{q}"] = float(np.exp(-(nz * np.log(nz)).sum()))
  return stats


def evaluate(state, dataset, *, mesh, jit_eval, max_batches: int = -1
             ) -> dict[str, float]:
  totals, counts, refs, hyps = {}, None, [], []
  for i, batch in enumerate(dataset):
    if 0 <= max_batches <= i:
      break
    gbatch = sharding.to_global(batch, mesh, DEVICE_KEYS)
    sums, c, logits = jit_eval(state, gbatch)
    sums, c = jax.tree.map(sharding.local_value, (sums, c))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)
    counts = c if counts is None else counts + c
    logits, mask, labels, pads, ex = map(sharding.gather, (
        logits, gbatch["input_mask"], gbatch["labels"],
        gbatch["label_paddings"], gbatch["example_mask"]))
    decoded = losses.ctc_greedy_decode(logits, mask)
    for ids, l, p, e in zip(decoded, labels, pads, ex):
      if e:
        refs.append(vocab.decode(l[p == 0]))
        hyps.append(vocab.decode(ids))
  n = max(totals.pop("examples", 0.0), 1.0)
  result = {k: v / n for k, v in totals.items()}
  result["score"] = metrics_lib.normalized_levenshtein(refs, hyps)
  result.update(_code_statistics(counts))
  result["examples"] = n
  return result, list(zip(refs, hyps))


class _Preemption:
  """SIGTERM -> save and exit cleanly (multi-host: JAX's sync point)."""

  def __init__(self):
    self.requested = False
    if jax.process_count() == 1:
      signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> dict[str, float]:
  """Trains the tokenizer; returns the last validation metrics."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  mesh = sharding.make_mesh()
  t = config.train
  sharding.check_batch_size(t.batch_size, mesh)
  sharding.check_batch_size(t.eval_batch_size, mesh)
  splits = datasets.load(config)
  logging.info("splits: %s", {k: len(v) for k, v in splits.items()})
  pcfg = dict(max_len=config.data.max_len,
              max_label_len=config.data.max_label_len,
              buckets=tuple(config.data.buckets) or None,
              process_index=jax.process_index(),
              process_count=jax.process_count())
  train_ds = pipeline.make_dataset(
      splits["train"], global_batch_size=t.batch_size, seed=config.seed,
      train=True, flip_prob=config.data.flip_prob, **pcfg)
  val_ds = pipeline.make_dataset(
      splits["validation"], global_batch_size=t.eval_batch_size,
      seed=config.seed, train=False, **pcfg)
  steps_per_epoch = pipeline.steps_per_epoch(splits["train"], t.batch_size,
                                             train=True)
  total_steps = steps_per_epoch * t.num_epochs
  if steps_per_epoch == 0:
    raise ValueError(f"the train split has {len(splits['train'])} sequences, "
                     f"fewer than one batch of {t.batch_size}")

  model, tx = make_model(config), make_optimizer(config)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  repl = sharding.replicated(mesh)
  state = jax.jit(functools.partial(init_state, model, tx,
                                    max_len=config.data.max_len),
                  out_shardings=repl)(init_rng)
  if jax.process_index() == 0:
    summary = tokenizer_lib.model_summary(model_config(config))
    logging.info("parameters: %s", summary)
    print("parameters:", json.dumps(summary))

  ckpts = checkpointing.Checkpoints(workdir, keep_latest=t.keep_checkpoints)
  train_iter = iter(train_ds)
  if ckpts.latest_step() is not None:
    state = ckpts.restore_latest(state, train_iter)
    if jax.process_index() == 0:
      print(f"resumed from step {int(sharding.local_value(state.step))}",
            flush=True)
  start = int(sharding.local_value(state.step))

  batch_sharding = {k: sharding.data_sharding(mesh) for k in DEVICE_KEYS}
  jit_train = jax.jit(
      functools.partial(train_step, model=model, tx=tx, config=config,
                        base_rng=step_rng),
      in_shardings=(repl, batch_sharding), out_shardings=(repl, repl),
      donate_argnums=(0,))
  jit_eval = jax.jit(functools.partial(eval_step, model=model, config=config),
                     in_shardings=(repl, batch_sharding),
                     out_shardings=repl)

  writer = metric_writers.MetricWriter(workdir)
  preemption = _Preemption()
  bar = progress.Progress(total_steps, start)
  pending, val = [], {}
  try:
    for step in range(start, total_steps):
      batch = sharding.to_global(next(train_iter), mesh, DEVICE_KEYS)
      state, m = jit_train(state, batch)
      pending.append(m)
      done = step + 1
      epoch_end = done % steps_per_epoch == 0
      if done % t.log_every_steps == 0 or epoch_end or done == total_steps:
        _check_finite(state, ckpts)
        pending = jax.tree.map(sharding.local_value, pending)
        avg = {k: float(np.mean([x[k] for x in pending])) for k in pending[0]}
        pending = []
        writer.write(done, "train", avg)
        bar.update(done, avg["loss"])
      save = (done % t.checkpoint_every_steps == 0 or epoch_end
              or done == total_steps)
      if epoch_end and (done // steps_per_epoch) % t.eval_every_epochs == 0 \
          or done == total_steps:
        val, _ = evaluate(state, val_ds, mesh=mesh, jit_eval=jit_eval,
                          max_batches=t.max_eval_batches)
        writer.write(done, "validation", val)
        bar.message(_format_eval(done // steps_per_epoch, val))
        _check_finite(state, ckpts)
        ckpts.save_best(done, state, {"loss": val["loss"]})
      if save:
        _check_finite(state, ckpts)
        ckpts.save_latest(done, state, train_iter)
      if preemption.reached(done):
        ckpts.save_latest(done, state, train_iter)
        bar.message(f"preempted: saved step {done}; run the same command "
                    "to resume")
        break
  finally:
    bar.close()
    writer.close()
    ckpts.close()
  if jax.process_index() == 0:
    metric_writers.plot_learning_curves(workdir, CURVES)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("asl_vq: training done")
  return val


def _check_finite(state: TrainState, ckpts: checkpointing.Checkpoints) -> None:
  bad = int(sharding.local_value(state.nonfinite_step))
  if bad >= 0:
    raise FloatingPointError(
        f"the loss or its gradient was not finite at step {bad}; the update "
        f"was skipped and nothing after it saved (last checkpoint: step "
        f"{ckpts.latest_step()}). Lower train.learning_rate or check the data.")


def _format_eval(epoch: int, val: dict[str, float]) -> str:
  usage = " ".join(f"{val[k]:.2f}" for k in sorted(val) if
                   k.startswith("usage_q"))
  ppl = " ".join(f"{val[k]:.0f}" for k in sorted(val) if
                 k.startswith("perplexity_q"))
  return (f"epoch {epoch}: val loss {val['loss']:.4f} recon "
          f"{val.get('recon', float('nan')):.4f} ctc "
          f"{val.get('ctc', float('nan')):.3f} score {val['score']:.3f} "
          f"usage [{usage}] perplexity [{ppl}]")
