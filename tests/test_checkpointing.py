"""Asynchronous checkpoints save what the state and the data position were
when the save was asked for, however far training has gone on meanwhile."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
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


def test_replicated_arrays_are_written_whole_on_cpu_by_the_run_only(tmp_path):
  """The CPU override of Orbax's per-replica writes is the run's own: the
  process-wide handler stays Orbax's, a state replicated over the 8
  simulated devices saves and restores (also through `restore`, Orbax's
  standard handler), and the override is still needed: once Orbax's
  `ArrayHandler` stops splitting replicated arrays by default, this fails
  and `checkpointing._state_handler` can go."""
  # orbax-checkpoint 0.12.8 decides at construction (JAX_PLATFORMS without
  # gpu/cuda: on) and keeps the choice in this attribute.
  default = ocp.type_handlers.ArrayHandler()
  assert (
      getattr(default, "_use_replica_parallel", None) is True
  ), "Orbax no longer splits replicated arrays on CPU: drop _state_handler"
  before = ocp.type_handlers.get_type_handler(jax.Array)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = jax.device_put(
      {"w": jnp.arange(8.0), "step": jnp.int32(3)}, replicated
  )
  ckpts = checkpointing.Checkpoints(str(tmp_path), async_saves=False)
  ckpts.save_latest(3, state, _iterator())
  ckpts.save_best(3, state, {"loss": 0.5})
  restored = ckpts.restore_best(jax.tree.map(jnp.zeros_like, state))
  ckpts.close()
  assert ocp.type_handlers.get_type_handler(jax.Array) is before
  np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(8.0))
  assert restored["w"].sharding.is_equivalent_to(replicated, 1)
  again = checkpointing.restore(str(tmp_path), "latest")
  np.testing.assert_array_equal(np.asarray(again["w"]), np.arange(8.0))


def test_a_run_saved_with_orbaxs_standard_handler_resumes(tmp_path):
  """Runs saved before the managers had their own handler (Orbax's
  `StandardSave`, as every earlier version of this package) resume."""
  state = {"w": jnp.arange(6.0), "step": jnp.int32(2)}
  data = _iterator()
  [next(data) for _ in range(3)]
  with ocp.CheckpointManager(
      tmp_path / "checkpoints", item_names=("state", "data")
  ) as old:
    old.save(
        2,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data),
        ),
    )
  ckpts = checkpointing.Checkpoints(str(tmp_path))
  resumed = _iterator()
  restored = ckpts.restore_latest(jax.tree.map(jnp.zeros_like, state), resumed)
  ckpts.close()
  np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(6.0))
  assert int(restored["step"]) == 2 and next(resumed) == 3
