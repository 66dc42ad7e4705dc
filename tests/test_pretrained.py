"""Tokenizers in the Hugging Face Hub's layout (issue 29, 4)."""

import builtins
import json
import os
import sys

import numpy as np
import pytest

import asl_vq
import tiny_tokenizer
from asl_vq import errors
from asl_vq.data import datasets


@pytest.fixture(scope="module")
def tok():
  return asl_vq.Tokenizer.load(tiny_tokenizer.workdir())


def test_save_pretrained_loads_back_with_the_same_codes(tok, tmp_path):
  out = tok.save_pretrained(tmp_path / "pretrained")
  names = sorted(p.name for p in (tmp_path / "pretrained").iterdir())
  assert names == ["README.md", "config.json", "model.safetensors"]
  again = asl_vq.Tokenizer.from_pretrained(out)
  assert again.fingerprint == tok.fingerprint and again.step == tok.step
  loaded = asl_vq.Tokenizer.load(out)  # `load` takes either layout.
  test = datasets.load(tok.config)["test"]
  hands = [test[i]["hands"] for i in range(4)]
  for a, b, c in zip(
      tok.encode(hands), again.encode(hands), loaded.encode(hands)
  ):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(tok.decode(a), again.decode(a))
  card = (tmp_path / "pretrained" / "README.md").read_text()
  assert "**synthetic**" in card and tok.fingerprint in card
  assert "score" in card  # the run's test metrics.
  config = json.loads((tmp_path / "pretrained" / "config.json").read_text())
  with open(os.path.join(tiny_tokenizer.workdir(), "test_metrics.json")) as f:
    assert config["asl_vq"]["test_metrics"] == pytest.approx(json.load(f))
  assert config["model"]["num_quantizers"] == 4


def test_a_changed_weight_or_a_foreign_directory_is_refused(tok, tmp_path):
  import safetensors.numpy  # pylint: disable=g-import-not-at-top

  out = tok.save_pretrained(tmp_path / "p")
  weights = safetensors.numpy.load_file(tmp_path / "p" / "model.safetensors")
  name = sorted(weights)[0]
  weights[name] = weights[name] + 1
  safetensors.numpy.save_file(weights, tmp_path / "p" / "model.safetensors")
  with pytest.raises(errors.UserError, match="fingerprint differs"):
    asl_vq.Tokenizer.from_pretrained(out)
  (tmp_path / "other").mkdir()
  with pytest.raises(errors.UserError, match="not a tokenizer saved by"):
    asl_vq.Tokenizer.from_pretrained(tmp_path / "other")
  with pytest.raises(errors.UserError, match="nor a Hub id"):
    asl_vq.Tokenizer.from_pretrained(str(tmp_path / "absent"))


def test_a_hub_id_without_huggingface_hub_says_what_to_install(monkeypatch):
  real_import = builtins.__import__

  def no_hub(name, *args, **kwargs):
    if name == "huggingface_hub":
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  monkeypatch.delitem(sys.modules, "huggingface_hub", raising=False)
  monkeypatch.setattr(builtins, "__import__", no_hub)
  with pytest.raises(errors.MissingExtra, match="needs huggingface_hub"):
    asl_vq.Tokenizer.from_pretrained("someone/asl-tokenizer")
