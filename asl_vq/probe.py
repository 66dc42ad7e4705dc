"""The probing study (the paper's Table 5): which letters occur in the phrase.

`run(config, workdir)` trains the probe of configs/probe.py with the shared
loop, inside the tokenizer's test split (phrases and signers the tokenizer
never saw), split again by signer into the probe's own train / validation /
test; the accuracy per letter of the best checkpoint on its test part goes to
`test_metrics.json` (`accuracy_a` .. `accuracy_z`, and their mean `accuracy`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asl_vq import checkpointing
from asl_vq import trainer
from asl_vq import translate
from asl_vq import vocab
from asl_vq.data import splits as splits_lib
from asl_vq.data import tokens as tokens_lib
from asl_vq.models import probe as probe_lib


def tokenizer_codebooks(token_source: tokens_lib.TokenSource
                        ) -> np.ndarray | None:
  """The codebooks [Q, K, D] of the tokenizer that wrote the tokens."""
  checkpoint = token_source.metadata.get("checkpoint")
  if not checkpoint:
    return None
  vq = checkpointing.restore(checkpoint, "best")["vq"]
  found = [np.asarray(v) for path, v in
           jax.tree_util.tree_leaves_with_path(vq)
           if getattr(path[-1], "key", None) == "codebook"]
  if len(found) != 1:
    raise ValueError(f"{checkpoint}: expected one RVQ codebook, found "
                     f"{len(found)}")
  return found[0]


class ProbeTask:
  """26 sigmoid outputs; evaluated by accuracy per letter."""

  curves = ("loss", "accuracy")

  def __init__(self, config: ml_collections.ConfigDict,
               codebooks: np.ndarray | None = None):
    self.config = config
    self.model = probe_lib.Probe(probe_lib.ProbeConfig(
        **config.model.to_dict()))
    self.codebooks = codebooks
    self.key = translate.input_key(config)
    self.device_keys = (self.key, "input_mask", "labels", "label_paddings",
                        "example_mask")

  def init_variables(self, rng):
    p_rng, d_rng = jax.random.split(rng)
    length = self.config.data.max_len
    variables = self.model.init(
        {"params": p_rng, "dropout": d_rng},
        translate.dummy_inputs(self.config, length),
        jnp.ones((2, length), bool), train=False)
    if self.codebooks is not None:
      variables = dict(variables, params=probe_lib.init_from_codebooks(
          variables["params"], self.codebooks))
    return variables

  def _targets(self, batch):
    return probe_lib.letter_targets(batch["labels"], batch["label_paddings"])

  def loss(self, params, state, batch, rng):
    logits, updates = self.model.apply(
        state.variables(params), batch[self.key], batch["input_mask"],
        train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
    targets = self._targets(batch)
    loss = probe_lib.probe_loss(logits, targets, batch["example_mask"])
    accuracy = probe_lib.letter_accuracy(logits, targets,
                                         batch["example_mask"]).mean()
    return loss, {"accuracy": accuracy}, updates

  def eval_batch(self, variables, batch):
    logits = self.model.apply(variables, batch[self.key], batch["input_mask"],
                              train=False)
    targets = self._targets(batch)
    n = jnp.sum(batch["example_mask"].astype(jnp.float32))
    return ({"loss": probe_lib.probe_loss(logits, targets,
                                          batch["example_mask"]) * n,
             "letters_right": probe_lib.letter_accuracy(
                 logits, targets, batch["example_mask"]) * n,
             "examples": n}, {})

  def eval_host(self, outputs, batch):
    del outputs, batch
    return []

  def eval_metrics(self, sums, records):
    del records
    result = trainer.mean_sums(sums)
    per_letter = sums["letters_right"] / max(float(sums["examples"]), 1.0)
    result.update({f"accuracy_{c}": float(a)
                   for c, a in zip(vocab.LETTERS, per_letter)})
    result["accuracy"] = float(per_letter.mean())
    return result

  def summary(self):
    shapes = jax.eval_shape(self.init_variables, jax.random.PRNGKey(0))
    return {"probe": sum(x.size for x in jax.tree.leaves(shapes["params"]))}


def probe_splits(config: ml_collections.ConfigDict) -> dict:
  """The tokenizer's test split, split again by signer."""
  test = translate.load_splits(config)["test"]
  index = splits_lib.split_by_signer(np.asarray(test.participant_ids),
                                     dict(config.probe_fractions),
                                     seed=config.seed)
  return {name: tokens_lib.subset(test, idx) for name, idx in index.items()}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains the probe; returns its test accuracies (best checkpoint)."""
  splits = probe_splits(config)
  codebooks = None
  if config.model.encoder == "tokens" and config.init_from_codebooks:
    codebooks = tokenizer_codebooks(tokens_lib.TokenSource(
        os.path.join(config.tokens, "test.parquet")))
  return trainer.fit(config, workdir, ProbeTask(config, codebooks),
                     splits["train"], splits["validation"], splits["test"])
