"""Asynchronous checkpoints save what the state and the data position were
when the save was asked for, however far training has gone on meanwhile."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asl_vq import checkpointing


def _iterator():
  return iter(grain.MapDataset.range(100).to_iter_dataset())


def test_async_save_keeps_the_state_and_position_of_the_save(tmp_path):
  state = {"w": jnp.arange(4096, dtype=jnp.float32), "step": jnp.int32(7)}
  data = _iterator()
  seen = [next(data) for _ in range(5)]
  # Training goes on from the state's buffers (donated, as the train step
  # does) and draws batches while the files are still being written.
  step = jax.jit(
      lambda s: jax.tree.map(lambda x: x * 0 - 1, s), donate_argnums=(0,)
  )
  expected = jax.tree.map(np.asarray, state)

  ckpts = checkpointing.Checkpoints(str(tmp_path), async_saves=True)
  ckpts.save_latest(7, state, data)
  for _ in range(3):
    state = step(state)
    next(data)
  ckpts.save_best(7, state, {"loss": 1.0})
  ckpts.close()  # waits for the writes in flight.

  again = checkpointing.Checkpoints(str(tmp_path))
  resumed = _iterator()
  target = jax.tree.map(jnp.zeros_like, expected)
  restored = again.restore_latest(target, resumed)
  jax.tree.map(
      np.testing.assert_array_equal,
      jax.tree.map(np.asarray, restored),
      expected,
  )
  assert seen == [0, 1, 2, 3, 4] and next(resumed) == 5
  best = again.restore_best(target)
  np.testing.assert_array_equal(np.asarray(best["w"]), -1)
  again.close()


def test_a_save_cut_short_is_never_read(tmp_path):
  state = {"w": jnp.ones(8)}
  ckpts = checkpointing.Checkpoints(str(tmp_path))
  ckpts.save_latest(3, state, _iterator(), wait=True)
  ckpts.close()
  # What a SIGKILL during the write of step 6 leaves: Orbax's temporary
  # directory, renamed into place only when complete.
  partial = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-123"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_bytes(b"\0" * 10)
  again = checkpointing.Checkpoints(str(tmp_path))
  assert again.latest_step() == 3
  restored = again.restore_latest({"w": jnp.zeros(8)}, _iterator())
  np.testing.assert_array_equal(np.asarray(restored["w"]), 1)
  again.close()


def test_a_run_saved_by_other_process_count_is_refused_by_name(tmp_path):
  ckpts = checkpointing.Checkpoints(str(tmp_path))
  ckpts.save_latest(3, {"w": jnp.ones(8)}, _iterator(), wait=True)
  ckpts.close()
  # What two processes leave: each its own position in its own shard.
  data = tmp_path / "checkpoints" / "3" / "data"
  saved = (data / "process_0-of-1.json").read_text()
  (data / "process_0-of-1.json").unlink()
  for i in range(2):
    (data / f"process_{i}-of-2.json").write_text(saved)
  again = checkpointing.Checkpoints(str(tmp_path))
  with pytest.raises(
      checkpointing.ProcessCountChanged,
      match="saved by 2 process.*this run has 1.*" "--num_processes=2",
  ):
    again.restore_latest({"w": jnp.zeros(8)}, _iterator())
  again.close()
