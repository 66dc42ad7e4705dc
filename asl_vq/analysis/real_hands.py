r"""How a trained tokenizer reads real hands: letters and spelled words.

  python -m asl_vq.analysis.real_hands --tokenizer=RUN \
      --letters=letters.npz --language=ase [--which=best] \
      [--out=real_hands.json]

`--letters` is an `.npz` mapping `<language>/<letter>` to one clip of that
fingerspelled letter, float32 [T, 42, 2] (the project's hand layout: the
left hand's 21 MediaPipe points, then the right's, x and y, NaN where no
hand was found), such as the SpreadTheSign letters that the project measures
on (`../shared/realhands/spreadthesign_letters.npz`, not shipped). For the
clips of `--language` it reports:

- **Codes vs letters**, per frame with a hand (each clip encoded as one
  sequence): the adjusted mutual information between the first quantizer's
  code and the letter, and a held-out accuracy: the frames of every clip are
  split in two halves at random, each code is mapped to the commonest letter
  of its frames in the first half, and the map names the letters of the
  second half (a code unseen in the first half counts as wrong). The same
  protocol on a k-means of the model's inputs (the normalised hands) with as
  many clusters as the codes used is the baseline: what clustering the raw
  hands already gives.
- **Spelled words**, with a CTC head: `--num_words` random strings of the
  available letters (4-8 letters), each the concatenation of its letters'
  clips, read by `Tokenizer.transcribe`; the score is the normalised
  Levenshtein (N - D) / N of `asl_vq.metrics`, with examples. The clips keep
  their own timing (the SpreadTheSign letters last ~1 s each, where the
  `cpu` preset's synthetic letters last 6 frames), so this reads real letter
  shapes at a real letter's pace.

Needs scikit-learn (the `measure` extra) for the AMI and the k-means.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from absl import flags

from asl_vq import cli
from asl_vq import errors
from asl_vq import fileio
from asl_vq import metrics
from asl_vq.inference import Tokenizer


def _sklearn():
  try:
    # pylint: disable-next=g-import-not-at-top
    from sklearn import cluster, metrics as sk_metrics
  except ImportError:
    raise errors.MissingExtra(
        "asl_vq.analysis.real_hands needs scikit-learn: pip install -e "
        "'.[measure]'"
    ) from None
  return cluster, sk_metrics


def load_letters(
    path: str | os.PathLike, language: str
) -> dict[str, np.ndarray]:
  """letter (lower case) -> float32 [T, 42, 2], the `language/...` clips.

  Raises:
    ValueError: no clip of `language`, or a clip not [T, 42, 2].
  """
  with np.load(path) as f:
    clips = {
        k.split("/", 1)[1].lower(): np.asarray(f[k], np.float32)
        for k in f.files
        if k.startswith(language + "/")
    }
  if not clips:
    raise errors.UserError(
        f"{path}: no clip of language {language!r} (keys are "
        "<language>/<letter>)"
    )
  for letter, clip in clips.items():
    if clip.ndim != 3 or clip.shape[1:] != (42, 2):
      raise errors.UserError(
          f"{path}: {language}/{letter} is {clip.shape}, not " "[T, 42, 2]"
      )
  return dict(sorted(clips.items()))


def held_out_accuracy(
    clusters: np.ndarray, labels: np.ndarray, first_half: np.ndarray
) -> float:
  """Map each cluster to the commonest label of its `first_half` frames;
  the fraction of the other frames whose label the map names (a cluster
  with no first-half frame names none)."""
  clusters, labels = np.asarray(clusters), np.asarray(labels)
  fit, held = first_half, ~first_half
  named = {}
  for c in np.unique(clusters[fit]):
    values, counts = np.unique(
        labels[fit][clusters[fit] == c], return_counts=True
    )
    named[c] = values[np.argmax(counts)]
  hits = [named.get(c) == l for c, l in zip(clusters[held], labels[held])]
  return float(np.mean(hits)) if hits else float("nan")


def random_halves(groups: np.ndarray, seed: int) -> np.ndarray:
  """bool per frame: in the first half. Each group (clip) is split in two
  halves (the first gets the extra frame of an odd count) at random."""
  rng = np.random.default_rng(seed)
  out = np.zeros(len(groups), bool)
  for g in np.unique(groups):
    idx = np.flatnonzero(groups == g)
    out[rng.permutation(idx)[: (len(idx) + 1) // 2]] = True
  return out


def random_words(letters: Sequence[str], num: int, seed: int) -> list[str]:
  """`num` strings of 4-8 letters drawn uniformly from `letters`."""
  rng = np.random.default_rng(seed)
  return [
      "".join(rng.choice(list(letters), rng.integers(4, 9))) for _ in range(num)
  ]


def measure(
    tok: Tokenizer,
    clips: Mapping[str, np.ndarray],
    *,
    num_words: int = 40,
    seed: int = 0,
) -> dict[str, Any]:
  """The module docstring's figures for `clips` (letter -> [T, 42, 2])."""
  cluster, sk_metrics = _sklearn()
  letters = list(clips)
  codes = tok.encode([clips[l] for l in letters])
  inputs = [tok.preprocess(clips[l]) for l in letters]
  first = np.concatenate([c[:, 0] for c in codes])
  labels = np.repeat(np.arange(len(letters)), [len(c) for c in codes])
  halves = random_halves(labels, seed)
  used = len(np.unique(first))
  raw = np.concatenate(inputs).reshape(len(first), -1)
  kmeans = cluster.KMeans(used, n_init=4, random_state=seed).fit_predict(raw)
  out = dict(
      letters=len(letters),
      frames=int(len(first)),
      codes_used_q0=used,
      ami_q0=float(sk_metrics.adjusted_mutual_info_score(labels, first)),
      ami_kmeans=float(sk_metrics.adjusted_mutual_info_score(labels, kmeans)),
      accuracy_q0=held_out_accuracy(first, labels, halves),
      accuracy_kmeans=held_out_accuracy(kmeans, labels, halves),
      chance=float(np.bincount(labels).max() / len(labels)),
  )
  if tok.config.model.use_ctc and num_words:
    words = random_words(letters, num_words, seed)
    hands = [np.concatenate([clips[c] for c in w]) for w in words]
    read = tok.transcribe(hands)
    out.update(
        words_score=metrics.normalized_levenshtein(words, read),
        words=[dict(word=w, read=r) for w, r in zip(words, read)],
    )
  return out


def report(name: str, result: Mapping[str, Any], examples: int = 5) -> str:
  """The figures as a few lines of text."""
  r = result
  lines = [
      f"{name}: {r['letters']} letters, {r['frames']} frames with a hand, "
      f"{r['codes_used_q0']} first-quantizer codes used",
      f"  code -> letter, held-out half: q0 {r['accuracy_q0']:.3f}, k-means "
      f"of the normalised hands (k={r['codes_used_q0']}) "
      f"{r['accuracy_kmeans']:.3f}, commonest letter {r['chance']:.3f}",
      f"  AMI with the letter: q0 {r['ami_q0']:.3f}, k-means "
      f"{r['ami_kmeans']:.3f}",
  ]
  if "words_score" in r:
    shown = ", ".join(
        f"{w['word']} -> {w['read']!r}" for w in r["words"][:examples]
    )
    lines.append(
        f"  spelled words ({len(r['words'])}), CTC transcripts: "
        f"score {r['words_score']:.3f}; e.g. {shown}"
    )
  return "\n".join(lines)


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a program, so importing the module defines no flags."""
  cli.define_tokenizer_flags()
  flags.DEFINE_string(
      "letters", None, "An .npz of <language>/<letter> -> [T, 42, 2] clips."
  )
  flags.DEFINE_string(
      "language", "ase", "Whose letters (the keys' prefix; ase = ASL)."
  )
  flags.DEFINE_integer("num_words", 40, "Random spelled words.")
  flags.DEFINE_integer("seed", 0, "Halves, k-means and words.")
  flags.DEFINE_string("out", "", "Also write the figures as JSON here.")
  flags.mark_flags_as_required(["letters"])


def main(argv) -> None:
  cli.start(argv)
  clips = load_letters(FLAGS.letters, FLAGS.language)
  tok = Tokenizer.load(FLAGS.tokenizer, FLAGS.which)
  result = measure(tok, clips, num_words=FLAGS.num_words, seed=FLAGS.seed)
  result.update(
      tokenizer=FLAGS.tokenizer,
      which=FLAGS.which,
      fingerprint=tok.fingerprint,
      letters_file=FLAGS.letters,
      language=FLAGS.language,
      seed=FLAGS.seed,
  )
  print(report(f"{FLAGS.letters} ({FLAGS.language})", result))
  if FLAGS.out:
    fileio.write_json(FLAGS.out, result)


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
