"""asl_vq.data.video on videos written here with OpenCV.

No package in reach ships an image of a visible hand (searched: matplotlib's
sample data, scikit-learn's and scipy's images, the mediapipe wheel), so a
real detection is checked on matplotlib's Grace Hopper portrait: her face
and pose are found, her hands (not in the picture) are not.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from asl_vq.data import cache
from asl_vq.data import inspect
from asl_vq.data import layout
from asl_vq.data import reader
from asl_vq.data import video

# CI installs both (the test extra, then .ci/run): never skip there.
try:
  import cv2  # pylint: disable=g-import-not-at-top
except ImportError:
  if os.environ.get("CI"):
    raise
  pytest.skip(f"no OpenCV: {video.INSTALL}", allow_module_level=True)
try:
  import mediapipe  # noqa: F401  pylint: disable=unused-import

  _MEDIAPIPE = None
except ImportError:
  _MEDIAPIPE = f"mediapipe is not installed: {video.INSTALL}"
  if os.environ.get("CI"):
    raise
needs_mediapipe = pytest.mark.skipif(bool(_MEDIAPIPE), reason=_MEDIAPIPE or "")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OFFSETS = layout.point_offsets()


def write_video(path, frames, fps=25.0, fourcc="MJPG"):
  """Writes BGR uint8 [T, H, W, 3] frames."""
  h, w = frames.shape[1:3]
  writer = cv2.VideoWriter(
      str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h)
  )
  assert writer.isOpened()
  for frame in frames:
    writer.write(frame)
  writer.release()


def blank(n, h=64, w=96):
  """Gray frames that change a little: nobody is there."""
  return np.stack([np.full((h, w, 3), 60 + 10 * i, np.uint8) for i in range(n)])


def hopper(n):
  import matplotlib.cbook  # pylint: disable=g-import-not-at-top

  image = cv2.imread(
      str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
  )
  return np.stack([cv2.resize(image, (192, 224))] * n)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  """blank.avi (9 frames, 25 fps), people/hopper.mp4 (3 frames, 30 fps),
  broken.mp4 (garbage bytes) and the phrases CSV."""
  root = tmp_path_factory.mktemp("videos")
  write_video(root / "blank.avi", blank(9), fps=25.0)
  (root / "people").mkdir()
  write_video(
      root / "people" / "hopper.mp4", hopper(3), fps=30.0, fourcc="mp4v"
  )
  (root / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(2000))
  phrases = root.parent / "phrases.csv"
  with open(phrases, "w", newline="") as f:
    csv.writer(f).writerows(
        [
            ("video", "phrase", "participant_id"),
            ("blank.avi", "hello, world", "7"),
            ("people/hopper.mp4", "cobol", ""),
        ]
    )
  return root, str(phrases)


@pytest.fixture(scope="module")
def converted(videos, tmp_path_factory):
  root, phrases = videos
  out = tmp_path_factory.mktemp("out")
  summary = video.convert(root, out, phrases=phrases, progress=False)
  return out, summary


def run_cli(*args, env=None):
  return subprocess.run(
      [sys.executable, "-m", "asl_vq.data.video", *args],
      capture_output=True,
      text=True,
      cwd=_ROOT,
      env=env,
      timeout=900,
  )


@needs_mediapipe
def test_no_hand_gives_every_frame_and_nan_hands(videos):
  root, _ = videos
  hands, fps = video.hands(root / "blank.avi")
  assert hands.shape == (9, layout.NUM_POINTS, 2)
  assert hands.dtype == np.float32
  assert np.isnan(hands).all()
  assert fps == 25.0


@needs_mediapipe
def test_real_face_and_pose_found_in_their_columns(videos):
  root, _ = videos
  points, fps = video.landmarks(root / "people" / "hopper.mp4")
  assert points.shape == (3, 543, 3) and fps == 30.0
  face = points[:, :468]
  pose = points[:, _OFFSETS["pose"] : _OFFSETS["pose"] + 33]
  assert not np.isnan(face).any() and not np.isnan(pose).any()
  assert ((face[..., :2] > 0) & (face[..., :2] < 1)).all()
  # The nose (pose 0) is on the face: within the face mesh's box.
  nose = pose[:, 0, :2]
  assert ((nose > face[..., :2].min(1)) & (nose < face[..., :2].max(1))).all()
  assert np.isnan(points[:, video.HAND_POINTS]).all()


@needs_mediapipe
def test_layout_is_kaggle_and_readers_accept_it(converted, tmp_path):
  out, summary = converted
  assert summary["videos"] == 3 and summary["written"] == 2
  assert list(summary["unreadable"]) == ["broken.mp4"]
  with open(out / "train.csv", newline="") as f:
    rows = list(csv.reader(f))
  assert tuple(rows[0]) == layout.METADATA_COLUMNS
  meta = reader.read_metadata(out, "train")
  assert sorted(meta.phrase) == ["cobol", "hello, world"]
  assert sorted(meta.participant_id.tolist()) == [0, 7]
  assert (meta.file_id == meta.sequence_id).all()
  info = {
      v["video"]: v
      for v in json.loads((out / video.VIDEOS_JSON).read_text())["videos"]
  }
  assert info["blank.avi"]["fps"] == 25.0 and info["blank.avi"]["frames"] == 9
  assert info["people/hopper.mp4"]["fps"] == 30.0
  for rel_path, sid in zip(meta.path, meta.sequence_id):
    parquet = pq.ParquetFile(out / rel_path)
    names = parquet.schema_arrow.names
    # As the competition's: frame, the 1629 columns, the pandas index.
    assert names == (
        [layout.FRAME_COLUMN]
        + layout.landmark_columns()
        + [layout.INDEX_COLUMN]
    )
    pandas = json.loads(parquet.schema_arrow.metadata[b"pandas"])
    assert pandas["index_columns"] == [layout.INDEX_COLUMN]
    table = parquet.read(columns=[layout.FRAME_COLUMN, "x_face_0"])
    assert str(table.schema.field(layout.FRAME_COLUMN).type) == "int16"
    by_id = reader.read_hands(out / rel_path)
    assert list(by_id) == [sid]
    assert np.isnan(by_id[sid]).all()
    assert table[layout.FRAME_COLUMN].to_pylist() == list(
        range(len(by_id[sid]))
    )
  hopper = pq.read_table(out / meta.path[meta.phrase.index("cobol")])
  for column in layout.landmark_columns():  # Face and pose found, no hand.
    nan = np.isnan(hopper[column].to_numpy())
    assert nan.all() if "_hand_" in column else not nan.any(), column
  stats = inspect.summarize(out, progress=False)["train"]
  assert stats["sequences"] == 2 and stats["frames"] == 12
  report = cache.prepare(out, tmp_path / "cache", ("train",), progress=False)
  assert report["train"]["skipped_by_reason"]["no_hand"]["count"] == 2


@needs_mediapipe
def test_rerun_resumes_and_killed_write_leaves_no_file(
    videos, tmp_path, monkeypatch
):
  root, _ = videos
  one = tmp_path / "one"
  one.mkdir()
  os.link(root / "blank.avi", one / "blank.avi")
  out = tmp_path / "out"
  real_write = pq.write_table

  def killed(table, where, **kwargs):
    real_write(table.slice(0, 1), where, **kwargs)
    raise KeyboardInterrupt

  monkeypatch.setattr(video.pq, "write_table", killed)
  with pytest.raises(KeyboardInterrupt):
    video.convert(one, out, progress=False)
  _, directory = layout.SOURCES["train"]
  assert not [n for n in os.listdir(out / directory) if n.endswith(".parquet")]
  monkeypatch.setattr(video.pq, "write_table", real_write)
  summary = video.convert(one, out, progress=False)
  assert (summary["written"], summary["resumed"]) == (1, 0)
  summary = video.convert(one, out, progress=False)
  assert (summary["written"], summary["resumed"]) == (0, 1)
  assert summary["frames"] == 9
  assert inspect.summarize(out, progress=False)["train"]["frames"] == 9
  # Recorded again under its name (issue 30, 2: 20 -> 40 frames kept 20
  # frames of stale landmarks): converted again, by the video's bytes.
  (one / "blank.avi").unlink()  # a link to the module's video: not edited.
  write_video(one / "blank.avi", blank(14))
  summary = video.convert(one, out, progress=False)
  assert (summary["written"], summary["resumed"]) == (1, 0)
  assert inspect.summarize(out, progress=False)["train"]["frames"] == 14


@needs_mediapipe
def test_cli_workers_summary_names_the_unreadable(videos, tmp_path):
  root, _ = videos
  two = tmp_path / "two"
  two.mkdir()
  for name in ("blank.avi", "broken.mp4"):
    os.link(root / name, two / name)
  out = tmp_path / "out"
  result = run_cli(f"--input={two}", f"--out={out}", "--workers=2")
  assert result.returncode == 0, result.stderr
  assert "2 videos: 1 written, 0 already there, 1 unreadable" in result.stdout
  assert "unreadable: broken.mp4:" in result.stdout
  assert "Traceback" not in result.stderr
  assert "videos: 100%" in result.stderr  # The progress bar.
  assert "inference_feedback_manager" not in result.stderr  # MediaPipe's C++.
  assert len(reader.read_metadata(out, "train")) == 1


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_bad_input_is_one_line_and_exit_1(case, tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("no video here")
  result = run_cli(f"--input={tmp_path / case}", f"--out={tmp_path / 'o'}")
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert ("no such file" if case == "missing" else "no videos found") in (
      lines[0]
  )


def test_without_mediapipe_says_how_to_install(tmp_path):
  blocker = tmp_path / "site"
  (blocker / "mediapipe").mkdir(parents=True)
  (blocker / "mediapipe" / "__init__.py").write_text(
      "raise ModuleNotFoundError('blocked by the test', name='mediapipe')\n"
  )
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "a.mp4").write_bytes(b"not a video")
  env = dict(
      os.environ,
      PYTHONPATH=os.pathsep.join(
          [str(blocker), _ROOT, os.environ.get("PYTHONPATH", "")]
      ),
  )
  result = run_cli(
      f"--input={tmp_path / 'in'}", f"--out={tmp_path / 'o'}", env=env
  )
  assert result.returncode == 1
  assert result.stderr.strip() == "error: mediapipe is not installed: " + (
      video.INSTALL
  )


def test_a_phrases_csv_saved_by_excel_reads_past_its_byte_order_mark(tmp_path):
  path = tmp_path / "phrases.csv"
  path.write_bytes("\ufeffvideo,phrase\r\nclip.mp4,hello\r\n".encode("utf-8"))
  assert video.read_phrases(str(path)) == {"clip.mp4": ("hello", 0)}
