"""Orbax checkpoints: the latest few for resuming, and the best by validation.

The train state and the grain iterator are saved together, so a resumed run
continues with exactly the batches it would have seen.

Saves are asynchronous by default (except with several processes on
XLA:CPU, see `Checkpoints`): `save_latest`/`save_best` return once the
state is copied off the devices and the iterator's position is taken (both
before training moves on), and the files are written in the background while
training continues. A step appears in `latest_step`/`best_step` only once its
directory is complete and renamed into place (Orbax's atomic commit), so a
process killed mid-write leaves at most a temporary directory that is never
read; a preempted run waits for its last save (`wait=True`).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from etils import epath
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from asl_vq import errors
from asl_vq import fileio

STATE, DATA = "state", "data"


class ProcessCountChanged(errors.UserError):
  """A run is resumed by another number of processes than saved it."""


def _state_handler() -> ocp.PyTreeCheckpointHandler:
  """The train state's handler in a run's checkpoint managers: on the CPU
  backend, one that writes each replicated array whole.

  Orbax's `ArrayHandler` splits a replicated array into one slice per
  replica so that each device writes a part (`use_replica_parallel`: on by
  default in orbax-checkpoint 0.12.8 unless JAX_PLATFORMS names a GPU).
  CPU devices share one host's memory, so that only adds a sliced copy per
  replica and array: with 8 simulated devices (before `_one_copy`, which now
  spares one process that walk) every save of the tiny tokenizer took ~4 s
  instead of ~0.5 s, and a first save of 300 small arrays 230 s (a slice
  program compiled per shape); it still applies to several processes on
  CPU. The handler is the managers' own (their registry), not registered
  process-wide. Its files are those of Orbax's `StandardCheckpointHandler`
  (which `restore` reads them with); restoring checks each array's shape
  (`_restore_args`). tests/test_checkpointing.py fails once Orbax's
  default is off on CPU."""
  if jax.default_backend() != "cpu":
    return ocp.PyTreeCheckpointHandler()
  handlers = ocp.type_handlers
  scalar = handlers.ScalarHandler()
  registry = handlers.create_type_handler_registry(
      *((ty, scalar) for ty in (int, float, bytes, np.number)),
      (np.ndarray, handlers.NumpyHandler()),
      (str, handlers.StringHandler()),
      (jax.Array, handlers.ArrayHandler(use_replica_parallel=False)),
  )
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def _one_copy(state: Any) -> Any:
  """On the CPU backend in one process, each replicated array as its copy
  on one device.

  Orbax walks every device's shard of every array to pick the one to write
  (`get_replica_slices`), in Python, on the training thread: with 8
  simulated devices and the tokenizer's ~300 small arrays, an 8-epoch tiny
  run spent 19.2 s in `save_latest`, ~11 s of it in that walk (py-spy);
  12.2 s with one copy. The values written are the same and restores place
  them by the target's shardings (the checkpoint's metadata now names device
  0's sharding). Other backends keep Orbax's replica-parallel writes (see
  `_state_handler`); with several processes each would write its own
  copy."""
  if jax.process_count() > 1 or jax.default_backend() != "cpu":
    return state
  return jax.tree.map(
      lambda x: x.addressable_data(0)
      if isinstance(x, jax.Array)
      and len(x.sharding.device_set) > 1
      and x.sharding.is_fully_replicated
      else x,
      state,
  )


class Checkpoints:
  """`<workdir>/checkpoints` (latest, with data state) and `<workdir>/best`;
  `workdir` is local or an object store URL (`gs://bucket/run`)."""

  def __init__(
      self,
      workdir: str,
      keep_latest: int = 2,
      best_metric: str = "loss",
      async_saves: bool = True,
  ):
    workdir = fileio.abspath(workdir)
    # Several processes on XLA:CPU: with asynchronous saves the 2-host run
    # aborted ("Gloo context initialization failed", or a shutdown barrier
    # timeout while a save was in flight), likely Orbax's save thread syncing
    # processes beside the training step's gloo collectives (not proven:
    # coordination-service barriers did not cure it). There, saves wait.
    async_saves = async_saves and not (
        jax.process_count() > 1 and jax.default_backend() == "cpu"
    )
    self.best_metric = best_metric
    self.latest = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep_latest,
            create=True,
            enable_async_checkpointing=async_saves,
        ),
        item_handlers={
            STATE: _state_handler(),
            DATA: grain.checkpoint.CheckpointHandler(),
        },
    )
    self.best = ocp.CheckpointManager(
        os.path.join(workdir, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1,
            create=True,
            best_fn=lambda m: m[best_metric],
            best_mode="min",
            enable_async_checkpointing=async_saves,
        ),
        item_handlers={STATE: _state_handler()},
    )

  def latest_step(self) -> Optional[int]:
    return self.latest.latest_step()

  def save_latest(
      self, step: int, state: Any, data_iter: Any, wait: bool = False
  ) -> None:
    """Starts saving `state` and the iterator's position at `step`; with
    `wait`, returns once it is on disk (a preempted run's last save)."""
    if step not in self.latest.all_steps():
      self.latest.save(
          step,
          args=ocp.args.Composite(
              **{
                  STATE: ocp.args.PyTreeSave(_one_copy(state)),
                  DATA: grain.checkpoint.CheckpointSave(data_iter),
              }
          ),
      )
    if wait:
      self.latest.wait_until_finished()

  def save_best(self, step: int, state: Any, metrics: dict[str, float]) -> None:
    if step in self.best.all_steps():
      return
    self.best.save(
        step,
        args=ocp.args.Composite(
            **{STATE: ocp.args.PyTreeSave(_one_copy(state))}
        ),
        metrics={k: float(v) for k, v in metrics.items()},
    )

  def has_best(self, step: int) -> bool:
    """Whether `step` was evaluated (and saved as a best candidate)."""
    self.best.wait_until_finished()
    return step in self.best.all_steps()

  def restore_latest(self, abstract_state: Any, data_iter: Any) -> Any:
    """Restores the latest state in place of `abstract_state` and the iterator.

    Raises:
      ProcessCountChanged: the step was saved by another number of processes.
        Each process saved its own position in its own shard of the data
        (grain's `process_<i>-of-<n>.json`); those positions do not map onto
        another count's shards, so the run is refused up front rather than
        resumed on other batches.
    """
    step = self.latest.latest_step()
    saved = sorted(
        p.name
        for p in (epath.Path(self.latest.directory) / str(step) / DATA).glob(
            "process_*-of-*.json"
        )
    )
    counts = {name.rsplit("-of-", 1)[1][: -len(".json")] for name in saved}
    if counts and counts != {str(jax.process_count())}:
      raise ProcessCountChanged(
          f"{self.latest.directory}: step {step} was saved by "
          f"{'/'.join(sorted(counts))} process(es), this run has "
          f"{jax.process_count()}: resume with --num_processes="
          f"{'/'.join(sorted(counts))} (each process's data position is "
          "its own), or give a new --workdir"
      )
    restored = self.latest.restore(
        step,
        args=ocp.args.Composite(
            **{
                STATE: _restore_args(abstract_state),
                DATA: grain.checkpoint.CheckpointRestore(data_iter),
            }
        ),
    )
    return restored[STATE]

  def restore_best(self, abstract_state: Any) -> Any:
    """The state with the lowest validation metric, in place of the target."""
    self.best.wait_until_finished()
    step = self.best.best_step()
    return self.best.restore(
        step, args=ocp.args.Composite(**{STATE: _restore_args(abstract_state)})
    )[STATE]

  def close(self) -> None:
    """Waits for the saves in flight, then closes."""
    self.latest.close()
    self.best.close()


def _restore_args(abstract_state: Any) -> ocp.args.PyTreeRestore:
  """`_state_handler`'s arguments to restore in place of `abstract_state`
  (arrays or `jax.ShapeDtypeStruct`s: their shapes, dtypes, shardings)."""
  return ocp.args.PyTreeRestore(
      item=abstract_state,
      restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
  )


def _on_this_host(metadata: Any) -> Any:
  """Targets on this process's first device, whatever topology saved them."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      metadata,
  )


def restore(
    directory: str, which: str = "best", abstract_state: Any = None
) -> Any:
  """A run's best state (or, with no validation yet, its latest) or latest;
  `directory` is local or an object store URL (`gs://bucket/run`)."""
  directory = fileio.abspath(directory)
  subs = {"best": ("best", "checkpoints"), "latest": ("checkpoints",)}[which]
  for sub in subs:
    path = os.path.join(directory, sub)
    if not epath.Path(path).is_dir():
      continue
    handlers = {STATE: ocp.StandardCheckpointHandler()}
    if sub == "checkpoints":
      handlers[DATA] = grain.checkpoint.CheckpointHandler()
    manager = ocp.CheckpointManager(path, item_handlers=handlers)
    step = (
        manager.best_step() if sub == "best" else None
    ) or manager.latest_step()
    if step is None:
      continue
    if abstract_state is None:
      abstract_state = _on_this_host(manager.item_metadata(step)[STATE])
    return manager.restore(
        step,
        args=ocp.args.Composite(
            **{STATE: ocp.args.StandardRestore(abstract_state)}
        ),
    )[STATE]
  raise FileNotFoundError(
      f"{directory}: no checkpoint under "
      f"{' or '.join(s + '/' for s in subs)}"
  )


def load_codebooks(path: str | os.PathLike, which: str = "best") -> np.ndarray:
  """A tokenizer run's RVQ codebooks, float32 [Q, K, D] (the 'vq' collection
  of its train state), without building the model or its task."""
  state = restore(os.fspath(path), which)
  return np.asarray(state["collections"]["vq"]["rvq"]["codebook"])
