r"""How stable a tokenizer's codes are, and how well they draw back into the
picture: what a user encoding their own recordings needs to know.

  python -m asl_vq.analysis.stability --tokenizer=RUN \
      [--clips=signs.npz[,...]] [--which=best] [--out=stability.json]

On the tokenizer's own test split (its config's data: the embedded
synthetic set, or the Kaggle data it was trained on) and on each `--clips`
file (an `.npz` of clips float32 [T, 42, 2] in the project's hand layout,
NaN where no hand was found; e.g. `../shared/realhands/signsuisse_signs.npz`,
not shipped), it reports:

- **Context**: each clip A of a consecutive pair (A, B) whose frames with a
  hand fit the model's length together, encoded alone and followed by B in
  one sequence (`Tokenizer.encode`): the fraction of A's frames whose
  first-quantizer code (q0), and whose whole code group, agree.
- **Windows**: sequences longer than a window, encoded whole and by
  `Tokenizer.encode_frames` in windows of 1/4, 1/2 and 3/4 of the model's
  length (default overlap, half a window): the fraction of frames whose q0
  code agrees.
- **Image error**: every sequence encoded (`encode_frames`), decoded and put
  back into the input's coordinates (`Tokenizer.to_image`): the mean
  distance of a detected point from its reconstruction, in the input's
  units (image fractions for MediaPipe) and in palm lengths (wrist to the
  middle finger's knuckle) of its hand.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from absl import flags

from asl_vq import cli
from asl_vq import errors
from asl_vq import fileio
from asl_vq.data import datasets
from asl_vq.data import layout
from asl_vq.inference import Tokenizer

WINDOW_FRACTIONS = (0.25, 0.5, 0.75)
_H = layout.NUM_HAND_POINTS
_WRIST, _MIDDLE_KNUCKLE = 0, 9  # MediaPipe's hand points.


def _with_hand(clip: np.ndarray) -> np.ndarray:
  return clip[~np.isnan(clip).all(axis=(1, 2))]


def context_agreement(
    tok: Tokenizer, clips: Sequence[np.ndarray]
) -> dict[str, float]:
  """A's codes alone vs followed by B, for consecutive pairs (A, B) of
  `clips` that fit `tok.max_len` together (see the module docstring)."""
  kept = [k for k in map(_with_hand, clips) if len(k)]
  pairs = [
      (a, b)
      for a, b in zip(kept[::2], kept[1::2])
      if len(a) + len(b) <= tok.max_len
  ]
  if not pairs:
    return dict(pairs=0)
  alone = tok.encode([a for a, _ in pairs])
  followed = tok.encode([np.concatenate([a, b]) for a, b in pairs])
  same = [x == y[: len(x)] for x, y in zip(alone, followed)]
  return dict(
      pairs=len(pairs),
      frames=int(sum(len(s) for s in same)),
      q0=float(np.concatenate([s[:, 0] for s in same]).mean()),
      all=float(np.concatenate([s.all(1) for s in same]).mean()),
  )


def window_agreement(
    tok: Tokenizer, clips: Sequence[np.ndarray]
) -> dict[str, dict[str, float]]:
  """window length -> q0 agreement of windowed with whole encoding, over
  the clips (with at most `tok.max_len` frames with a hand) longer than the
  window."""
  fits = [c for c in clips if 0 < len(_with_hand(c)) <= tok.max_len]
  whole = tok.encode(fits)
  out = {}
  for fraction in WINDOW_FRACTIONS:
    window = max(1, int(tok.max_len * fraction))
    longer = [i for i, w in enumerate(whole) if len(w) > window]
    if not longer:
      continue
    got = tok.encode_frames([fits[i] for i in longer], window=window)
    same = np.concatenate(
        [g.codes[:, 0] == whole[i][:, 0] for g, i in zip(got, longer)]
    )
    out[str(window)] = dict(
        sequences=len(longer), frames=len(same), q0=float(same.mean())
    )
  return out


def image_error(
    tok: Tokenizer, clips: Sequence[np.ndarray]
) -> dict[str, float]:
  """Reconstruction error in the input's units (see the module
  docstring), over every detected hand of every frame with a code."""
  clips = [c for c in clips if len(_with_hand(c))]
  got = tok.encode_frames(clips)
  decoded = tok.decode([g.codes for g in got])
  distance, palms = [], []
  for clip, g, d in zip(clips, got, decoded):
    true, drawn = clip[g.frames], tok.to_image(d, g)
    for side in (slice(0, _H), slice(_H, 2 * _H)):
      p, q = true[:, side], drawn[:, side]
      seen = ~np.isnan(p).any(axis=(1, 2))
      dist = np.linalg.norm(p[seen] - q[seen], axis=-1).mean(axis=1)
      palm = np.linalg.norm(p[seen, _MIDDLE_KNUCKLE] - p[seen, _WRIST], axis=-1)
      distance.append(dist)
      palms.append(dist / np.maximum(palm, 1e-6))
  distance, palms = np.concatenate(distance), np.concatenate(palms)
  return dict(
      hands=len(distance),
      mean=float(distance.mean()),
      median=float(np.median(distance)),
      palm_lengths_median=float(np.median(palms)),
  )


def measure(tok: Tokenizer, clips: Sequence[np.ndarray]) -> dict[str, Any]:
  """The three figures of the module docstring for `clips`."""
  if not any(len(_with_hand(c)) for c in clips):
    raise errors.UserError("no clip has a frame with a hand")
  return dict(
      clips=len(clips),
      context=context_agreement(tok, clips),
      windows=window_agreement(tok, clips),
      image_error=image_error(tok, clips),
  )


def load_clips(path: str) -> list[np.ndarray]:
  """The arrays of an `.npz`, in its order, each float32 [T, 42, 2].

  Raises:
    errors.UserError: an array that is not [T, 42, 2].
  """
  with np.load(path) as f:
    clips = [(k, np.asarray(f[k], np.float32)) for k in f.files]
  for key, clip in clips:
    if clip.ndim != 3 or clip.shape[1:] != (layout.NUM_POINTS, 2):
      raise errors.UserError(
          f"{path}: {key} is {clip.shape}, not " f"[T, {layout.NUM_POINTS}, 2]"
      )
  return [c for _, c in clips]


def report(name: str, r: dict[str, Any]) -> str:
  """The figures as a few lines of text."""
  c, e = r["context"], r["image_error"]
  lines = [f"{name}: {r['clips']} clips"]
  if c["pairs"]:
    lines.append(
        f"  context: a clip alone vs followed by the next, "
        f"{c['pairs']} pairs, {c['frames']} frames: q0 agrees "
        f"{c['q0']:.3f}, every quantizer {c['all']:.3f}"
    )
  for window, w in r["windows"].items():
    lines.append(
        f"  windows of {window}: q0 agrees with whole encoding "
        f"{w['q0']:.3f} ({w['sequences']} sequences, "
        f"{w['frames']} frames)"
    )
  lines.append(
      f"  image error: {e['mean']:.4f} mean, {e['median']:.4f} "
      f"median per point (input units), "
      f"{e['palm_lengths_median']:.2f} palm lengths median, over "
      f"{e['hands']} hands"
  )
  return "\n".join(lines)


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a program, so importing the module defines no flags."""
  cli.define_tokenizer_flags()
  flags.DEFINE_list("clips", [], ".npz files of [T, 42, 2] clips.")
  flags.DEFINE_integer(
      "max_sequences", 300, "Test-split sequences measured (the first N)."
  )
  flags.DEFINE_string("out", "", "Also write the figures as JSON here.")


def main(argv) -> None:
  cli.start(argv)
  tok = Tokenizer.load(FLAGS.tokenizer, FLAGS.which, batch_size=32)
  test = datasets.load(tok.config)["test"]
  sets = {
      "test split": [
          test[i]["hands"] for i in range(min(FLAGS.max_sequences, len(test)))
      ]
  }
  sets.update({path: load_clips(path) for path in FLAGS.clips})
  results = {}
  for name, clips in sets.items():
    results[name] = measure(tok, clips)
    print(report(name, results[name]), flush=True)
  if FLAGS.out:
    fileio.write_json(
        FLAGS.out,
        dict(
            tokenizer=FLAGS.tokenizer,
            which=FLAGS.which,
            fingerprint=tok.fingerprint,
            results=results,
        ),
    )


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
