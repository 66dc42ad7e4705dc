"""`asl_vq.bench` on the tiny model: its figures and its profile trace."""

import functools
import gzip
import json
import re

import jax
import numpy as np
import pytest

from asl_vq import bench
from asl_vq import config_lib
from asl_vq import optimizers
from asl_vq import sharding
from asl_vq import train
from asl_vq.tasks import tokenizer as tokenizer_task


@pytest.mark.slow
def test_bench_shape_times_and_writes_a_profile(tmp_path):
  """--profile_dir: one trace under DIR/BATCHxFRAMES-DTYPE that XProf and
  Perfetto read, holding PROFILED_CALLS annotated encodes and training steps
  and, inside each, the XLA ops it ran (HLO instruction names: fusion.12)."""
  config = config_lib.load('tokenizer', 'tiny')
  r = bench.bench_shape(config, 8, 16, steps=1, profile_dir=str(tmp_path))
  assert r['shape'] == '8x16'
  assert r['profile'] == str(tmp_path / '8x16-float32')
  for key in (
      'train_frames_s',
      'train_step_ms',
      'encode_frames_s',
      'compile_s',
  ):
    assert r[key] > 0, key

  sessions = list(tmp_path.glob('8x16-float32/plugins/profile/*'))
  assert len(sessions) == 1, sessions
  assert list(sessions[0].glob('*.xplane.pb'))  # XProf's and TensorBoard's
  with gzip.open(sessions[0] / 'perfetto_trace.json.gz', 'rt') as f:
    events = [e for e in json.load(f)['traceEvents'] if e.get('ph') == 'X']
  ops = [e for e in events if re.fullmatch(r'[a-z_]+\.\d+', e['name'])]
  for name in ('encode', 'train'):
    calls = [e for e in events if e['name'] == name]
    assert len(calls) == bench.PROFILED_CALLS, name
    for call in calls:
      start, end = call['ts'], call['ts'] + call['dur']
      assert any(start <= op['ts'] <= end for op in ops), (name, call)


@pytest.mark.slow
def test_bench_steps_as_the_tokenizer_task_does():
  """The benchmark builds the tokenizer's training step from
  `asl_vq.models.tokenizer` (it imports no task): the same state and
  metrics, to the bit, as `TokenizerTask`'s step."""
  config = config_lib.load('tokenizer', 'tiny')
  batch = bench.random_batch(4, 32)
  tx = optimizers.make_optimizer(config, config.train.batch_size)

  def two_steps(init_variables, loss_fn):
    state = train.init_state(init_variables, tx, jax.random.key(0))
    step = jax.jit(
        functools.partial(
            train.train_step, loss_fn=loss_fn, tx=tx, base_rng=jax.random.key(1)
        )
    )
    state, _ = step(state, batch)
    return step(state, batch)

  _, *ours = bench.tokenizer_step(config, sharding.make_mesh())
  got = two_steps(*ours)
  task = tokenizer_task.TokenizerTask(config)
  want = two_steps(task.init_variables, task.loss)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
