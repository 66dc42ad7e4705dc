"""Sign-to-text translation (the paper's Table 2), on tokens or keypoints.

`run(config, workdir)` trains the translator of configs/seq2seq.py with the
shared loop: teacher forcing on characters, validation by greedy decoding
(with a key/value cache) scored with the normalised Levenshtein metric, and
the best checkpoint scored on the test split (`test_metrics.json`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections

from asl_vq import metrics as metrics_lib
from asl_vq import trainer
from asl_vq import vocab
from asl_vq.data import datasets
from asl_vq.data import tokens as tokens_lib
from asl_vq.models import translator

SPLITS = ("train", "validation", "test")


def input_key(config: ml_collections.ConfigDict) -> str:
  """The batch entry the sign encoder reads."""
  return "codes" if config.model.encoder == "tokens" else "inputs"


def dummy_inputs(config: ml_collections.ConfigDict, length: int):
  if config.model.encoder == "tokens":
    return jnp.zeros((2, length, config.model.num_quantizers), jnp.int32)
  return jnp.zeros((2, length, 42, 2), jnp.float32)


def references(batch) -> list[str]:
  """The phrases of a host batch's valid examples."""
  return [vocab.decode(l[p == 0]) for l, p, e in zip(
      batch["labels"], batch["label_paddings"], batch["example_mask"]) if e]


class TranslatorTask:
  """Character cross-entropy; evaluated by greedy decoding."""

  curves = ("loss", "accuracy", "score")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model_config = translator.TranslatorConfig(
        **config.model.to_dict(), max_target_len=config.data.max_label_len)
    self.model = translator.Translator(self.model_config)
    self.key = input_key(config)
    self.device_keys = (self.key, "input_mask", "labels", "label_paddings",
                        "example_mask")

  def init_variables(self, rng):
    p_rng, d_rng = jax.random.split(rng)
    s = self.config.data.max_label_len + 1
    return self.model.init({"params": p_rng, "dropout": d_rng},
                           dummy_inputs(self.config, self.config.data.max_len),
                           jnp.ones((2, self.config.data.max_len), bool),
                           jnp.zeros((2, s), jnp.int32), train=False)

  def _loss(self, logits, batch, targets, target_mask):
    mask = target_mask & batch["example_mask"][:, None]
    loss = translator.sequence_loss(logits, targets, mask,
                                    self.config.train.label_smoothing)
    m = mask.astype(jnp.float32)
    accuracy = jnp.sum((logits.argmax(-1) == targets) * m) / jnp.maximum(
        m.sum(), 1.0)
    return loss, accuracy

  def loss(self, params, state, batch, rng):
    dec_in, targets, tmask = translator.shift_targets(
        batch["labels"], batch["label_paddings"])
    logits, updates = self.model.apply(
        state.variables(params), batch[self.key], batch["input_mask"], dec_in,
        train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
    loss, accuracy = self._loss(logits, batch, targets, tmask)
    return loss, {"accuracy": accuracy}, updates

  def eval_batch(self, variables, batch):
    dec_in, targets, tmask = translator.shift_targets(
        batch["labels"], batch["label_paddings"])
    logits = self.model.apply(variables, batch[self.key], batch["input_mask"],
                              dec_in, train=False)
    loss, accuracy = self._loss(logits, batch, targets, tmask)
    n = jnp.sum(batch["example_mask"].astype(jnp.float32))
    ids = translator.greedy_decode(self.model_config, variables,
                                   batch[self.key], batch["input_mask"])
    return ({"loss": loss * n, "accuracy": accuracy * n, "examples": n},
            {"ids": ids})

  def eval_host(self, outputs, batch):
    hyps = [vocab.decode(ids) for ids, e in zip(outputs["ids"],
                                                batch["example_mask"]) if e]
    return list(zip(references(batch), hyps))

  def eval_metrics(self, sums, records):
    result = trainer.mean_sums(sums)
    result["score"] = metrics_lib.normalized_levenshtein(*zip(*records))
    return result

  def summary(self):
    shapes = jax.eval_shape(self.init_variables, jax.random.PRNGKey(0))
    return {"translator": sum(x.size for x in jax.tree.leaves(
        shapes["params"]))}


def load_splits(config: ml_collections.ConfigDict) -> dict:
  """The tokenized splits (input=tokens, or no `model.encoder`: the LM) or
  the keypoint splits."""
  if config.model.get("encoder", "tokens") != "tokens":
    return datasets.load(config)
  if not config.tokens:
    raise ValueError("input=tokens needs --config.tokens=DIR, the output of "
                     "configs/tokenize.py")
  splits = {}
  for split in SPLITS:
    path = os.path.join(config.tokens, f"{split}.parquet")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: no tokenized {split} split; run "
                              "configs/tokenize.py into this directory first")
    splits[split] = tokens_lib.TokenSource(path)
  meta = splits["train"].metadata
  # The code streams are the tokenizer's: adopt its sizes.
  config.model.num_quantizers = int(meta["num_quantizers"])
  config.model.codebook_size = int(meta["codebook_size"])
  return splits


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains the translator; returns the best checkpoint's test metrics."""
  splits = load_splits(config)
  return trainer.fit(config, workdir, TranslatorTask(config), splits["train"],
                     splits["validation"], splits["test"])
