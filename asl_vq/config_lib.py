"""What every config shares: the `arg` parser, the base training block and
the size presets' common overrides; and loading a config by name.

The configs live in the repository's top-level `configs/` and install with
the package as `asl_vq.configs`, so `--config=` takes a file path from a
checkout (`--config=configs/tokenizer.py:cpu`) or a packaged config by name
from anywhere (`--config=tokenizer:cpu`, see `resolve`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from typing import Any

import ml_collections

from asl_vq import errors

SIZES = ("paper", "cpu", "tiny")


def parse_arg(arg: str | None, **options: tuple[str, ...]) -> dict[str, str]:
  """A config's `arg` string -> {'size': ..., option: value}.

  `arg` is comma-separated: at most one size preset (`paper` by default,
  `cpu`, `tiny`) and `name=value` for each option the config declares;
  `options` maps an option's name to its allowed values, the first being
  the default.

  Raises:
    ValueError: an unknown token, option or value, naming the allowed ones.
  """
  out = {"size": SIZES[0], **{k: v[0] for k, v in options.items()}}
  for token in filter(None, (arg or "").split(",")):
    name, eq, value = token.partition("=")
    if not eq:
      name, value = "size", token
    allowed = SIZES if name == "size" else options.get(name)
    if allowed is None:
      known = ", ".join(f"{k}=" for k in options) or "none"
      # Raised inside absl's flag parsing, which names the type: ValueError.
      raise ValueError(
          f"unknown config option {token!r}: a size preset "
          f"({', '.join(SIZES)}) or one of {known}"
      )
    if value not in allowed:
      raise ValueError(f"unknown {name} {value!r}: {', '.join(allowed)}")
    out[name] = value
  return out


# The `train` block's fields at the paper's scale; a config gives what
# differs. Presets: `cpu` logs and saves more often, `tiny` runs in seconds.
_TRAIN = dict(
    optimizer="schedule_free_adamw",  # or "adamw" (asl_vq.train).
    batch_size=44,
    eval_batch_size=64,
    num_epochs=100,
    learning_rate=1e-3,
    # A linear warm-up over updates, or the reference's over epochs (one of
    # them 0; asl_vq.optimizers.learning_rate_schedule).
    warmup_steps=500,
    warmup_epochs=0.0,
    grad_clip=4.0,
    weight_decay=0.0,
    # Every N steps, and at each epoch's end and the last step (<= 0: only
    # there; asl_vq.train.itstime).
    log_every_steps=50,
    checkpoint_every_steps=500,
    keep_checkpoints=2,
    eval_every_epochs=1,
    # Checkpoints are written in the background while training goes on
    # (asl_vq.checkpointing); False writes them before the next step.
    async_checkpoints=True,
    max_eval_batches=-1,  # -1 = the whole validation split.
    # BatchNorm statistics recomputed at the schedule-free evaluation point
    # over this many training batches (at most an epoch) before every
    # evaluation, as the reference (50); 0 = the training point's running
    # statistics. Models without BatchNorm ignore it.
    bn_batches=50,
)
_CPU_TRAIN = dict(log_every_steps=10, checkpoint_every_steps=100)
_TINY_TRAIN = dict(
    batch_size=8,
    eval_batch_size=8,
    num_epochs=2,
    warmup_steps=2,
    warmup_epochs=0.0,
    log_every_steps=2,
    checkpoint_every_steps=3,
)
# Model sizes of the `tiny` preset that every model shares (those it has).
TINY_MODEL = dict(dim=16, num_heads=2, mlp_dim=32, num_blocks=1, kernel_size=5)


def _block(
    size: str, paper: dict, cpu: dict, tiny: dict
) -> ml_collections.ConfigDict:
  """A config block: its `paper` fields, then the `cpu` or `tiny` preset's
  values over them (none at `paper`)."""
  return ml_collections.ConfigDict(
      dict(paper, **{"cpu": cpu, "tiny": tiny}.get(size, {}))
  )


def train_config(
    size: str, *, cpu: dict | None = None, **paper
) -> ml_collections.ConfigDict:
  """The `train` block: the base fields, the config's `paper` values, then
  the preset's (`cpu` adds the config's own `cpu` values; `tiny` is
  common to all)."""
  return _block(
      size, dict(_TRAIN, **paper), dict(_CPU_TRAIN, **(cpu or {})), _TINY_TRAIN
  )


def model_config(
    size: str, *, cpu: dict | None = None, tiny: dict | None = None, **paper
) -> ml_collections.ConfigDict:
  """The `model` block: the config's `paper` fields, then the preset's:
  `cpu` the config's own values, `tiny` the sizes every model shares
  (`TINY_MODEL`, those fields it has) and the config's own `tiny` values."""
  shared = {k: v for k, v in TINY_MODEL.items() if k in paper}
  return _block(size, paper, cpu or {}, dict(shared, **(tiny or {})))


def downstream_model(
    size: str, inputs: str, *, cpu: dict, tiny: dict, **paper
) -> ml_collections.ConfigDict:
  """The `model` block of a downstream model that reads `inputs` (translate,
  probe; its `encoder` field): the config's fields (`model_config`), then
  the Squeezeformer blocks of `input=continuous`, the encoder over the
  keypoints, at each preset (`tiny`: `TINY_MODEL`'s)."""
  return model_config(
      size,
      encoder=inputs,
      **paper,
      num_blocks=6,
      kernel_size=51,
      cpu=dict(cpu, num_blocks=3, kernel_size=31),
      tiny=tiny,
  )


def downstream_config(
    task: str, size: str, inputs: str = "tokens"
) -> ml_collections.ConfigDict:
  """The fields every downstream config (translate, probe, lm) shares: its
  task, the seed, `tokens` (the tokenized dataset, configs/tokenize.py's
  output; input=tokens) and the tokenizer's data block at the same preset
  (the same dataset, signer split and lengths: for token inputs they must
  match the tokenized files). Keypoint inputs are flipped in training as
  the tokenizer's are; codes never are."""
  config = ml_collections.ConfigDict()
  config.task = task
  config.seed = 0
  config.tokens = ""
  config.data = load("tokenizer", size).data
  config.data.flip_prob = 0.25 if inputs == "continuous" else 0.0
  return config


# Fields added to the configs since runs were first saved, with the value
# that the runs saved without them had: (section, field) -> value, for every
# config with that section, or only the tokenizer's ("tokenizer", ...). A
# field added to a config goes here too, or runs saved before it are
# refused on resume (`saved_config`); one that changes a tokenizer's codes
# also goes into `inference.FINGERPRINTED_SINCE`.
ADDED_FIELDS = {
    ("data", "resample"): "linear",
    ("data", "normalization"): "sequence",
    ("data", "min_hand_frames"): 2,
    ("train", "warmup_epochs"): 0.0,
    ("tokenizer", "model", "conv_bn_activation"): "silu",
    ("tokenizer", "model", "revival"): "batch",
    ("tokenizer", "model", "attention_window"): 0,
    ("tokenizer", "train", "ctc_weight"): 1.0,
}


# Tasks under an earlier name: old name -> today's.
RENAMED_TASKS = {"seq2seq": "translate"}


def task_name(task: str) -> str:
  """Today's name of `task` (a config's or a saved run's `task`): an
  earlier name (`seq2seq`) mapped to today's (`translate`), any other kept."""
  return RENAMED_TASKS.get(task, task)


def saved_config(fields: dict[str, Any]) -> dict[str, Any]:
  """A saved config.json's fields, with the fields added since at the values
  the run had without them (e.g. a tokenizer saved before
  `model.conv_bn_activation` existed was trained with the SiLU) and its task
  under today's name, so that an older run loads as it was trained and
  resumes under today's configs. A new dict; `fields` is not changed."""
  out = json.loads(json.dumps(fields))
  if "task" in out:
    out["task"] = task_name(out["task"])
  for key, value in ADDED_FIELDS.items():
    if key[0] == "tokenizer":
      if out.get("task") != "tokenizer":
        continue
      key = key[1:]
    section, name = key
    if isinstance(out.get(section), dict):
      out[section].setdefault(name, value)
  return out


def load(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The packaged config `name`'s `get_config(arg)` (e.g. "tokenizer")."""
  return importlib.import_module(f"asl_vq.configs.{name}").get_config(arg)


def resolve(spec: str) -> str:
  """A `--config=` value -> a config file path (with its `:arg`).

  A path to an existing file is kept; `name[:arg]` names a packaged config.

  Raises:
    ValueError: neither a file nor a packaged config, naming the packaged
      ones.
  """
  path, colon, arg = spec.partition(":")
  if os.path.isfile(path):
    return spec
  name = os.path.splitext(os.path.basename(path))[0]
  found = (
      importlib.util.find_spec(f"asl_vq.configs.{name}")
      if (name.isidentifier())
      else None
  )
  if found is None or not found.origin:
    raise errors.UserError(
        f"--config={spec}: no such file and no packaged config "
        f"{name!r}; packaged: {', '.join(packaged())}"
    )
  return found.origin + colon + arg


def packaged() -> list[str]:
  """The names of the packaged configs."""
  package = importlib.import_module("asl_vq.configs")
  directory = os.path.dirname(package.__file__)
  return sorted(
      f[:-3]
      for f in os.listdir(directory)
      if f.endswith(".py") and not f.startswith("_")
  )
