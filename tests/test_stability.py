"""`asl_vq.analysis.stability`: its figures mean what they say."""

import json
import shutil

import numpy as np
import pytest

import asl_vq
import tiny_tokenizer
import xla_env
from asl_vq.analysis import stability
from asl_vq.data import datasets


@pytest.fixture(scope="module")
def tok():
  return asl_vq.Tokenizer.load(tiny_tokenizer.workdir())


@pytest.fixture(scope="module")
def clips(tok):
  split = datasets.load(tok.config)["test"]
  return [split[i]["hands"] for i in range(6)]


def test_a_perfect_decoder_has_no_image_error(tok, clips, monkeypatch):
  """Decoded frames that are the normalised inputs themselves land on the
  input's points: the error is in the input's own units, not the model's."""
  perfect = {}  # kept length -> the normalised clip (one per length).
  for c in clips:
    x = tok.preprocess(c)
    if len(x) <= tok.max_len:
      perfect.setdefault(len(x), (c, x))
  fits = [c for c, _ in perfect.values()]
  perfect = {n: x for n, (_, x) in perfect.items()}
  assert len(fits) > 1
  monkeypatch.setattr(
      tok, "decode", lambda codes: [perfect[len(c)] for c in codes]
  )
  error = stability.image_error(tok, fits)
  assert error["hands"] >= len(fits)
  assert error["mean"] < 1e-6 and error["palm_lengths_median"] < 1e-5


def test_context_and_window_agreement(tok, clips):
  """A clip's codes alone and followed by the next are compared frame by
  frame; windows only over sequences longer than them."""
  a, b = clips[0][:30], clips[1][:30]  # together within the model's length.
  context = stability.context_agreement(tok, [a, b])
  alone = tok.encode(a)
  followed = tok.encode(np.concatenate([a, b]))
  same = alone == followed[: len(alone)]
  assert context["pairs"] == 1 and context["frames"] == len(alone)
  assert context["q0"] == pytest.approx(same[:, 0].mean())
  assert context["all"] == pytest.approx(same.all(1).mean())
  windows = stability.window_agreement(tok, clips)
  assert windows and all(int(w) < tok.max_len for w in windows)
  for window, result in windows.items():
    w = int(window)
    longer = [c for c in clips if w < len(tok.encode(c)) <= tok.max_len]
    same = np.concatenate(
        [
            tok.encode_frames(c, window=w).codes[:, 0] == tok.encode(c)[:, 0]
            for c in longer
        ]
    )
    assert result["sequences"] == len(longer) and result["frames"] == len(same)
    assert result["q0"] == pytest.approx(same.mean())


@pytest.mark.slow
def test_command_line_names_the_checkpoint_it_measured(tok, tmp_path):
  """`--out` records the tokenizer by content (`Tokenizer.fingerprint`) and
  the checkpoint `--which` chose; a run without that checkpoint is one
  line naming it."""
  out = tmp_path / "stability.json"
  run = xla_env.run_module(
      "asl_vq.analysis.stability",
      f"--tokenizer={tiny_tokenizer.workdir()}",
      "--max_sequences=2",
      f"--out={out}",
  )
  assert run.returncode == 0, run.stderr
  written = json.loads(out.read_text())
  assert (written["which"], written["fingerprint"]) == ("best", tok.fingerprint)
  assert list(written["results"]) == ["test split"]
  assert "test split" in run.stdout

  best_only = tmp_path / "best_only"
  shutil.copytree(tiny_tokenizer.workdir(), best_only)
  shutil.rmtree(best_only / "checkpoints")
  run = xla_env.run_module(
      "asl_vq.analysis.stability", f"--tokenizer={best_only}", "--which=latest"
  )
  assert run.returncode == 1
  assert run.stderr.startswith(f"error: {best_only}: no checkpoint under")
