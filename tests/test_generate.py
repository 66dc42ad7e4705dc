"""Text to signing end to end on tiny data: LM run, generation, GIF, score."""

import dataclasses
import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from PIL import Image

from asl_vq import config_lib
from asl_vq import errors
from asl_vq import generate
from asl_vq import metrics
from asl_vq import Tokenizer
from asl_vq.data import tokens as tokens_lib
from asl_vq.models import lm as lm_lib
from asl_vq.tasks import lm
from asl_vq.tasks import translate

import tiny_tokenizer

ONE_EPOCH = dict(num_epochs=1, checkpoint_every_steps=10**6)


def recognizer_dir() -> str:
  """A tiny continuous translator on the tiny tokenizer's data, trained once
  per session's $ASL_VQ_CACHE (a fixture here, not under test)."""
  out = os.path.join(os.environ["ASL_VQ_CACHE"], "tiny_recognizer")
  if not os.path.exists(os.path.join(out, "test_metrics.json")):
    config = config_lib.load("translate", "tiny,input=continuous")
    config.data.synthetic.num_sequences = tiny_tokenizer.SEQUENCES
    config.train.update(ONE_EPOCH)
    translate.run(config, out)
  return out


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
  """(workdir, test metrics) of a one-epoch tiny LM on the tiny tokens."""
  config = config_lib.load("lm", "tiny")
  config.tokens = tiny_tokenizer.tokens_dir()
  config.train.update(ONE_EPOCH)
  workdir = str(tmp_path_factory.mktemp("lm"))
  return workdir, lm.run(config, workdir)


@pytest.fixture(scope="module")
def loaded(lm_run):
  model = generate.load_lm(lm_run[0])
  return model, Tokenizer.load(generate.default_tokenizer(model))


@pytest.mark.slow
def test_lm_run_reports_accuracy_per_quantizer(lm_run):
  workdir, result = lm_run
  with open(os.path.join(workdir, "test_metrics.json")) as f:
    assert json.load(f) == pytest.approx(result)
  test = tokens_lib.TokenSource(
      os.path.join(tiny_tokenizer.tokens_dir(), "test.parquet")
  )
  assert result["examples"] == len(test)
  assert set(result) >= {f"accuracy_q{q}" for q in range(4)}


@pytest.mark.slow
def test_generate_writes_codes_landmarks_and_a_gif(loaded, tmp_path):
  model, tokenizer = loaded
  assert generate.default_tokenizer(model) == tiny_tokenizer.workdir()
  samples = generate.generate(
      model, tokenizer, "Hello world", num_samples=2, max_frames=12, seed=1
  )
  paths = generate.write_samples(samples, tokenizer, str(tmp_path))
  for i, (s, gif) in enumerate(zip(samples, paths)):
    t = len(s.codes)
    assert s.text == "hello world" and 1 <= t <= 12
    codes = np.load(tmp_path / f"sample_{i}_codes.npy")
    assert codes.shape == (t, 4) and (0 <= codes).all() and (codes < 32).all()
    text = (tmp_path / f"sample_{i}_codes.txt").read_text().strip()
    np.testing.assert_array_equal(tokenizer.from_text(text), codes)
    landmarks = np.load(tmp_path / f"sample_{i}_landmarks.npy")
    np.testing.assert_allclose(landmarks, tokenizer.decode(codes), atol=1e-5)
    assert landmarks.shape == (t, 42, 2) and np.isfinite(landmarks).all()
    with Image.open(gif) as image:
      assert image.n_frames == t and image.size[0] > 0


@pytest.mark.slow
def test_sampling_is_seeded(loaded):
  model, _ = loaded
  draw = lambda seed: generate.sample_codes(
      model, ["abc"], seed=seed, max_frames=10
  )[0]
  np.testing.assert_array_equal(draw(3), draw(3))
  assert not np.array_equal(draw(3), draw(4))


@pytest.mark.slow
def test_generation_score_of_the_real_recognizer(loaded):
  model, tokenizer = loaded
  recognizer = generate.load_recognizer(recognizer_dir())
  result = generate.evaluate_split(
      model,
      tokenizer,
      recognizer,
      "test",
      num_phrases=5,
      phrase_seed=1,
      temperature=0.0,
  )
  records = result["records"]
  assert result["num_phrases"] == len(records) == 5
  refs = [r["reference"] for r in records]
  test = tokens_lib.TokenSource(
      os.path.join(tiny_tokenizer.tokens_dir(), "test.parquet")
  )
  chosen = generate.choose_phrases(len(test), 5, seed=1)
  assert refs == [test.phrases[i] for i in chosen]
  assert result["sequence_ids"] == [int(test.sequence_ids[i]) for i in chosen]
  assert result["score"] == pytest.approx(
      metrics.normalized_levenshtein(refs, [r["recognized"] for r in records])
  )


def test_phrases_are_drawn_at_random_with_a_seed():
  drawn = generate.choose_phrases(1000, 100, seed=0)
  assert len(set(drawn.tolist())) == 100  # without replacement
  assert not np.array_equal(np.sort(drawn), np.arange(100))  # not the first
  np.testing.assert_array_equal(drawn, generate.choose_phrases(1000, 100, 0))
  assert not np.array_equal(drawn, generate.choose_phrases(1000, 100, 1))
  np.testing.assert_array_equal(
      np.sort(generate.choose_phrases(7, 100, 0)), np.arange(7)
  )  # a small split: all of it


@pytest.fixture(scope="module")
def untrained():
  """An LM as training starts it on the tiny tokenizer's codes (no run: the
  score's arithmetic does not need a trained one), and that tokenizer."""
  tokenizer = Tokenizer.load(tiny_tokenizer.workdir())
  config = config_lib.load("lm", "tiny")
  model_config = lm_lib.LMConfig.from_config(config, tokenizer.code_spec)
  variables = lm_lib.init_variables(
      lm_lib.LM(model_config),
      config.data.max_len,
      config.data.max_label_len + 1,
      jax.random.key(0),
  )
  return generate.Run("", config, model_config, variables), tokenizer


@pytest.mark.parametrize(
    "recognized, score", [("reference", 1.0), ("nothing", 0.0)]
)
def test_generation_score_is_of_the_recognized_text(
    untrained, monkeypatch, recognized, score
):
  model, tokenizer = untrained
  phrases = ["abc", "hello"]

  hyps = list(phrases) if recognized == "reference" else ["", ""]

  def stub(recognizer, landmarks, batch_size=16, progress=""):
    del recognizer, batch_size, progress
    assert len(landmarks) == 2 and landmarks[0].shape[1:] == (42, 2)
    return hyps

  monkeypatch.setattr(generate, "recognize", stub)
  # A stand-in recogniser of the tokenizer's own landmarks.
  recognizer = types.SimpleNamespace(config=tokenizer.config)
  result = generate.evaluate(model, tokenizer, recognizer, phrases)
  assert result["score"] == score
  assert [r["recognized"] for r in result["records"]] == hyps


@pytest.mark.slow
def test_command_line(lm_run, tmp_path):
  out = tmp_path / "out"
  subprocess.run(
      [
          sys.executable,
          "-m",
          "asl_vq.generate",
          f"--lm={lm_run[0]}",
          "--text=ab",
          f"--out={out}",
          "--max_frames=6",
          "--num_samples=1",
      ],
      check=True,
      capture_output=True,
  )
  assert (out / "sample_0.gif").stat().st_size > 0
  assert (out / "sample_0_codes.npy").exists()
  assert (out / "sample_0_landmarks.npy").exists()
  assert "asl_vq.generate" in (out / "command.txt").read_text()


@pytest.mark.slow
def test_a_recognizer_of_other_landmarks_is_refused(loaded):
  """The recogniser reads the tokenizer's decoded landmarks as they are: one
  trained on otherwise normalised landmarks would score noise."""
  model, tokenizer = loaded
  recognizer = generate.load_recognizer(recognizer_dir())
  other = dataclasses.replace(
      recognizer, config=recognizer.config.copy_and_resolve_references()
  )
  other.config.data.normalization = "hand"
  with pytest.raises(
      errors.UserError,
      match="trained on 'hand' ones: train it with "
      "--config.data.normalization=sequence",
  ):
    generate.evaluate(model, tokenizer, other, ["ab"])
