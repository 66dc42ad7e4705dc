r"""Codes -> hand landmarks with a trained tokenizer's decoder.

  python -m asl_vq.decode --tokenizer=RUN --codes=TEXT_OR_FILE --out=FILE \
      [--n_q=K] [--id=ID] [--which=best] [--fps=30]

`--codes` is codes in the text form (`inference.TEXT_FORMAT`, e.g.
"<a98><b624> <a3><b7>"), a text file holding them (e.g. `asl_vq.generate`'s
sample_0_codes.txt), or a records file from `asl_vq.encode` (.jsonl, .csv,
.parquet: the record `--id`, by default the first). `--n_q` decodes from the
first K quantizers only (default: all that the codes hold).

A record goes **back into the picture**: its frames are put back into the
input's coordinates (`Tokenizer.to_image`, with the statistics the record
keeps) at the input's frames (`num_frames` of them, NaN where the input had
no hand, or did not have that hand), at the record's frame rate (`--fps`
overrides it). Codes text has none of that: its landmarks stay in the
model's space (x and y standardised as `pipeline.preprocess` does, y down;
an absent hand comes out near 0), one frame per code group, at `--fps`
(default 30). `--out`'s extension picks the output:
  .npy   the landmarks, float32 [T, 42, 2] (left hand's 21 points, then the
         right's).
  .pose  a record's: the input's image size where the record has it (a
         `.pose` or video input; else 512 x 512), pixels = fractions x size;
         confidence 0 where a hand is NaN. Codes text: a 512 x 512 canvas at
         0.5 + v / 8 (`to_canvas`, 4 standard deviations either way; with
         the "hand" normalization each hand side by side,
         `Tokenizer.drawable`).
  .gif   an animation of the skeleton; a record's drawn over its input in
         grey when its `source` can be read again (a `.pose` file, a Kaggle
         parquet file).
Bad input: one line on stderr, exit 1.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags
from etils import epath

from asl_vq import cli
from asl_vq import code_records
from asl_vq import errors
from asl_vq import fileio
from asl_vq import plotting
from asl_vq.data import pose as pose_lib
from asl_vq.data import reader
from asl_vq.inference import FrameCodes
from asl_vq.inference import Tokenizer

OUTPUTS = (".npy", ".pose", ".gif")
CANVAS_STDS = 4.0  # Standard deviations from the centre to the edge.
CANVAS_PIXELS = 512  # The .pose canvas' width and height.


def read_codes(
    tokenizer: Tokenizer, codes: str, id_: str | None = None
) -> tuple[np.ndarray, dict | None]:
  """(int32 codes [T, k], the record or None for text) from `--codes` (see
  the module docstring).

  Raises:
    ValueError: malformed codes text, no record `id_`, an empty records
      file, `id_` with codes that are not in a records file, or a value that
      is neither a file nor codes text.
    OSError: the file cannot be read.
  """
  if _is_file(codes) and codes.lower().endswith(code_records.FORMATS):
    records = code_records.read(codes)
    chosen = [r for r in records if id_ is None or r["id"] == id_]
    if not chosen:
      raise errors.UserError(
          f"{codes}: "
          + (f"no record has the id {id_!r}" if records else "holds no records")
      )
    return _parse(tokenizer, chosen[0]["text"], codes), chosen[0]
  if id_ is not None:
    raise errors.UserError(
        "--id picks a record of a .jsonl, .csv or .parquet "
        "file from asl_vq.encode, not of codes text"
    )
  if _is_file(codes):
    try:
      text = epath.Path(codes).read_text(encoding="utf-8")
    except UnicodeDecodeError:
      raise errors.UserError(
          f"{codes}: not a text file of codes; give codes text, or a "
          ".jsonl, .csv or .parquet file of records"
      ) from None
    return _parse(tokenizer, text.strip(), codes), None
  if not codes.startswith("<"):
    raise errors.UserError(
        f"--codes={codes!r} is neither a file nor codes text "
        "like '<a98><b624> <a3><b7>'"
    )
  return _parse(tokenizer, codes, "--codes"), None


def _is_file(codes: str) -> bool:
  """Whether `--codes` names a file (local or `gs://...`), not codes text."""
  if fileio.is_remote(codes):
    return epath.Path(codes).is_file()
  return os.path.isfile(codes)


def _parse(tokenizer: Tokenizer, text: str, where: str) -> np.ndarray:
  try:
    return tokenizer.from_text(text)
  except ValueError as e:
    raise errors.UserError(f"{where}: {e}") from None


def output_format(out: str) -> str:
  """The extension of `out`, one of `OUTPUTS`; raises ValueError if not."""
  ext = os.path.splitext(out)[1].lower()
  if ext not in OUTPUTS:
    raise errors.UserError(
        f"{out}: the output must end in {', '.join(OUTPUTS)}"
    )
  return ext


def to_canvas(landmarks: np.ndarray) -> np.ndarray:
  """Drawable model-space landmarks (`Tokenizer.drawable`) -> normalised
  image coordinates, 0.5 + v / 8."""
  return 0.5 + np.asarray(landmarks, np.float32) / (2 * CANVAS_STDS)


def frame_codes(record: dict, codes: np.ndarray) -> FrameCodes | None:
  """What `Tokenizer.to_image` needs, from an `asl_vq.encode` record; None
  for a record written before it kept its statistics.

  Raises:
    errors.UserError: the record's fields are not one per code group.
  """
  if record.get("mean") is None or record.get("frames") is None:
    return None
  fields = {
      k: np.asarray(record.get(k), float if k != "seen" else None)
      for k in ("frames", "mean", "std", "seen")
  }
  shapes = dict(frames=(), mean=(2, 2), std=(2, 2), seen=(2,))
  if any(
      v.shape != (len(codes), *shapes[k]) for k, v in fields.items()
  ) or not all(0 <= f < record["num_frames"] for f in fields["frames"]):
    raise errors.UserError(
        f"record {record['id']}: its frames, mean, std and seen are not one "
        f"per code group within its {record['num_frames']} frames"
    )
  return FrameCodes(
      codes=codes,
      frames=fields["frames"].astype(np.int64),
      missing=np.setdiff1d(np.arange(record["num_frames"]), fields["frames"]),
      num_frames=int(record["num_frames"]),
      fps=record.get("fps"),
      mean=fields["mean"].astype(np.float32),
      std=fields["std"].astype(np.float32),
      seen=fields["seen"].astype(bool),
  )


def input_hands(record: dict) -> np.ndarray | None:
  """The hands [num_frames, 42, 2] a record was encoded from, read again
  from its `source` (a `.pose` file, a Kaggle parquet file); None when
  that cannot be read (a video: MediaPipe is not run again)."""
  source = record.get("source") or ""
  try:
    if source.lower().endswith(".pose"):
      hands = pose_lib.read(source)[0]
    elif source.lower().endswith(".parquet"):
      hands = reader.read_hands(source).get(int(record["id"]))
    else:
      return None
  except (OSError, ValueError, ImportError):  # ImportError: no pose-format.
    return None
  if hands is None or len(hands) != record["num_frames"]:
    return None
  return hands


def decode(
    tokenizer: Tokenizer,
    codes: np.ndarray,
    out: str,
    *,
    n_q: int | None = None,
    fps: float | None = None,
    record: dict | None = None,
) -> np.ndarray:
  """Decodes codes int [T, k] and writes them to `out` (.npy, .pose, .gif).

  Returns what it wrote (see the module docstring): with a `record` of
  `asl_vq.encode` that keeps its statistics, landmarks float32
  [num_frames, 42, 2] in the input's coordinates; otherwise [T, 42, 2] in
  the model's space. From the first `n_q` quantizers (default k).

  Raises:
    errors.UserError: an unknown output extension, no codes, `n_q` not in
      [1, k], or a record whose fields do not match its codes.
  """
  ext = output_format(out)
  title = record["id"] if record else ""
  if not len(codes):
    raise errors.UserError(
        f"{title or 'the codes'}: no frames to decode (a "
        "sequence with no hand has no codes)"
    )
  if n_q is not None and not 1 <= n_q <= codes.shape[1]:
    raise errors.UserError(
        f"n_q={n_q}, but the codes hold {codes.shape[1]} " "quantizers"
    )
  placement = frame_codes(record, codes) if record else None
  landmarks = tokenizer.decode(codes, n_q)
  if placement is not None:
    landmarks = tokenizer.to_image(landmarks, placement, every_frame=True)
  fps = fps or (record or {}).get("fps") or plotting.FPS
  if not fileio.is_remote(out):
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with fileio.writing(out) as local:  # a gs:// out: uploaded when written.
    if ext == ".npy":
      np.save(local, landmarks)
    elif ext == ".pose" and placement is not None:
      width = record.get("width") or CANVAS_PIXELS
      height = record.get("height") or CANVAS_PIXELS
      pose_lib.write(local, landmarks, fps, width=width, height=height)
    elif ext == ".pose":
      pose_lib.write(
          local,
          to_canvas(tokenizer.drawable(landmarks)),
          fps,
          width=CANVAS_PIXELS,
          height=CANVAS_PIXELS,
      )
    elif placement is not None:
      plotting.save_gif(
          landmarks, local, title=title, fps=fps, underlay=input_hands(record)
      )
    else:
      plotting.save_gif(
          tokenizer.drawable(landmarks), local, title=title, fps=fps
      )
  return landmarks


FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a program, so importing the module defines no flags."""
  cli.define_tokenizer_flags()
  flags.DEFINE_string(
      "codes",
      None,
      "Codes text, a file of it, or a records " "file from asl_vq.encode.",
  )
  flags.DEFINE_string("out", None, "Output file: .npy, .pose or .gif.")
  flags.DEFINE_integer(
      "n_q",
      None,
      "Decode from the first K quantizers " "(default: all the codes hold).",
  )
  flags.DEFINE_string(
      "id",
      None,
      "The record to decode from a records file " "(default: the first).",
  )
  flags.DEFINE_float(
      "fps",
      None,
      "Frame rate of .pose and .gif (default: " "the record's, else 30).",
  )
  flags.mark_flags_as_required(["codes", "out"])


def main(argv):
  cli.start(argv)
  output_format(FLAGS.out)  # Before the slow model load.
  tokenizer = Tokenizer.load(FLAGS.tokenizer, FLAGS.which)
  codes, record = read_codes(tokenizer, FLAGS.codes, FLAGS.id)
  landmarks = decode(
      tokenizer, codes, FLAGS.out, n_q=FLAGS.n_q, fps=FLAGS.fps, record=record
  )
  where = (
      "the input's coordinates and frames"
      if record and frame_codes(record, codes) is not None
      else "the model's space"
  )
  print(f"{FLAGS.out}: {len(landmarks)} frames, in {where}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
