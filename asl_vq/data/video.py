"""Your own videos: MediaPipe Holistic landmarks in the Kaggle layout.

  python -m asl_vq.data.video --input=VIDEO_OR_DIR --out=DIR \\
      [--phrases=CSV] [--workers=N]

Runs MediaPipe Holistic (the model the competition's landmarks came from,
with its defaults) over every frame of each video and writes what
`asl_vq.data.inspect`, `asl_vq.data.cache` and training read:

  DIR/train.csv                         path, file_id, sequence_id,
                                        participant_id, phrase (as Kaggle's)
  DIR/train_landmarks/<file_id>.parquet one video each: `frame`, the 1629
                                        landmark columns, `sequence_id` as a
                                        pandas index; NaN = not detected
  DIR/character_to_prediction_index.json
  DIR/videos.json                       per video: name, ids, fps, frames,
                                        width, height; the unreadable ones

train.csv keeps the competition's five columns exactly; the frame rate is in
videos.json (and in each parquet file's metadata). Ids are stable hashes of
the video's path under --input, so a rerun skips the videos already written
from the same bytes (each landmark file records its video's sha256: a video
recorded again under its old name is converted again; files are renamed into
place only when complete, so a killed run leaves no half-written file) and
rewrites train.csv, e.g. with corrected phrases.

--phrases: a CSV with a header and columns `video` (the file name, or its
path relative to --input) and `phrase`, optionally `participant_id` (the
signer: training splits by it; 0 when not given). Videos it does not list get
an empty phrase.

Needs the `video` extra (see `MEDIAPIPE_REQUIREMENT` for why mediapipe itself
is installed apart). A missing input, no videos or no mediapipe: one line on
stderr, exit 1. A video that cannot be read is counted and named at the end.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import sys
import time
import warnings
from typing import Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq
import tqdm

from asl_vq import errors
from asl_vq import fileio
from asl_vq import vocab
from asl_vq.data import layout

# The last MediaPipe with the legacy `mediapipe.solutions.holistic` (0.10.30
# removed `solutions`; the Tasks API that replaced it has no holistic model
# in the wheel and downloads its models at run time). Its wheel bundles the
# Holistic models (pose_landmark_full, hand_landmark_full, face_landmark,
# hand_recrop, the detectors); Python 3.11 linux x86_64 wheel. Every release
# with `solutions` declares protobuf<5 (and from 0.10.15 numpy<2), which
# cannot be installed beside grain (protobuf>=5.28.3) and jax (numpy>=2):
# pip would downgrade jax, numpy and grain. It runs with numpy 2 and
# protobuf 6 (checked: numpy 2.4.6, protobuf 6.33.6) but not protobuf 7
# (FieldDescriptor.label is gone), so the `video` extra installs its other
# dependencies with protobuf<7 and mediapipe goes in with --no-deps.
MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
INSTALL = (
    'pip install -e ".[video]" && pip install --no-deps '
    f'"{MEDIAPIPE_REQUIREMENT}"'
)
# model_complexity 1: the only pose model in the wheel (0 and 2 download).
HOLISTIC_OPTIONS = dict(
    static_image_mode=False, model_complexity=1, refine_face_landmarks=False
)
VIDEO_EXTENSIONS = (
    ".mp4",
    ".mov",
    ".avi",
    ".mkv",
    ".webm",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".3gp",
)
VIDEOS_JSON = "videos.json"
NUM_LANDMARKS = sum(n for _, n in layout.LANDMARK_TYPES)  # 543
_OFFSETS = layout.point_offsets()
# The project's hands: left_hand 0..20 then right_hand 0..20 (reader.py).
HAND_POINTS = np.r_[
    _OFFSETS["left_hand"] : _OFFSETS["left_hand"] + layout.NUM_HAND_POINTS,
    _OFFSETS["right_hand"] : _OFFSETS["right_hand"] + layout.NUM_HAND_POINTS,
]
_PARQUET_KEY = b"asl_vq.video"
# Parquet: all coordinates split by byte, then zstd (as the synthetic hands).
_ENCODING = dict.fromkeys(layout.landmark_columns(), "BYTE_STREAM_SPLIT")


class InputError(errors.UserError):
  """A missing input, no videos found or a bad --phrases CSV."""


class SetupError(RuntimeError):
  """mediapipe is missing or cannot run here (the message says what to do)."""


class VideoError(errors.UserError):
  """A video that cannot be opened or has no decodable frame."""


def holistic_solution():
  """The `mediapipe.solutions.holistic` module.

  Raises:
    SetupError: mediapipe is not installed or has no legacy Holistic.
  """
  os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ warnings.
  _restore_get_prototype()
  try:
    import mediapipe  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SetupError(
        f"mediapipe is not installed: {INSTALL}"
        if e.name == "mediapipe"
        else f"mediapipe cannot be imported ({e}): {INSTALL}"
    ) from None
  try:
    return mediapipe.solutions.holistic
  except AttributeError:
    raise SetupError(
        f"mediapipe {mediapipe_version()} has no legacy " f"Holistic: {INSTALL}"
    ) from None


def holistic():
  """A new MediaPipe Holistic (`HOLISTIC_OPTIONS`); close() it when done.

  Raises:
    SetupError: as `holistic_solution`, or its protobuf is too new.
  """
  solution = holistic_solution()
  try:
    with warnings.catch_warnings():  # Its use of protobuf 5-6 deprecations.
      warnings.simplefilter("ignore", DeprecationWarning)
      return solution.Holistic(**HOLISTIC_OPTIONS)
  except AttributeError as e:  # protobuf 7 removed APIs it uses.
    raise SetupError(
        f"mediapipe {mediapipe_version()} cannot run with "
        f"this protobuf ({e}): pip install 'protobuf<7'"
    ) from None


def _restore_get_prototype() -> None:
  """MediaPipe's C++ bindings call MessageFactory.GetPrototype, which
  protobuf 5 removed: they print an AttributeError and fall back. Restoring
  it (as the GetMessageClass that replaced it) keeps stderr clean."""
  try:
    from google.protobuf import (  # pylint: disable=g-import-not-at-top
        message_factory,
    )
  except ImportError:
    return
  if not hasattr(message_factory.MessageFactory, "GetPrototype"):
    message_factory.MessageFactory.GetPrototype = (
        lambda self, descriptor: message_factory.GetMessageClass(descriptor)
    )


def mediapipe_version() -> str | None:
  try:
    import mediapipe  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return getattr(mediapipe, "__version__", None)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What the container says (fps NaN when it declares no frame rate)."""

  fps: float
  width: int
  height: int


def _open(path: str | os.PathLike):
  """(an open cv2.VideoCapture, the video's info); errors as `frames`."""
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SetupError(f"OpenCV is not installed: {INSTALL}") from None
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such video")
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    capture.release()
    raise VideoError(f"{path}: cannot open the video")
  fps = capture.get(cv2.CAP_PROP_FPS)
  return capture, VideoInfo(
      fps=float(fps) if fps > 0 and math.isfinite(fps) else math.nan,
      width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
      height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
  )


def info(path: str | os.PathLike) -> VideoInfo:
  """What the container says (nothing decoded); errors as `frames`."""
  capture, video_info = _open(path)
  capture.release()
  return video_info


def frames(path: str | os.PathLike) -> tuple[Iterator[np.ndarray], VideoInfo]:
  """The decoded frames, uint8 RGB [H, W, 3] each, and the video's info.

  Raises:
    FileNotFoundError: no such file.
    VideoError: OpenCV cannot open it.
    SetupError: OpenCV is not installed.
  """
  capture, video_info = _open(path)
  import cv2  # pylint: disable=g-import-not-at-top  (there: `_open`)

  def generate():
    try:
      while True:
        ok, bgr = capture.read()
        if not ok:
          return
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
      capture.release()

  return generate(), video_info


def _points(landmark_list, n: int) -> np.ndarray:
  out = np.array([(p.x, p.y, p.z) for p in landmark_list.landmark], np.float32)
  if out.shape != (n, 3):
    raise errors.UserError(f"expected {n} landmarks, got {len(out)}")
  return out


def frame_landmarks(model, rgb: np.ndarray) -> np.ndarray:
  """float32 [543, 3] x, y (image fractions), z of one RGB frame in the
  competition's order (face, left_hand, pose, right_hand); NaN = none."""
  result = model.process(rgb)
  out = np.full((NUM_LANDMARKS, 3), np.nan, np.float32)
  for kind, n in layout.LANDMARK_TYPES:
    found = getattr(result, f"{kind}_landmarks")
    if found is not None:
      out[_OFFSETS[kind] : _OFFSETS[kind] + n] = _points(found, n)
  return out


def _video_landmarks(path, get_model) -> tuple[np.ndarray, VideoInfo]:
  decoded, info = frames(path)  # Fails before any model is made.
  model = get_model()
  model.reset()  # Tracking starts afresh for each video.
  out = [frame_landmarks(model, rgb) for rgb in decoded]
  if not out:
    raise VideoError(f"{os.fspath(path)}: no frame could be decoded")
  return np.stack(out), info


def landmarks(path: str | os.PathLike, model=None) -> tuple[np.ndarray, float]:
  """All Holistic landmarks of a video, as in the competition's files.

  Args:
    path: a video file OpenCV can decode.
    model: a `holistic()` to reuse; by default one is made and closed.

  Returns:
    float32 [T, 543, 3]: per decoded frame, x and y as fractions of the image
    width and height (not corrected for its aspect), z as MediaPipe gives it;
    points in the order face 0..467, left_hand, pose, right_hand (see
    `layout.point_offsets`); NaN where nothing was detected. And the
    container's frames per second (NaN if it declares none).

  Raises:
    FileNotFoundError, VideoError: the video cannot be read.
    SetupError: mediapipe cannot run (see `holistic`).
  """
  own = model is None
  model = holistic() if own else model
  try:
    points, info = _video_landmarks(path, lambda: model)
  finally:
    if own:
      model.close()
  return points, info.fps


def hands(path: str | os.PathLike, model=None) -> tuple[np.ndarray, float]:
  """The project's hands of a video: float32 [T, 42, 2] and its fps.

  Points 0..20 are MediaPipe's left_hand, 21..41 its right_hand; x, y are
  fractions of the image width and height, NaN where a hand is not detected:
  what `reader.read_hands` gives for a Kaggle sequence. T counts every
  decoded frame. Arguments and errors as `landmarks`.
  """
  points, fps = landmarks(path, model)
  return points[:, HAND_POINTS, :2], fps


# -------------------------------------------------------------------- writer


def find_videos(input_path: str | os.PathLike) -> list[str]:
  """The video files under a directory (recursively, by extension, sorted),
  or the file itself.

  Raises:
    InputError: the input does not exist or holds no video.
  """
  input_path = os.fspath(input_path)
  if os.path.isfile(input_path):
    return [input_path]
  if not os.path.isdir(input_path):
    raise InputError(f"{input_path}: no such file or directory")
  found = sorted(
      os.path.join(d, name)
      for d, _, names in os.walk(input_path)
      for name in names
      if name.lower().endswith(VIDEO_EXTENSIONS)
  )
  if not found:
    raise InputError(
        f"{input_path}: no videos found (looked for "
        f"{', '.join(VIDEO_EXTENSIONS)})"
    )
  return found


def read_phrases(csv_path: str) -> dict[str, tuple[str, int]]:
  """--phrases: video name -> (phrase, participant_id).

  Raises:
    InputError: missing file or columns, or a bad participant_id.
  """
  try:
    # utf-8-sig: a CSV saved by Excel starts with a byte-order mark.
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
      rows = list(csv.DictReader(f))
  except OSError as e:
    raise InputError(f"{csv_path}: cannot read the phrases: {e}") from None
  out = {}
  for i, row in enumerate(rows, 2):
    if row.get("video") is None or row.get("phrase") is None:
      raise InputError(
          f"{csv_path}: need the columns 'video' and 'phrase' "
          "(with a header row)"
      )
    try:
      participant = int(row.get("participant_id") or 0)
    except ValueError:
      raise InputError(
          f"{csv_path} line {i}: participant_id must be an "
          f"integer, got {row['participant_id']!r}"
      ) from None
    out[row["video"]] = (row["phrase"], participant)
  return out


def sequence_id(name: str) -> int:
  """A stable id in [1, 2**31) for a video's path under the input."""
  digest = hashlib.sha256(name.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % (2**31 - 1) + 1


def _landmark_path(out_dir: str, file_id: int) -> tuple[str, str]:
  _, directory = layout.SOURCES["train"]
  rel = f"{directory}/{file_id}.parquet"
  return rel, os.path.join(out_dir, rel)


def write_landmarks(path: str, sid: int, points: np.ndarray, info: dict):
  """One sequence's landmark file, renamed into place when complete."""
  t = len(points)
  table = layout.landmark_table(
      np.full(t, sid),
      np.arange(t),
      {
          kind: points[:, _OFFSETS[kind] : _OFFSETS[kind] + n]
          for kind, n in layout.LANDMARK_TYPES
      },
      pandas_index=True,
  )
  table = table.replace_schema_metadata(
      {**table.schema.metadata, _PARQUET_KEY: json.dumps(info).encode()}
  )
  fileio.atomic_write(
      path,
      functools.partial(
          pq.write_table,
          table,
          compression="zstd",
          use_dictionary=False,
          column_encoding=_ENCODING,
      ),
  )


def _written_info(path: str) -> dict | None:
  """The info of a landmark file a previous run wrote, else None."""
  try:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[_PARQUET_KEY])
  except (OSError, ValueError, KeyError):
    return None


_WORKER_MODEL = None  # Each process's Holistic, made for its first video.


def _worker_model():
  global _WORKER_MODEL
  if _WORKER_MODEL is None:
    _WORKER_MODEL = holistic()
  return _WORKER_MODEL


def _convert_one(
    task: tuple[str, str, int, str, str],
) -> tuple[str, dict | str]:
  """Writes one video's file; (name, info) or (name, why it failed)."""
  video, name, sid, path, digest = task
  try:
    points, info = _video_landmarks(video, _worker_model)
  except SetupError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # OpenCV and MediaPipe raise their own kinds on bad input: any of them
    # fails this video only.
    return name, str(e) if isinstance(e, (OSError, VideoError)) else (
        f"{type(e).__name__}: {e}"
    )
  meta = dict(
      video=name,
      sha256=digest,
      sequence_id=sid,
      file_id=sid,
      frames=len(points),
      fps=None if math.isnan(info.fps) else info.fps,
      width=info.width,
      height=info.height,
      mediapipe=mediapipe_version(),
  )
  write_landmarks(path, sid, points, meta)
  return name, meta


@contextlib.contextmanager
def _native_stderr_silenced():
  """Sends file descriptor 2 to /dev/null, where MediaPipe's C++ code logs
  some ten lines per video, while Python's sys.stderr (the progress bar,
  warnings) keeps writing where stderr went before."""
  sys.stderr.flush()
  saved = os.dup(2)
  python_stderr = sys.stderr
  sys.stderr = open(
      saved, "w", buffering=1, closefd=False, errors="backslashreplace"
  )
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)
  try:
    yield
  finally:
    sys.stderr.flush()
    sys.stderr = python_stderr
    os.dup2(saved, 2)
    os.close(saved)


def _run(tasks, workers: int, progress: bool) -> Iterator[tuple[str, object]]:
  """(name, info or why it failed) per task, as they finish.

  Raises:
    SetupError: from the first video that needs a Holistic, when mediapipe
      cannot run (a worker raises it back to this process).
  """
  with _native_stderr_silenced():
    yield from _run_silenced(tasks, workers, progress)


def _run_silenced(tasks, workers, progress):
  global _WORKER_MODEL
  bar = functools.partial(
      tqdm.tqdm,
      total=len(tasks),
      desc="videos",
      unit="video",
      file=sys.stderr,
      disable=not progress,
  )
  if workers <= 1 or len(tasks) <= 1:
    try:
      yield from bar(map(_convert_one, tasks))
    finally:
      if _WORKER_MODEL is not None:
        _WORKER_MODEL.close()
        _WORKER_MODEL = None
    return
  # spawn: each worker starts clean and makes its own Holistic.
  with multiprocessing.get_context("spawn").Pool(
      min(workers, len(tasks))
  ) as pool:
    yield from bar(pool.imap_unordered(_convert_one, tasks))


def convert(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    phrases: str | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, object]:
  """Writes the Kaggle layout of the videos (see the module docstring).

  Args:
    input_path: a video, or a directory searched recursively.
    out_dir: the dataset directory (created; a rerun resumes it).
    phrases: the --phrases CSV, or None (empty phrases, participant 0).
    workers: processes, each with its own Holistic.
    progress: show a progress bar on stderr.

  Returns:
    A summary: videos, written (now), resumed (already there), unreadable
    (name -> why), frames and seconds.

  Raises:
    InputError: bad input or phrases CSV. SetupError: mediapipe cannot run.
  """
  start = time.time()
  input_path, out_dir = os.fspath(input_path), os.fspath(out_dir)
  videos = find_videos(input_path)
  root = (
      input_path if os.path.isdir(input_path) else os.path.dirname(input_path)
  )
  names = [os.path.relpath(v, root).replace(os.sep, "/") for v in videos]
  labels = read_phrases(phrases) if phrases else {}
  ids = [sequence_id(n) for n in names]
  if len(set(ids)) < len(ids):  # ~1e-9 for 2000 videos; say so if it occurs.
    raise InputError("two video names hash to one id; rename one of them")
  os.makedirs(os.path.join(out_dir, layout.SOURCES["train"][1]), exist_ok=True)
  done, tasks = {}, []
  for video, name, sid in zip(videos, names, ids):
    rel, path = _landmark_path(out_dir, sid)
    info = _written_info(path)
    digest = fileio.sha256(video)
    # A file written before digests were recorded is kept by its name.
    if (
        info is not None
        and info.get("video") == name
        and info.get("sha256", digest) == digest
    ):
      done[name] = info
    else:
      tasks.append((video, name, sid, path, digest))
  resumed = len(done)
  if tasks:
    holistic_solution()  # Not installed: fail before any video.
  unreadable = {}
  for name, result in _run(tasks, workers, progress):
    if isinstance(result, str):
      unreadable[name] = result
    else:
      done[name] = result
  listed = {n: labels.get(n) or labels.get(os.path.basename(n)) for n in names}
  _write_metadata(
      out_dir,
      [(n, done[n], listed[n] or ("", 0)) for n in names if n in done],
      unreadable,
  )
  return dict(
      videos=len(videos),
      written=len(done) - resumed,
      resumed=resumed,
      unreadable=unreadable,
      without_phrase=sorted(n for n in done if not listed[n]),
      frames=sum(i["frames"] for i in done.values()),
      seconds=round(time.time() - start, 1),
  )


def _write_metadata(out_dir: str, rows, unreadable: dict[str, str]) -> None:
  csv_name, _ = layout.SOURCES["train"]

  def write_csv(binary):
    f = io.TextIOWrapper(binary, newline="", encoding="utf-8")
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(layout.METADATA_COLUMNS)
    for _, info, (phrase, participant) in rows:
      rel, _ = _landmark_path(out_dir, info["file_id"])
      writer.writerow(
          [rel, info["file_id"], info["sequence_id"], participant, phrase]
      )
    f.flush()
    f.detach()  # `atomic_write` syncs and closes the file.

  fileio.atomic_write(os.path.join(out_dir, csv_name), write_csv)
  fileio.write_json(
      os.path.join(out_dir, layout.CHARACTER_MAP), vocab.as_json_dict()
  )
  fileio.write_json(
      os.path.join(out_dir, VIDEOS_JSON),
      dict(
          generator="asl_vq.data.video",
          holistic=HOLISTIC_OPTIONS,
          videos=[info for _, info, _ in rows],
          unreadable=unreadable,
      ),
  )


# ----------------------------------------------------------------------- CLI


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("input", None, "A video, or a directory of videos.")
  flags.DEFINE_string("out", None, "Dataset directory to write.")
  flags.DEFINE_string("phrases", None, "CSV: video,phrase[,participant_id].")
  flags.DEFINE_integer("workers", 1, "Videos processed in parallel.")
  flags.mark_flags_as_required(["input", "out"])


def main(argv: Sequence[str]) -> None:
  from absl import app, flags  # pylint: disable=g-import-not-at-top

  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  try:
    summary = convert(
        values.input, values.out, phrases=values.phrases, workers=values.workers
    )
  except (InputError, SetupError) as e:
    print(f"error: {e}".replace("\n", " "), file=sys.stderr)
    sys.exit(1)
  unreadable = summary["unreadable"]
  print(
      f"{summary['videos']} videos: {summary['written']} written, "
      f"{summary['resumed']} already there, {len(unreadable)} unreadable; "
      f"{summary['frames']} frames in {summary['seconds']} s -> "
      f"{values.out}"
  )
  for name, why in unreadable.items():
    print(f"  unreadable: {name}: {why}")
  if summary["without_phrase"]:
    print(
        f"  {len(summary['without_phrase'])} without a phrase, e.g. "
        f"{summary['without_phrase'][0]}"
    )


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top

  _define_flags()
  app.run(main)
