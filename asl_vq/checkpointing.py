"""Orbax checkpoints: the latest few for resuming, and the best by validation.

The train state and the grain iterator are saved together, so a resumed run
continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from etils import epath
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from asl_vq import fileio

STATE, DATA = "state", "data"


class Checkpoints:
  """`<workdir>/checkpoints` (latest, with data state) and `<workdir>/best`;
  `workdir` is local or an object store URL (`gs://bucket/run`)."""

  def __init__(self, workdir: str, keep_latest: int = 2,
               best_metric: str = "loss"):
    workdir = fileio.abspath(workdir)
    self.best_metric = best_metric
    self.latest = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep_latest, create=True,
            enable_async_checkpointing=False),
        item_names=(STATE, DATA))
    self.best = ocp.CheckpointManager(
        os.path.join(workdir, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m[best_metric],
            best_mode="min", enable_async_checkpointing=False),
        item_names=(STATE,))

  def latest_step(self) -> Optional[int]:
    return self.latest.latest_step()

  def save_latest(self, step: int, state: Any, data_iter: Any) -> None:
    if step in self.latest.all_steps():
      return
    self.latest.save(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state),
        DATA: grain.checkpoint.CheckpointSave(data_iter)}))
    self.latest.wait_until_finished()

  def save_best(self, step: int, state: Any, metrics: dict[str, float]
                ) -> None:
    if step in self.best.all_steps():
      return
    self.best.save(step, args=ocp.args.Composite(
        **{STATE: ocp.args.StandardSave(state)}),
        metrics={k: float(v) for k, v in metrics.items()})
    self.best.wait_until_finished()

  def has_best(self, step: int) -> bool:
    """Whether `step` was evaluated (and saved as a best candidate)."""
    return step in self.best.all_steps()

  def restore_latest(self, abstract_state: Any, data_iter: Any) -> Any:
    """Restores the latest state in place of `abstract_state` and the iterator."""
    step = self.latest.latest_step()
    restored = self.latest.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(abstract_state),
        DATA: grain.checkpoint.CheckpointRestore(data_iter)}))
    return restored[STATE]

  def restore_best(self, abstract_state: Any) -> Any:
    """The state with the lowest validation metric, in place of the target."""
    step = self.best.best_step()
    return self.best.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(abstract_state)}))[STATE]

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _on_this_host(metadata: Any) -> Any:
  """Targets on this process's first device, whatever topology saved them."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      metadata)


def restore(directory: str, which: str = "best", abstract_state: Any = None
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
    step = (manager.best_step() if sub == "best" else None) or \
        manager.latest_step()
    if step is None:
      continue
    if abstract_state is None:
      abstract_state = _on_this_host(manager.item_metadata(step)[STATE])
    return manager.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(abstract_state)}))[STATE]
  raise FileNotFoundError(f"{directory}: no checkpoint under "
                          f"{' or '.join(s + '/' for s in subs)}")


def load_codebooks(path: str | os.PathLike, which: str = "best"
                   ) -> np.ndarray:
  """A tokenizer run's RVQ codebooks, float32 [Q, K, D] (the 'vq' collection
  of its train state), without building the model or its task."""
  state = restore(os.fspath(path), which)
  return np.asarray(state["collections"]["vq"]["rvq"]["codebook"])
