"""The optimizers every experiment trains with, and their learning rates.

Schedule-free AdamW (the tokenizer's, as the reference's) or AdamW (the
paper's LM), after global-norm clipping; `eval_params` gives the point a
schedule-free run is evaluated at.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax

from asl_vq import errors

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


def eval_params(state):
  """The parameters to evaluate of `state` (a `train.TrainState`):
  schedule-free's evaluation point x (not the gradient point y), or the
  parameters themselves for other optimizers."""
  if isinstance(state.opt_state[1], optax.contrib.ScheduleFreeState):
    return optax.contrib.schedule_free_eval_params(
        state.opt_state[1], state.params
    )
  return state.params
