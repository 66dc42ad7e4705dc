r"""Codes -> hand landmarks with a trained tokenizer's decoder.

  python -m asl_vq.decode --tokenizer=RUN --codes=TEXT_OR_FILE --out=FILE \
      [--n_q=K] [--id=ID] [--which=best] [--fps=30]

`--codes` is codes in the text form (`inference.TEXT_FORMAT`, e.g.
"<a98><b624> <a3><b7>"), a text file holding them (e.g. `asl_vq.generate`'s
sample_0_codes.txt), or a records file from `asl_vq.encode` (.jsonl, .csv,
.parquet: the record `--id`, by default the first). `--n_q` decodes from the
first K quantizers only (default: all that the codes hold).

The decoder gives landmarks float32 [T, 42, 2], one frame per row of codes,
in the model's input space (`pipeline.preprocess`): x and y each
standardised over the sequence (zero mean, unit standard deviation,
`pipeline.normalize`), y down, the left hand's 21 points then the right's; a
hand that is absent comes out near 0. `--out`'s extension picks the output:
  .npy   those landmarks as they are.
  .pose  the same placed on a square canvas (`to_canvas`: normalised image
         coordinate 0.5 + v / 8, so 4 standard deviations either way span
         the image), at `--fps`; `asl_vq.data.pose.read` gives back
         0.5 + v / 8.
  .gif   an animation of the hand skeleton at `--fps`.
Bad input: one line on stderr, exit 1.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app
from absl import flags
from absl import logging
from etils import epath

from asl_vq import cli
from asl_vq import code_records
from asl_vq import compilation_cache
from asl_vq import errors
from asl_vq import fileio
from asl_vq import plotting
from asl_vq.data import pose as pose_lib
from asl_vq.inference import Tokenizer

OUTPUTS = (".npy", ".pose", ".gif")
CANVAS_STDS = 4.       # Standard deviations from the centre to the edge.
CANVAS_PIXELS = 512    # The .pose canvas' width and height.


def read_codes(tokenizer: Tokenizer, codes: str, id_: str | None = None
               ) -> tuple[np.ndarray, str]:
  """(int32 codes [T, k], a name) from `--codes` (see the module docstring).

  The name is the record's id, or "" for text.

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
      raise errors.UserError(f"{codes}: " + (f"no record has the id {id_!r}"
                                       if records else "holds no records"))
    return _parse(tokenizer, chosen[0]["text"], codes), chosen[0]["id"]
  if id_ is not None:
    raise errors.UserError("--id picks a record of a .jsonl, .csv or .parquet "
                           "file from asl_vq.encode, not of codes text")
  if _is_file(codes):
    try:
      text = epath.Path(codes).read_text(encoding="utf-8")
    except UnicodeDecodeError:
      raise errors.UserError(
          f"{codes}: not a text file of codes; give codes text, or a "
          ".jsonl, .csv or .parquet file of records") from None
    return _parse(tokenizer, text.strip(), codes), ""
  if not codes.startswith("<"):
    raise errors.UserError(
        f"--codes={codes!r} is neither a file nor codes text "
        "like '<a98><b624> <a3><b7>'")
  return _parse(tokenizer, codes, "--codes"), ""


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
        f"{out}: the output must end in {', '.join(OUTPUTS)}")
  return ext


def to_canvas(landmarks: np.ndarray) -> np.ndarray:
  """Model-space landmarks -> normalised image coordinates, 0.5 + v / 8."""
  return 0.5 + np.asarray(landmarks, np.float32) / (2 * CANVAS_STDS)


def decode(tokenizer: Tokenizer, codes: np.ndarray, out: str, *,
           n_q: int | None = None, fps: float = plotting.FPS,
           title: str = "") -> np.ndarray:
  """Decodes codes int [T, k] and writes them to `out` (.npy, .pose, .gif).

  Returns the landmarks float32 [T, 42, 2] in the model's space (see the
  module docstring), from the first `n_q` quantizers (default k).

  Raises:
    ValueError: an unknown output extension, no codes, or `n_q` not in
      [1, k].
  """
  ext = output_format(out)
  if not len(codes):
    raise errors.UserError(f"{title or 'the codes'}: no frames to decode (a "
                           "sequence with no hand has no codes)")
  if n_q is not None and not 1 <= n_q <= codes.shape[1]:
    raise errors.UserError(f"n_q={n_q}, but the codes hold {codes.shape[1]} "
                           "quantizers")
  landmarks = tokenizer.decode(codes, n_q)
  if not fileio.is_remote(out):
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with fileio.writing(out) as local:   # a gs:// out: uploaded when written.
    if ext == ".npy":
      np.save(local, landmarks)
    elif ext == ".pose":
      pose_lib.write(local, to_canvas(landmarks), fps, width=CANVAS_PIXELS,
                     height=CANVAS_PIXELS)
    else:
      plotting.save_gif(landmarks, local, title=title, fps=fps)
  return landmarks


FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a program, so importing the module defines no flags."""
  flags.DEFINE_string("tokenizer", None, "The tokenizer's training workdir.")
  flags.DEFINE_string("codes", None, "Codes text, a file of it, or a records "
                      "file from asl_vq.encode.")
  flags.DEFINE_string("out", None, "Output file: .npy, .pose or .gif.")
  flags.DEFINE_integer("n_q", None, "Decode from the first K quantizers "
                       "(default: all the codes hold).")
  flags.DEFINE_string("id", None, "The record to decode from a records file "
                      "(default: the first).")
  flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint.")
  flags.DEFINE_float("fps", plotting.FPS, "Frame rate of .pose and .gif.")
  flags.mark_flags_as_required(["tokenizer", "codes", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # Orbax's INFO lines.
  compilation_cache.enable()
  output_format(FLAGS.out)   # Before the slow model load.
  tokenizer = Tokenizer.load(FLAGS.tokenizer, FLAGS.which)
  codes, name = read_codes(tokenizer, FLAGS.codes, FLAGS.id)
  landmarks = decode(tokenizer, codes, FLAGS.out, n_q=FLAGS.n_q,
                     fps=FLAGS.fps, title=name)
  print(f"{FLAGS.out}: {len(landmarks)} frames")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
