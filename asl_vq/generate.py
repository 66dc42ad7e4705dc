r"""Text to signing with a trained LM, and the paper's generation score.

  python -m asl_vq.generate --lm=runs/lm --text="hello world" --out=DIR \
      [--tokenizer=RUN] [--temperature=1 --top_k=250 --seed=0 --num_samples=1]

writes per sample the codes (`sample_<i>_codes.npy` and the tokenizer's text
serialisation `sample_<i>_codes.txt`), the landmarks the tokenizer's decoder
makes of them (`sample_<i>_landmarks.npy`, normalised coordinates) and an
animated GIF of the hand skeleton (`sample_<i>.gif`). The tokenizer defaults
to the one that wrote the LM's training tokens.

  python -m asl_vq.generate --lm=runs/lm --eval_split=test \
      --recognizer=runs/translate_continuous --num_phrases=100 --out=DIR

is the paper's evaluation: generate for the split's phrases, decode with the
tokenizer's decoder, recognise the landmarks with the continuous translator,
and score the recognised text with the normalised Levenshtein metric
(`generation.json`). For scale, it also scores the recogniser on the
tokenizer's resynthesis of the split's own codes (`score_resynthesized`).
Each stage (sample, decode, recognise) shows a progress bar on stderr.

The functions (`load_lm`, `generate`, `evaluate`, ...) are the API a notebook
uses (with `asl_vq.plotting.save_gif` for the animations).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import app
from absl import flags
from absl import logging
from etils import epath

from asl_vq import cli
from asl_vq import compilation_cache
from asl_vq import errors
from asl_vq import fileio
from asl_vq import inference
from asl_vq import metrics as metrics_lib
from asl_vq import plotting
from asl_vq import provenance
from asl_vq import sharding
from asl_vq import vocab
from asl_vq.data import layout
from asl_vq.data import pipeline
from asl_vq.data import tokens as tokens_lib
from asl_vq.inference import Tokenizer
from asl_vq.models import lm as lm_lib
from asl_vq.models import translate as translate_lib


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained run for inference: its config, model config and variables."""

  path: str
  config: ml_collections.ConfigDict
  model_config: Any
  variables: Any


@dataclasses.dataclass(frozen=True)
class Sample:
  text: str
  codes: np.ndarray  # int32 [T, Q]
  landmarks: np.ndarray  # float32 [T, 42, 2], normalised coordinates.


def _load_run(path: str, model_config_of, init_variables, **kind) -> Run:
  """The best checkpoint's schedule-free evaluation variables, on one device
  (`kind`: `inference.read_config`'s): `model_config_of(config)` is the
  run's model config, `init_variables(model_config, config)` its
  variables' init (`inference.restore_variables`)."""
  config = inference.read_config(path, **kind)
  model_config = model_config_of(config)
  variables, _ = inference.restore_variables(
      path, config, init_variables(model_config, config)
  )
  return Run(fileio.abspath(path), config, model_config, variables)


def load_lm(path: str) -> Run:
  """A configs/lm.py run."""
  return _load_run(
      path,
      lambda config: lm_lib.LMConfig.from_config(
          config, tokens_lib.code_spec(config.tokens)
      ),
      lambda model_config, config: functools.partial(
          lm_lib.init_variables,
          lm_lib.LM(model_config),
          config.data.max_len,
          config.data.max_label_len + 1,
      ),
      kind="lm",
  )


def load_recognizer(path: str) -> Run:
  """A configs/translate.py run with input=continuous, its attention's passes
  chosen for the one device `recognize` runs it on.

  Raises:
    errors.UserError: another run, e.g. a token translator, named.
  """
  one_device = sharding.make_mesh(jax.local_devices()[:1])
  return _load_run(
      path,
      lambda config: translate_lib.TranslatorConfig.from_config(
          config, **sharding.attention_layout(one_device)
      ),
      lambda model_config, config: functools.partial(
          translate_lib.init_variables,
          translate_lib.Translator(model_config),
          config.data.max_len,
      ),
      kind="translate",
      encoder="continuous",
  )


def default_tokenizer(lm: Run) -> str:
  """The tokenizer run that wrote the LM's training tokens."""
  return tokens_lib.read_metadata(lm.config.tokens)["checkpoint"]


def _check_spaces(tokenizer: Tokenizer, recognizer: Run) -> None:
  """The recogniser reads the tokenizer's decoded landmarks as they are: both
  must be normalised alike (`data.normalization`)."""
  made, read = (
      str(c.data.normalization) for c in (tokenizer.config, recognizer.config)
  )
  if made != read:
    raise errors.UserError(
        f"the tokenizer's landmarks are normalised by {made!r}, the "
        f"recogniser was trained on {read!r} ones: train it with "
        f"--config.data.normalization={made}"
    )


def _check_vocab(lm: Run, tokenizer: Tokenizer) -> None:
  c = lm.model_config
  if (
      tokenizer.code_spec.num_quantizers,
      tokenizer.code_spec.codebook_size,
  ) != (c.num_quantizers, c.codebook_size):
    raise errors.UserError(
        f"the tokenizer's codes ({tokenizer.code_spec}) are not the "
        f"LM's ({c.num_quantizers} x {c.codebook_size})"
    )


def _progress_bar(n: int, progress: str) -> tqdm.tqdm:
  """A progress bar over n phrases on stderr labelled `progress` ('' =
  none)."""
  return tqdm.tqdm(
      total=n,
      desc=progress,
      unit="phrase",
      file=sys.stderr,
      disable=not progress,
  )


def _batch_starts(n: int, batch_size: int, progress: str) -> Iterator[int]:
  """range(0, n, batch_size), with a progress bar over the n phrases on
  stderr labelled `progress` ('' = none)."""
  with _progress_bar(n, progress) as bar:
    for start in range(0, n, batch_size):
      yield start
      bar.update(min(batch_size, n - start))


@functools.lru_cache(maxsize=8)
def _sampler(config: lm_lib.LMConfig, max_frames: int, top_k: int):
  return jax.jit(
      functools.partial(
          lm_lib.sample, config, max_frames=max_frames, top_k=top_k
      )
  )


def sample_codes(
    lm: Run,
    phrases: Sequence[str],
    *,
    temperature: float = 1.0,
    top_k: int = 250,
    seed: int = 0,
    max_frames: int = 0,
    batch_size: int = 16,
    progress: str = "",
) -> list[np.ndarray]:
  """Phrases -> one code sequence int32 [T, Q] each (T <= max_frames).

  max_frames 0: the LM's data.max_len. Batches are padded to batch_size,
  so the sampler compiles once. `progress`: a progress bar's label ('' =
  none).
  """
  max_frames = max_frames or int(lm.config.data.max_len)
  width = int(lm.config.data.max_label_len)
  sampler = _sampler(lm.model_config, max_frames, top_k)
  out = []
  for start in _batch_starts(len(phrases), batch_size, progress):
    chunk = list(phrases[start : start + batch_size])
    labels = np.full((batch_size, width), vocab.PAD_ID, np.int32)
    label_mask = np.zeros((batch_size, width), bool)
    for row, phrase in enumerate(chunk):
      labels[row], label_mask[row] = pipeline.encode_labels(phrase, width)
    text, text_mask = lm_lib.phrase_inputs(labels, label_mask)
    key = jax.random.fold_in(jax.random.key(seed), start)
    codes, lengths = jax.device_get(
        sampler(lm.variables, text, text_mask, key, temperature=temperature)
    )
    out += [c[:n] for c, n in zip(codes[: len(chunk)], lengths)]
  return out


def generate(
    lm: Run,
    tokenizer: Tokenizer,
    text: str,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 250,
    seed: int = 0,
    max_frames: int = 0,
) -> list[Sample]:
  """Signing for `text` (lower-cased: the vocabulary has no capitals)."""
  _check_vocab(lm, tokenizer)
  text = text.lower()
  codes = sample_codes(
      lm,
      [text] * num_samples,
      temperature=temperature,
      top_k=top_k,
      seed=seed,
      max_frames=max_frames,
  )
  return [Sample(text, c, h) for c, h in zip(codes, tokenizer.decode(codes))]


def write_samples(
    samples: Sequence[Sample], tokenizer: Tokenizer, out: str
) -> list[str]:
  """Codes (npy, text), landmarks (npy) and a GIF per sample into `out`
  (local or an object store URL)."""
  epath.Path(out).mkdir(parents=True, exist_ok=True)
  paths = []
  for i, s in enumerate(samples):
    stem = os.path.join(out, f"sample_{i}")
    with epath.Path(f"{stem}_codes.npy").open("wb") as f:
      np.save(f, s.codes)
    epath.Path(f"{stem}_codes.txt").write_text(
        tokenizer.to_text(s.codes) + "\n"
    )
    with epath.Path(f"{stem}_landmarks.npy").open("wb") as f:
      np.save(f, s.landmarks)
    paths.append(
        plotting.save_gif(
            tokenizer.drawable(s.landmarks), f"{stem}.gif", title=s.text
        )
    )
  return paths


@functools.lru_cache(maxsize=4)
def _greedy_decoder(config: translate_lib.TranslatorConfig):
  return jax.jit(functools.partial(translate_lib.greedy_decode, config))


def recognize(
    recognizer: Run,
    landmarks: Sequence[np.ndarray],
    batch_size: int = 16,
    progress: str = "",
) -> list[str]:
  """Normalised landmarks [T, 42, 2] -> the continuous translator's text.

  Longer sequences than its max_len are resampled, as its pipeline does;
  each goes, padded, into the smallest of its buckets that holds it
  (`inference.run_in_buckets`: its text does not depend on the other
  sequences). `progress`: a progress bar's label ('' = none).
  """
  max_len = int(recognizer.config.data.max_len)
  buckets = tuple(recognizer.config.data.buckets) or pipeline.default_buckets(
      max_len
  )
  decode = _greedy_decoder(recognizer.model_config)
  items = [
      pipeline.resample(
          np.asarray(x, np.float32), max_len, recognizer.config.data.resample
      )
      if len(x) > max_len
      else np.asarray(x, np.float32)
      for x in landmarks
  ]
  with _progress_bar(len(items), progress) as bar:
    ids = inference.run_in_buckets(
        lambda inputs, mask: decode(
            recognizer.variables, jnp.asarray(inputs), jnp.asarray(mask)
        ),
        items,
        (layout.NUM_POINTS, 2),
        np.float32,
        buckets=buckets,
        batch_size=batch_size,
        per_frame=False,
        progress=bar.update,
    )
  return [vocab.decode(r) for r in ids]


def _decode(
    tokenizer: Tokenizer,
    codes: Sequence[np.ndarray],
    batch_size: int,
    progress: str,
) -> list[np.ndarray]:
  """`tokenizer.decode` by batches, for the progress bar (the same result:
  each sequence decodes on its own)."""
  out = []
  for start in _batch_starts(len(codes), batch_size, progress):
    out += tokenizer.decode(list(codes[start : start + batch_size]))
  return out


def evaluate(
    lm: Run,
    tokenizer: Tokenizer,
    recognizer: Run,
    phrases: Sequence[str],
    reference_codes: Sequence[np.ndarray] | None = None,
    *,
    temperature: float = 1.0,
    top_k: int = 250,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, Any]:
  """The paper's generation score: generate, decode, recognise, score.

  Returns {'score': normalised Levenshtein of the recognised text against
  the phrases (<= 1; below 0 when the recognised text needs more edits than
  the phrases hold characters), 'records': per phrase the reference, the
  recognised text and the frames generated}; with `reference_codes` (the
  phrases' real codes) also 'score_resynthesized', the recogniser on their
  decoded landmarks. `progress`: a progress bar per stage on stderr.
  """
  _check_vocab(lm, tokenizer)
  _check_spaces(tokenizer, recognizer)
  label = lambda stage: stage if progress else ""
  codes = sample_codes(
      lm,
      phrases,
      temperature=temperature,
      top_k=top_k,
      seed=seed,
      batch_size=batch_size,
      progress=label("sample"),
  )
  hyps = recognize(
      recognizer,
      _decode(tokenizer, codes, batch_size, label("decode")),
      batch_size,
      progress=label("recognise"),
  )
  result = {
      "score": metrics_lib.normalized_levenshtein(phrases, hyps),
      "num_phrases": len(phrases),
      "mean_frames": float(np.mean([len(c) for c in codes])),
      "temperature": temperature,
      "top_k": top_k,
      "seed": seed,
  }
  if reference_codes is not None:
    resynth = recognize(
        recognizer,
        _decode(
            tokenizer,
            list(reference_codes),
            batch_size,
            label("decode real codes"),
        ),
        batch_size,
        progress=label("recognise real codes"),
    )
    result["score_resynthesized"] = metrics_lib.normalized_levenshtein(
        phrases, resynth
    )
    result["mean_frames_real"] = float(
        np.mean([len(c) for c in reference_codes])
    )
  result["records"] = [
      dict(reference=r, recognized=h, frames=len(c))
      for r, h, c in zip(phrases, hyps, codes)
  ]
  return result


def choose_phrases(
    num_sequences: int, num_phrases: int, seed: int
) -> np.ndarray:
  """The paper's protocol: `num_phrases` sequences of a split drawn at
  random without replacement (all of them when the split is smaller),
  int64 indices in drawn order; the same for the same seed."""
  rng = np.random.default_rng(seed)
  return rng.permutation(num_sequences)[:num_phrases]


def evaluate_split(
    lm: Run,
    tokenizer: Tokenizer,
    recognizer: Run,
    split: str = "test",
    num_phrases: int = 100,
    phrase_seed: int = 0,
    **kwargs,
) -> dict[str, Any]:
  """`evaluate` on `num_phrases` random phrases of a split of the LM's
  tokens (`choose_phrases`; the paper: 100 random test phrases); their real
  codes give `score_resynthesized`."""
  source = tokens_lib.TokenSource(
      os.path.join(lm.config.tokens, f"{split}.parquet")
  )
  chosen = choose_phrases(len(source), num_phrases, phrase_seed)
  result = evaluate(
      lm,
      tokenizer,
      recognizer,
      [source.phrases[i] for i in chosen],
      [source[i]["codes"] for i in chosen],
      **kwargs,
  )
  return dict(
      result,
      split=split,
      sequence_ids=[int(source.sequence_ids[i]) for i in chosen],
      phrase_seed=phrase_seed,
  )


FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a program, so importing the module defines no flags."""
  flags.DEFINE_string("lm", None, "The LM's workdir (configs/lm.py).")
  flags.DEFINE_string(
      "tokenizer",
      "",
      "The tokenizer's workdir; default: "
      "the one that wrote the LM's tokens.",
  )
  flags.DEFINE_string("out", None, "Output directory (local or gs://...).")
  flags.DEFINE_string("text", "", "A phrase to sign.")
  flags.DEFINE_float("temperature", 1.0, "Sampling temperature; 0 = greedy.")
  flags.DEFINE_integer(
      "top_k", 250, "Sample among the k likeliest codes " "(0 = all)."
  )
  flags.DEFINE_integer("seed", 0, "Random seed.")
  flags.DEFINE_integer("num_samples", 1, "Samples of --text.")
  flags.DEFINE_integer("max_frames", 0, "Frame cap; 0 = the LM's max_len.")
  flags.DEFINE_string(
      "eval_split",
      "",
      "Evaluate on this split of the LM's "
      "tokens (e.g. test) instead of signing --text.",
  )
  flags.DEFINE_string(
      "recognizer",
      "",
      "The continuous translator's "
      "workdir (configs/translate.py:...,input=continuous), "
      "for --eval_split.",
  )
  flags.DEFINE_integer(
      "num_phrases",
      100,
      "Phrases evaluated, drawn at " "random from the split (the paper: 100).",
  )
  flags.DEFINE_integer("phrase_seed", 0, "Seed of the phrases' draw.")
  flags.mark_flags_as_required(["lm", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax's INFO lines.
  if bool(FLAGS.text) == bool(FLAGS.eval_split):
    raise app.UsageError("pass one of --text or --eval_split")
  if FLAGS.eval_split and not FLAGS.recognizer:
    raise app.UsageError("--eval_split needs --recognizer")
  compilation_cache.enable()
  lm = load_lm(FLAGS.lm)
  tokenizer_dir = fileio.abspath(FLAGS.tokenizer or default_tokenizer(lm))
  tokenizer = Tokenizer.load(tokenizer_dir)
  recognizer = load_recognizer(FLAGS.recognizer) if FLAGS.eval_split else None
  sampling = dict(
      temperature=FLAGS.temperature, top_k=FLAGS.top_k, seed=FLAGS.seed
  )
  with provenance.recording(FLAGS.out):  # the report's captions.
    if FLAGS.text:
      samples = generate(
          lm,
          tokenizer,
          FLAGS.text,
          num_samples=FLAGS.num_samples,
          max_frames=FLAGS.max_frames,
          **sampling,
      )
      for path, s in zip(write_samples(samples, tokenizer, FLAGS.out), samples):
        print(f"{path}: {len(s.codes)} frames")
      return
    result = evaluate_split(
        lm,
        tokenizer,
        recognizer,
        FLAGS.eval_split,
        FLAGS.num_phrases,
        FLAGS.phrase_seed,
        progress=True,
        **sampling,
    )
    result.update(
        lm=lm.path,
        tokenizer=tokenizer_dir,
        recognizer=fileio.abspath(FLAGS.recognizer),
        data="real" if tokenizer.config.data.dir else "synthetic",
    )
    epath.Path(os.path.join(FLAGS.out, "generation.json")).write_text(
        json.dumps(result, indent=2)
    )
  print(json.dumps({k: v for k, v in result.items() if k != "records"}))


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
