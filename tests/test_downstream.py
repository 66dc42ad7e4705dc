"""The downstream trainers (translation, probing) on tiny data: they learn,
and a run writes the test metrics the tables are made of."""

import json
import os

import numpy as np
import pytest

from asl_vq import config_lib
from asl_vq import errors
from asl_vq.data import tokens
from asl_vq.tasks import base
from asl_vq.tasks import probe
from asl_vq.tasks import translate
import train_helpers

# A large test split of many signers: the probe splits it again by signer.
FRACTIONS = dict(train=0.4, validation=0.1, test=0.5)
SYNTHETIC = dict(num_sequences=96, seed=0, num_signers=16, frames_per_char=2.0)


_config = config_lib.load


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
  """Random codes for the tiny keypoint splits, in the tokenized layout."""
  config = _config("translate", "tiny,input=continuous")
  config.data.fractions = FRACTIONS
  config.data.synthetic = SYNTHETIC
  splits, _ = base.load_sign_splits(config)
  out = tmp_path_factory.mktemp("tokens")
  rng = np.random.default_rng(0)
  for name, source in splits.items():
    lengths = np.minimum(source.hand_frames, config.data.max_len)
    rows = [
        dict(
            sequence_id=int(source.sequence_ids[i]),
            participant_id=int(source.participant_ids[i]),
            phrase=source.phrases[i],
            codes=rng.integers(0, 32, (int(n), 4)),
        )
        for i, n in enumerate(lengths)
    ]
    table = tokens.to_table(
        rows, 4, dict(num_quantizers=4, codebook_size=32, checkpoint="")
    )
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

    pq.write_table(table, str(out / f"{name}.parquet"))
  return str(out)


def _downstream_config(name, inputs, token_dir):
  config = _config(name, f"tiny,input={inputs}")
  config.tokens = token_dir if inputs == "tokens" else ""
  config.data.fractions = FRACTIONS
  config.data.synthetic = SYNTHETIC
  return config


@pytest.mark.parametrize("inputs", ["tokens", "continuous"])
def test_translator_loss_falls_on_a_repeated_batch(inputs, token_dir):
  config = _downstream_config("translate", inputs, token_dir)
  config.train.learning_rate = 1e-2
  splits, code_spec = base.load_sign_splits(config)
  losses = train_helpers.losses_on_a_repeated_batch(
      translate.TranslatorTask(config, code_spec), config, splits["train"], 60
  )
  assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.slow
def test_translation_run_scores_the_test_split(tmp_path, token_dir, capsys):
  config = _downstream_config("translate", "tokens", token_dir)
  result = translate.run(config, str(tmp_path))
  # Called again, a finished run says its test figures and returns them.
  capsys.readouterr()
  assert translate.run(config, str(tmp_path)) == pytest.approx(result)
  assert "finished; test (best checkpoint): " in capsys.readouterr().out
  with open(tmp_path / "test_metrics.json") as f:
    saved = json.load(f)
  assert saved == pytest.approx(result)
  assert saved["examples"] == len(
      tokens.TokenSource(os.path.join(token_dir, "test.parquet"))
  )
  splits = {json.loads(l)["split"] for l in open(tmp_path / "metrics.jsonl")}
  assert splits == {"train", "validation", "test"}


def test_tokens_input_needs_a_token_directory():
  config = _downstream_config("translate", "tokens", "")
  with pytest.raises(ValueError, match="--config.tokens"):
    base.load_sign_splits(config)


@pytest.mark.parametrize("inputs", ["tokens", "continuous"])
def test_probe_loss_falls_on_a_repeated_batch(inputs, token_dir):
  config = _downstream_config("probe", inputs, token_dir)
  config.train.learning_rate = 1e-2
  splits, code_spec = probe.probe_splits(config)
  losses = train_helpers.losses_on_a_repeated_batch(
      probe.ProbeTask(config, code_spec), config, splits["train"], 40
  )
  assert losses[-1] < 0.6 * losses[0], losses


def test_probe_splits_the_test_split_by_signer(token_dir):
  config = _downstream_config("probe", "tokens", token_dir)
  parts, _ = probe.probe_splits(config)
  test = tokens.TokenSource(os.path.join(token_dir, "test.parquet"))
  signers = {k: set(v.participant_ids) for k, v in parts.items()}
  assert not signers["train"] & (signers["validation"] | signers["test"])
  assert not signers["validation"] & signers["test"]
  assert sorted(
      np.concatenate([v.sequence_ids for v in parts.values()])
  ) == sorted(test.sequence_ids)


def test_probe_fractions_without_a_validation_split_are_refused_first(
    tmp_path,
):
  config = config_lib.load("probe", "tiny")
  config.tokens = str(tmp_path / "no_tokens_here")  # never read.
  config.probe_fractions = dict(train=0.8, test=0.2)
  with pytest.raises(errors.UserError, match=r"probe_fractions .* no \['val"):
    probe.probe_splits(config)


def test_probe_run_reports_accuracy_per_letter(tmp_path, token_dir):
  config = _downstream_config("probe", "tokens", token_dir)
  result = probe.run(config, str(tmp_path))
  letters = [result[f"accuracy_{c}"] for c in "abcdefghijklmnopqrstuvwxyz"]
  assert result["accuracy"] == pytest.approx(np.mean(letters))
  # The majority baseline, from the phrases of the probe's test part.
  phrases = probe.probe_splits(config)[0]["test"].phrases
  share = np.array(
      [
          np.mean([c in p.lower() for p in phrases])
          for c in "abcdefghijklmnopqrstuvwxyz"
      ]
  )
  assert result["majority_accuracy"] == pytest.approx(
      np.maximum(share, 1 - share).mean()
  )
  # Balanced: each letter's true positive and true negative rates weigh
  # alike, so with classes this unbalanced (most letters are absent from
  # most phrases) it is not the plain accuracy.
  assert result["balanced_accuracy"] != pytest.approx(result["accuracy"])
  with open(tmp_path / "test_metrics.json") as f:
    assert json.load(f) == pytest.approx(result, nan_ok=True)
