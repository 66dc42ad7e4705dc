"""The probing study (the paper's Table 5): which letters occur in the phrase.

`run(config, workdir)` trains the probe of configs/probe.py with the shared
loop, inside the tokenizer's test split (phrases and signers the tokenizer
never saw), split again by signer into the probe's own train / validation /
test; the accuracy per letter of the best checkpoint on its test part goes to
`test_metrics.json` (`accuracy_a` .. `accuracy_z`, and their mean `accuracy`),
beside what it must be read against: `majority_accuracy`, the mean over
letters of always answering a letter's more frequent class (most letters are
absent from most phrases, so this alone scores ~0.7), and
`balanced_accuracy`, the mean over letters of (true positive rate + true
negative rate) / 2 (0.5: chance), over the letters both present and absent
in some test phrase.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from asl_vq import checkpointing
from asl_vq import train
from asl_vq import vocab
from asl_vq.data import splits as splits_lib
from asl_vq.data import tokens as tokens_lib
from asl_vq.models import probe as probe_lib
from asl_vq.tasks import base


class ProbeTask(base.SignTask):
  """26 sigmoid outputs; evaluated by accuracy per letter."""

  curves = ("loss", "accuracy")
  summary_name = "probe"

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      code_spec: tokens_lib.CodeSpec | None = None,
      codebooks: np.ndarray | None = None,
  ):
    """code_spec: the token streams' (input=tokens), None for keypoints;
    codebooks [Q, K, D]: the tokenizer's, to initialise the embeddings."""
    super().__init__(config, code_spec)
    self.model = probe_lib.Probe(self.sign_model_config(probe_lib.ProbeConfig))
    self.codebooks = codebooks

  def init_variables(self, rng):
    return probe_lib.init_variables(
        self.model, self.config.data.max_len, rng, self.codebooks
    )

  def _targets(self, batch):
    return probe_lib.letter_targets(batch["labels"], batch["label_mask"])

  def loss(self, params, state, batch, rng):
    logits, updates = self.model.apply(
        state.variables(params),
        batch[self.key],
        batch["input_mask"],
        train=True,
        rngs={"dropout": rng},
        mutable=["batch_stats"],
    )
    targets = self._targets(batch)
    loss = probe_lib.probe_loss(logits, targets, batch["example_mask"])
    accuracy = probe_lib.letter_accuracy(
        logits, targets, batch["example_mask"]
    ).mean()
    return loss, {"accuracy": accuracy}, updates

  def model_inputs(self, batch):
    return batch[self.key], batch["input_mask"]

  def eval_batch(self, variables, batch):
    logits = self.model.apply(
        variables, batch[self.key], batch["input_mask"], train=False
    )
    targets = self._targets(batch)
    w = batch["example_mask"].astype(jnp.float32)[:, None]
    n = jnp.sum(w)
    present, said = (targets > 0.5) * w, (logits > 0) * w
    return (
        {
            "loss": probe_lib.probe_loss(logits, targets, batch["example_mask"])
            * n,
            "letters_right": probe_lib.letter_accuracy(
                logits, targets, batch["example_mask"]
            )
            * n,
            "letters_present": present.sum(0),
            "true_positives": (present * said).sum(0),
            "true_negatives": ((w - present) * (w - said)).sum(0),
            "examples": n,
        },
        {},
    )

  def eval_metrics(self, sums, records):
    del records
    result = base.mean_sums(sums)
    per_letter = sums["letters_right"] / max(float(sums["examples"]), 1.0)
    result.update(
        {f"accuracy_{c}": float(a) for c, a in zip(vocab.LETTERS, per_letter)}
    )
    result["accuracy"] = float(per_letter.mean())
    result.update(
        baselines(
            sums["letters_present"],
            sums["true_positives"],
            sums["true_negatives"],
            sums["examples"],
        )
    )
    return result


def baselines(
    present, true_positives, true_negatives, examples
) -> dict[str, float]:
  """`majority_accuracy` and `balanced_accuracy` (module docstring) from
  per-letter counts [26] over `examples` phrases; balanced is NaN when no
  letter is both present and absent."""
  present = np.asarray(present, np.float64)
  absent = float(examples) - present
  share = present / max(float(examples), 1.0)
  both = (present > 0) & (absent > 0)
  rates = 0.5 * (
      np.asarray(true_positives)[both] / present[both]
      + np.asarray(true_negatives)[both] / absent[both]
  )
  return dict(
      majority_accuracy=float(np.maximum(share, 1 - share).mean()),
      balanced_accuracy=float(rates.mean()) if both.any() else float("nan"),
  )


def probe_splits(
    config: ml_collections.ConfigDict,
) -> tuple[dict, tokens_lib.CodeSpec | None]:
  """The tokenizer's test split, split again by signer, and the code spec
  of token inputs (None for keypoints).

  Raises:
    errors.UserError: `probe_fractions` names no 'train' or 'validation'
      split (before anything is loaded).
  """
  splits_lib.check_run_fractions(config.probe_fractions, "probe_fractions")
  splits, code_spec = base.load_sign_splits(config)
  test = splits["test"]
  index = splits_lib.split_by_signer(
      np.asarray(test.participant_ids),
      dict(config.probe_fractions),
      seed=config.seed,
  )
  return (
      {name: tokens_lib.subset(test, idx) for name, idx in index.items()},
      code_spec,
  )


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains the probe; returns its test accuracies (best checkpoint)."""
  splits, code_spec = probe_splits(config)
  codebooks = None
  if config.model.encoder == "tokens" and config.init_from_codebooks:
    checkpoint = tokens_lib.read_metadata(config.tokens, "test").get(
        "checkpoint"
    )
    codebooks = checkpointing.load_codebooks(checkpoint) if checkpoint else None
  return train.fit(
      config, workdir, ProbeTask(config, code_spec, codebooks), splits
  )
