"""The entry point on bad input: one line naming the setting and the fix."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  return subprocess.run([sys.executable, "-m", "asl_vq.main", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, XLA_FLAGS=""))


def test_a_dataset_smaller_than_one_batch(tmp_path):
  run = _main("--config=rvq_ctc:tiny", f"--workdir={tmp_path}",
              "--config.train.batch_size=64")
  assert run.returncode == 1
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith("error: the training split has "), run.stderr
  assert "fewer than one global batch of 64: lower " \
      "--config.train.batch_size" in last
  assert "Traceback" not in run.stderr


def test_an_unknown_config_option():
  run = _main("--config=rvq_ctc:tiny,row=nope", "--workdir=unused")
  assert run.returncode != 0
  assert run.stderr.startswith(
      "error: ValueError: unknown row 'nope': rvq+ctc+qdrop, rvq, rvq+qdrop, "
      "rvq+ctc\n"), run.stderr
  assert "Traceback" not in run.stderr
  run = _main("--config=rvq_ctc:tiny,pattern=delay", "--workdir=unused")
  assert "unknown config option 'pattern=delay': a size preset (paper, " \
      "cpu, tiny) or one of row=" in run.stderr
