"""`asl_vq.bench` on the tiny model: its figures and its profile trace."""

import collections
import gzip
import json
import re

from asl_vq import bench
from asl_vq import config_lib


def test_bench_shape_times_and_writes_a_profile(tmp_path):
  """--profile_dir: one trace under DIR/BATCHxFRAMES-DTYPE that TensorBoard and
  Perfetto read, holding PROFILED_CALLS annotated encodes and training steps
  and the XLA ops they ran (HLO instruction names such as fusion.12)."""
  config = config_lib.load('rvq_ctc', 'tiny')
  r = bench.bench_shape(config, 8, 16, steps=1, profile_dir=str(tmp_path))
  assert r['shape'] == '8x16'
  assert r['profile'] == str(tmp_path / '8x16-float32')
  for key in ('train_frames_s', 'train_step_ms', 'encode_frames_s',
              'compile_s'):
    assert r[key] > 0, key

  traces = list(tmp_path.glob('8x16-float32/plugins/profile/*/perfetto_trace.json.gz'))
  assert len(traces) == 1, traces
  assert list(traces[0].parent.glob('*.xplane.pb'))  # TensorBoard's input
  with gzip.open(traces[0], 'rt') as f:
    events = [e for e in json.load(f)['traceEvents'] if e.get('ph') == 'X']
  names = collections.Counter(e['name'] for e in events)
  assert names['encode'] == bench.PROFILED_CALLS
  assert names['train'] == bench.PROFILED_CALLS
  assert any(re.fullmatch(r'[a-z_]+\.\d+', n) for n in names), names
