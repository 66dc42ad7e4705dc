"""What an experiment gives the shared loop (`asl_vq.train.fit`), with the
defaults most experiments share, and the sign-input helpers of the
downstream tasks (their encoder reads code streams or keypoints:
`SignTask`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np

from asl_vq import sharding
from asl_vq.data import datasets
from asl_vq.data import tokens as tokens_lib


class Task:
  """An experiment for `asl_vq.train.fit`. Methods marked (jit) are traced.

  Subclasses set `device_keys` (batch entries the device steps read; the
  evaluation reads `eval_keys`, by default the same) and `curves` (metrics
  drawn in learning_curves.png), and define `init_variables`, `loss` and
  `eval_batch`.
  """

  device_keys: tuple[str, ...]
  curves: tuple[str, ...]

  @property
  def eval_keys(self) -> tuple[str, ...]:
    return self.device_keys

  summary_name: str = "params"

  def init_variables(self, rng) -> dict[str, Any]:
    """(jit) {'params': ..., and the model's other collections}."""
    raise NotImplementedError

  def loss(
      self, params, state, batch, rng
  ) -> tuple[jax.Array, dict[str, jax.Array], dict[str, Any]]:
    """(jit) (loss, metrics, updated mutable collections) in training."""
    raise NotImplementedError

  def model_inputs(self, batch) -> tuple[Any, ...]:
    """The model's positional inputs from a batch (for `batch_moments`);
    needed by tasks whose model has BatchNorm."""
    raise NotImplementedError

  def batch_moments(self, variables, batch) -> dict[str, Any]:
    """(jit) Every BatchNorm layer's mean and variance over the batch's valid
    frames, from a training-mode pass at `variables` in which nothing else
    changes: no dropout, every quantizer, no codebook update, no running
    statistics kept. {layer path...: {'mean': ([C],), 'var': ([C],)}}."""
    model = self.model.clone(
        config=dataclasses.replace(self.model.config, dropout=0.0)
    )
    _, updates = model.apply(
        variables,
        *self.model_inputs(batch),
        train=True,
        mutable=["batch_stats", "batch_moments"],
    )
    return updates["batch_moments"]

  def eval_batch(
      self, variables, batch
  ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """(jit) (sums over the batch's valid examples, incl. 'examples';
    per-example outputs the host needs)."""
    raise NotImplementedError

  def eval_host(
      self, outputs: dict[str, np.ndarray], batch: dict[str, np.ndarray]
  ) -> list[Any]:
    """Host side, per batch: records (e.g. reference/hypothesis pairs).
    Default: none."""
    del outputs, batch
    return []

  def eval_metrics(
      self, sums: dict[str, np.ndarray], records: list[Any]
  ) -> dict[str, float]:
    """The validation metrics from the summed `sums` and all records.
    Default: the scalar sums per example."""
    del records
    return mean_sums(sums)

  # The metrics `format_eval` shows, in order (those computed).
  shown_metrics: tuple[str, ...] = (
      "loss",
      "score",
      "accuracy",
      "majority_accuracy",
      "balanced_accuracy",
  )

  def format_eval(self, metrics: dict[str, float]) -> str:
    """The line a validation or test result prints: 'loss 1.234 score
    0.5678' (`shown_metrics`, 4 significant digits)."""
    return " ".join(
        f"{k} {metrics[k]:.4g}" for k in self.shown_metrics if k in metrics
    )

  def summary(self) -> dict[str, Any]:
    """Parameter counts, printed at start. Default: the model's parameter
    count under `summary_name`."""
    shapes = jax.eval_shape(self.init_variables, jax.random.PRNGKey(0))
    return {
        self.summary_name: sum(
            x.size for x in jax.tree.leaves(shapes["params"])
        )
    }


class SignTask(Task):
  """A downstream task whose model reads a sign input (codes or keypoints,
  `sign_input_key`) and its mask, and whose targets are the phrase.

  Sets `config`, `code_spec` (the token streams', input=tokens; None for
  keypoints), `key` (the sign input's batch entry) and `device_keys`.
  """

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      code_spec: tokens_lib.CodeSpec | None = None,
  ):
    self.config = config
    self.code_spec = code_spec
    self.key = sign_input_key(config)
    self.device_keys = (
        self.key,
        "input_mask",
        "labels",
        "label_mask",
        "example_mask",
    )

  def sign_model_config(self, config_class: Any) -> Any:
    """`config_class.from_config` (`SignModelConfig`'s) of this run, with
    the attention's passes for this process's devices."""
    return config_class.from_config(
        self.config,
        self.code_spec,
        **sharding.attention_layout(sharding.make_mesh()),
    )


def mean_sums(sums: dict[str, np.ndarray]) -> dict[str, float]:
  """Scalar sums divided by the number of examples (kept as 'examples')."""
  n = max(float(sums["examples"]), 1.0)
  out = {k: float(v) / n for k, v in sums.items() if np.ndim(v) == 0}
  out["examples"] = float(sums["examples"])
  return out


def sign_input_key(config: ml_collections.ConfigDict) -> str:
  """The batch entry a downstream sign encoder reads: 'codes' (token
  streams) or 'inputs' (keypoints), by `config.model.encoder`."""
  return "codes" if config.model.encoder == "tokens" else "inputs"


def load_sign_splits(
    config: ml_collections.ConfigDict,
) -> tuple[dict[str, Any], tokens_lib.CodeSpec | None]:
  """A downstream task's splits and, for token inputs, their code spec.

  Token inputs (`model.encoder == "tokens"`, or a config without an encoder,
  the LM): the tokenized dataset `config.tokens` (`tokens.load_splits`).
  Keypoints: the tokenizer's own data and signer split (`datasets.load`),
  with no code spec.
  """
  if config.model.get("encoder", "tokens") != "tokens":
    return datasets.load(config), None
  return tokens_lib.load_splits(config.tokens)
