"""Sign-to-text translation (the paper's Table 2), on tokens or keypoints.

`run(config, workdir)` trains the translator of configs/translate.py with the
shared loop: teacher forcing on characters, validation by greedy decoding
(with a key/value cache) scored with the normalised Levenshtein metric, and
the best checkpoint scored on the test split (`test_metrics.json`).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from asl_vq import metrics as metrics_lib
from asl_vq import train
from asl_vq import vocab
from asl_vq.data import tokens as tokens_lib
from asl_vq.models import transformer
from asl_vq.models import translate as translate_lib
from asl_vq.tasks import base


def references(batch) -> list[str]:
  """The phrases of a host batch's valid examples."""
  return [
      vocab.decode(l[m])
      for l, m, e in zip(
          batch["labels"], batch["label_mask"], batch["example_mask"]
      )
      if e
  ]


class TranslatorTask(base.SignTask):
  """Character cross-entropy; evaluated by greedy decoding."""

  curves = ("loss", "accuracy", "score")
  summary_name = "translator"

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      code_spec: tokens_lib.CodeSpec | None = None,
  ):
    """code_spec: the token streams' (input=tokens); None for keypoints."""
    super().__init__(config, code_spec)
    self.model_config = self.sign_model_config(translate_lib.TranslatorConfig)
    self.model = translate_lib.Translator(self.model_config)

  def init_variables(self, rng):
    return translate_lib.init_variables(
        self.model, self.config.data.max_len, rng
    )

  def _loss(self, logits, batch, targets, target_mask):
    mask = target_mask & batch["example_mask"][:, None]
    loss = translate_lib.sequence_loss(
        logits, targets, mask, self.config.train.label_smoothing
    )
    m = mask.astype(jnp.float32)
    accuracy = jnp.sum((logits.argmax(-1) == targets) * m) / jnp.maximum(
        m.sum(), 1.0
    )
    return loss, accuracy

  def loss(self, params, state, batch, rng):
    dec_in, targets, tmask = transformer.shift_targets(
        batch["labels"], batch["label_mask"]
    )
    logits, updates = self.model.apply(
        state.variables(params),
        batch[self.key],
        batch["input_mask"],
        dec_in,
        train=True,
        rngs={"dropout": rng},
        mutable=["batch_stats"],
    )
    loss, accuracy = self._loss(logits, batch, targets, tmask)
    return loss, {"accuracy": accuracy}, updates

  def model_inputs(self, batch):
    decoder_inputs, _, _ = transformer.shift_targets(
        batch["labels"], batch["label_mask"]
    )
    return batch[self.key], batch["input_mask"], decoder_inputs

  def eval_batch(self, variables, batch):
    dec_in, targets, tmask = transformer.shift_targets(
        batch["labels"], batch["label_mask"]
    )
    logits = self.model.apply(
        variables, batch[self.key], batch["input_mask"], dec_in, train=False
    )
    loss, accuracy = self._loss(logits, batch, targets, tmask)
    n = jnp.sum(batch["example_mask"].astype(jnp.float32))
    ids = translate_lib.greedy_decode(
        self.model_config, variables, batch[self.key], batch["input_mask"]
    )
    return (
        {"loss": loss * n, "accuracy": accuracy * n, "examples": n},
        {"ids": ids},
    )

  def eval_host(self, outputs, batch):
    hyps = [
        vocab.decode(ids)
        for ids, e in zip(outputs["ids"], batch["example_mask"])
        if e
    ]
    return list(zip(references(batch), hyps))

  def eval_metrics(self, sums, records):
    result = base.mean_sums(sums)
    result["score"] = (
        metrics_lib.normalized_levenshtein(*zip(*records)) if records else 0.0
    )
    return result


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains the translator; returns the best checkpoint's test metrics."""
  splits, code_spec = base.load_sign_splits(config)
  return train.fit(config, workdir, TranslatorTask(config, code_spec), splits)
