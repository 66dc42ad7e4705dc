"""The tokenizer experiment: encoder -> RVQ -> CTC head and decoder.

`run(config, workdir)` trains it with the shared loop (`asl_vq.train`);
`TokenizerTask` says what is trained (the model and its training loss are
`asl_vq.models.tokenizer`'s) and how it is evaluated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asl_vq import losses
from asl_vq import metrics as metrics_lib
from asl_vq import sharding
from asl_vq import train
from asl_vq import vocab
from asl_vq.data import datasets
from asl_vq.models import tokenizer as tokenizer_lib
from asl_vq.tasks import base

CURVES = (
    "loss",
    "recon",
    "ctc",
    "commit",
    "score",
    "perplexity_q0",
    "usage_q0",
)


def model_config(
    config: ml_collections.ConfigDict,
) -> tokenizer_lib.TokenizerConfig:
  """The tokenizer of `config` as training runs it: the attention's passes
  chosen for the training mesh (every device: `sharding.make_mesh()`)."""
  return tokenizer_lib.TokenizerConfig.from_config(
      config, **sharding.attention_layout(sharding.make_mesh())
  )


IMAGE_SUMS = ("image_sum", "points", "palms_sum", "palm_points")
_WRIST, _MIDDLE_KNUCKLE, _H = 0, 9, 21  # MediaPipe's hand points.


def image_error_sums(recon, batch, valid) -> dict[str, jax.Array]:
  """Sums for the reconstruction's error in the input's units (README, "Any
  length"), over the detected points of valid frames (`batch["scale"]`,
  the pipeline's: 0 where a point was not detected): `image_sum`, the
  distances of a point from its reconstruction (image fractions for
  MediaPipe inputs), over `points`; `palms_sum`, each distance over its
  hand's palm length (wrist to the middle finger's knuckle), over
  `palm_points`, the points of hands with both detected. `eval_metrics`
  reports their means as `image_error` and `image_error_palms`."""
  scale = batch["scale"]
  detected = (scale > 0).all(-1) & valid[..., None]  # [B, L, 42]
  distance = jnp.linalg.norm((recon - batch["inputs"]) * scale, axis=-1)
  image = batch["inputs"] * scale  # point minus its mean: same in a hand.
  palms, palm_ok = [], []
  for start in (0, _H):
    wrist, knuckle = start + _WRIST, start + _MIDDLE_KNUCKLE
    length = jnp.linalg.norm(
        image[..., knuckle, :] - image[..., wrist, :], axis=-1
    )
    ok = detected[..., wrist] & detected[..., knuckle] & (length > 0)
    palms.append(jnp.repeat(jnp.where(ok, length, 1.0)[..., None], _H, -1))
    palm_ok.append(jnp.repeat(ok[..., None], _H, -1))
  palm, palm_ok = jnp.concatenate(palms, -1), jnp.concatenate(palm_ok, -1)
  palm_ok = palm_ok & detected
  return dict(
      image_sum=jnp.sum(jnp.where(detected, distance, 0.0)),
      points=jnp.sum(detected.astype(jnp.float32)),
      palms_sum=jnp.sum(jnp.where(palm_ok, distance / palm, 0.0)),
      palm_points=jnp.sum(palm_ok.astype(jnp.float32)),
  )


def code_statistics(counts: np.ndarray) -> dict[str, float]:
  """Per quantizer: usage (fraction of codes used) and perplexity."""
  stats = {}
  for q, c in enumerate(counts):
    p = c / max(c.sum(), 1)
    nz = p[p > 0]
    stats[f"usage_q{q}"] = float((c > 0).mean())
    stats[f"perplexity_q{q}"] = float(np.exp(-(nz * np.log(nz)).sum()))
  return stats


class TokenizerTask(base.Task):
  """Reconstruction + CTC + commitment; evaluated by CTC score and usage."""

  device_keys = tokenizer_lib.TRAINING_KEYS
  # The evaluation also reads each value's scale (`image_error_sums`).
  eval_keys = tokenizer_lib.TRAINING_KEYS + ("scale",)
  curves = CURVES

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = tokenizer_lib.TokenizerModel(model_config(config))

  def init_variables(self, rng):
    return tokenizer_lib.init_variables(
        self.model, self.config.data.max_len, rng
    )

  def loss(self, params, state, batch, rng):
    return tokenizer_lib.training_loss(
        self.model, state.variables(params), batch, rng, self.config.train
    )

  def model_inputs(self, batch):
    return batch["inputs"], batch["input_mask"]

  def eval_batch(self, variables, batch):
    """Loss parts summed over valid examples, code counts, CTC logits (none
    without a CTC head)."""
    out = self.model.apply(
        variables, batch["inputs"], batch["input_mask"], train=False
    )
    _, parts = tokenizer_lib.batch_loss(out, batch, self.config.train)
    # The validation loss (the best checkpoint's criterion) is the
    # reference's: reconstruction + CTC (times train.ctc_weight, 1 in the
    # reference); commitment is reported, not added.
    parts["loss"] = parts.pop("eval_loss")
    n = jnp.sum(batch["example_mask"].astype(jnp.float32))
    sums = {k: v * n for k, v in parts.items()}
    sums["examples"] = n
    valid = batch["input_mask"] & batch["example_mask"][:, None]
    if "scale" in batch:  # the pipeline's (not a hand-made batch).
      sums.update(image_error_sums(out["recon"], batch, valid))
    sums["code_counts"] = jax.vmap(
        lambda c: jnp.zeros(self.config.model.codebook_size, jnp.int32)
        .at[c]
        .add(valid.astype(jnp.int32)),
        in_axes=-1,
    )(out["codes"])
    return sums, (
        {"ctc_logits": out["ctc_logits"]} if "ctc_logits" in out else {}
    )

  def eval_host(self, outputs, batch):
    """(reference, greedy CTC decoding) per valid example; none without a
    CTC head."""
    if "ctc_logits" not in outputs:
      return []
    decoded = losses.ctc_greedy_decode(
        outputs["ctc_logits"], batch["input_mask"]
    )
    return [
        (vocab.decode(l[m]), vocab.decode(ids))
        for ids, l, m, e in zip(
            decoded, batch["labels"], batch["label_mask"], batch["example_mask"]
        )
        if e
    ]

  def eval_metrics(self, sums, records):
    """Loss parts per example, code usage and perplexity, the
    reconstruction's error in the input's units (`image_error_sums`) and,
    with a CTC head, 'score': the normalised Levenshtein of its greedy decoding (<= 1;
    below 0 when its edits outnumber the references' characters, see
    `metrics.normalized_levenshtein`). Without a CTC head neither 'ctc' nor
    'score' is computed, so neither is reported."""
    image = {k: float(sums.pop(k)) for k in IMAGE_SUMS if k in sums}
    result = base.mean_sums(sums)
    if image:
      result["image_error"] = image["image_sum"] / max(image["points"], 1.0)
      result["image_error_palms"] = image["palms_sum"] / max(
          image["palm_points"], 1.0
      )
    if self.config.model.use_ctc:
      result["score"] = (
          metrics_lib.normalized_levenshtein(*zip(*records)) if records else 0.0
      )
    result.update(code_statistics(sums["code_counts"]))
    return result

  def summary(self):
    return tokenizer_lib.model_summary(self.model.config)

  def format_eval(self, val: dict[str, float]) -> str:
    """The validation / test line; a part not computed (no CTC head: 'ctc',
    'score') shows as "—"."""
    part = lambda k, f: f"{k} {val[k]:{f}}" if k in val else f"{k} —"
    usage = " ".join(
        f"{val[k]:.2f}" for k in sorted(val) if k.startswith("usage_q")
    )
    ppl = " ".join(
        f"{val[k]:.0f}" for k in sorted(val) if k.startswith("perplexity_q")
    )
    image = (
        f" image {val['image_error']:.4f} ({val['image_error_palms']:.2f} palms)"
        if "image_error" in val
        else ""
    )
    return (
        f"{part('loss', '.4f')} {part('recon', '.4f')}{image} "
        f"{part('ctc', '.3f')} {part('score', '.3f')} usage [{usage}] "
        f"perplexity [{ppl}]"
    )


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains the tokenizer; returns the best checkpoint's test metrics."""
  splits = datasets.load(config)
  return train.fit(config, workdir, TokenizerTask(config), splits)
