"""Text to signing: the MusicGen-style LM over a tokenized dataset.

`run(config, workdir)` trains the LM of configs/lm.py with the shared loop:
teacher forcing on the code pattern of each sequence given its phrase, the
mean cross-entropy over the Q streams as the loss, next-token accuracy per
quantizer on validation and, for the best checkpoint, on the test split
(`test_metrics.json`: `accuracy_q0` .. `accuracy_q3`, coarse to fine: the
paper's quantizers 1..4). Sampling, decoding and the generation score are
`asl_vq.generate`'s.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from asl_vq import train
from asl_vq.data import tokens as tokens_lib
from asl_vq.models import lm as lm_lib
from asl_vq.tasks import base


class LMTask(base.Task):
  """Cross-entropy on the next frame's codes; accuracy per quantizer."""

  device_keys = ("codes", "input_mask", "labels", "label_mask", "example_mask")

  summary_name = "lm"

  def __init__(
      self, config: ml_collections.ConfigDict, code_spec: tokens_lib.CodeSpec
  ):
    """code_spec: the token streams' (`tokens.code_spec(config.tokens)`)."""
    self.config = config
    self.model_config = lm_lib.LMConfig.from_config(config, code_spec)
    self.model = lm_lib.LM(self.model_config)
    q = self.model_config.num_quantizers
    self.curves = ("loss",) + tuple(f"accuracy_q{i}" for i in range(q))

  def init_variables(self, rng):
    return lm_lib.init_variables(
        self.model,
        self.config.data.max_len,
        self.config.data.max_label_len + 1,
        rng,
    )

  def _apply(self, variables, batch, **kwargs):
    """-> (logits, targets, target mask)."""
    c = self.model_config
    tokens, predicted = lm_lib.build_pattern(
        batch["codes"], batch["input_mask"], c.codebook_size, c.pattern
    )
    text, text_mask = lm_lib.phrase_inputs(batch["labels"], batch["label_mask"])
    logits = self.model.apply(
        variables, tokens[:, :-1], text, text_mask, **kwargs
    )
    mask = predicted[:, 1:] & batch["example_mask"][:, None, None]
    return logits, tokens[:, 1:], mask

  def _metrics(self, logits, targets, mask):
    losses = lm_lib.stream_losses(logits, targets, mask)
    right, total = lm_lib.stream_hits(
        logits, targets, mask, self.model_config.codebook_size
    )
    return losses.mean(), right, total

  def loss(self, params, state, batch, rng):
    logits, targets, mask = self._apply(
        state.variables(params), batch, train=True, rngs={"dropout": rng}
    )
    loss, right, total = self._metrics(logits, targets, mask)
    accuracy = right / jnp.maximum(total, 1.0)
    return loss, {f"accuracy_q{i}": a for i, a in enumerate(accuracy)}, {}

  def eval_batch(self, variables, batch):
    logits, targets, mask = self._apply(variables, batch, train=False)
    loss, right, total = self._metrics(logits, targets, mask)
    n = jnp.sum(batch["example_mask"].astype(jnp.float32))
    return {"loss": loss * n, "right": right, "total": total, "examples": n}, {}

  def format_eval(self, metrics):
    """'loss 1.234 accuracy_q0 0.5 ...': the loss, each quantizer's."""
    shown = ["loss"] + sorted(k for k in metrics if k.startswith("accuracy_q"))
    return " ".join(f"{k} {metrics[k]:.4g}" for k in shown)

  def eval_metrics(self, sums, records):
    del records
    result = base.mean_sums(sums)
    accuracy = sums["right"] / np.maximum(sums["total"], 1.0)
    result.update({f"accuracy_q{i}": float(a) for i, a in enumerate(accuracy)})
    return result


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains the LM; returns the best checkpoint's test metrics."""
  splits, code_spec = base.load_sign_splits(config)
  return train.fit(config, workdir, LMTask(config, code_spec), splits)
