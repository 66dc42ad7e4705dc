r"""The paper's Table 2 (translation) and Table 5 (probing) as one command.

  python -m asl_vq.experiments.paper_tables --workdir=runs/table2 --preset=cpu

For each tokenizer row of the ablation it trains the tokenizer, tokenizes
every split, trains the translator on the tokens and the letter probe inside
the test split; then the continuous baseline of both. Every stage is a
sub-workdir that resumes (a finished stage returns its results at once; one
whose inputs changed is set aside and run again), so the command can be
killed and run again; each stage is named as it starts. It writes
`table2.md`/`.csv` (normalised Levenshtein on test) and `table5.md`/`.csv`
(probing accuracy per letter and mean) into `--workdir`. With no `--data_dir` the embedded synthetic dataset is used and
the tables say so.
"""

from __future__ import annotations

import os
import string
import time
from typing import Sequence

import jax
import ml_collections
import numpy as np
from absl import flags
from absl import logging
from jax.experimental import multihost_utils
from etils import epath

from asl_vq import cli
from asl_vq import compilation_cache
from asl_vq import config_lib
from asl_vq import errors
from asl_vq import fileio
from asl_vq import provenance
from asl_vq import tables
from asl_vq import workdir as workdir_lib
from asl_vq.data import datasets
from asl_vq.tasks import probe
from asl_vq.tasks import tokenize
from asl_vq.tasks import tokenizer as tokenizer_task
from asl_vq.tasks import translate

FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a program, so importing the module defines no flags."""
  flags.DEFINE_string(
      "workdir", None, "Where the runs and tables go (local " "or gs://...)."
  )
  flags.DEFINE_enum(
      "preset", "cpu", ["paper", "cpu", "tiny"], "Size preset of every config."
  )
  flags.DEFINE_list(
      "rows",
      ["rvq", "rvq+qdrop", "rvq+ctc", "rvq+ctc+qdrop"],
      "Tokenizer ablation rows.",
  )
  flags.DEFINE_string(
      "data_dir",
      "",
      "A Kaggle-layout dataset ('' = the " "embedded synthetic one).",
  )
  flags.DEFINE_integer(
      "tokenizer_epochs",
      None,
      "Override the preset's budget: tokenizer epochs.",
  )
  flags.DEFINE_integer(
      "translate_epochs",
      None,
      "Override the preset's budget: translator epochs.",
  )
  flags.DEFINE_integer(
      "probe_epochs", None, "Override the preset's budget: probe epochs."
  )
  flags.mark_flags_as_required(["workdir"])


LETTERS = string.ascii_lowercase

# Epochs per stage over the stage's own config preset. With `cpu` the
# tokenizers train their preset's full 7 epochs (at 3, their CTC heads were
# barely trained: test CTC score ~0.01), and the whole tables took 47.5 min
# alone on a 2-core CPU; translators at their preset's 8 epochs left the
# continuous baseline short (0.28 on test, 0.36 at 10); the probes'
# validation accuracy peaks by epoch 10.
BUDGETS = {
    "paper": {},
    "cpu": {"translate": 10, "probe": 10},
    "tiny": {},
}


# The stages that train, each with the config of its name (configs/<stage>.py).
STAGES = ("tokenizer", "translate", "probe")


def stage_config(stage: str, overrides: str) -> ml_collections.ConfigDict:
  """The config of `stage` (one of STAGES) with `overrides`
  ('cpu', 'cpu,row=rvq', ...)."""
  return config_lib.load(stage, overrides)


def budget(
    preset: str, epochs: dict[str, int | None] | None = None
) -> dict[str, int]:
  """Epochs per stage (tokenizer, translate, probe): each stage config's own
  at `preset`, `BUDGETS[preset]` over them, `epochs`' non-None values over
  both.

  Raises:
    errors.UserError: `epochs` names a stage that is not one of STAGES.
  """
  unknown = set(epochs or {}) - set(STAGES)
  if unknown:
    raise errors.UserError(
        f"epochs for unknown stage(s) {sorted(unknown)}: the stages are "
        f"{', '.join(STAGES)}"
    )
  return {
      **{
          stage: stage_config(stage, preset).train.num_epochs
          for stage in STAGES
      },
      **BUDGETS[preset],
      **{k: v for k, v in (epochs or {}).items() if v is not None},
  }


# The tables' own data at the `tiny` preset: the tokenizer's tiny data has 8
# signers, one of them in the test split, which the probing study splits
# again by signer into three.
DATA = {
    "tiny": dict(
        synthetic=dict(num_sequences=96, num_signers=16),
        fractions=dict(train=0.4, validation=0.1, test=0.5),
    )
}


def data_config(preset: str) -> ml_collections.ConfigDict:
  """The data block every stage of `preset` shares."""
  data = stage_config("tokenizer", preset).data
  data.update(DATA.get(preset, {}))
  return data


def check_data(preset: str, data: ml_collections.ConfigDict) -> None:
  """Before anything trains: the data splits by signer, and its test split
  has a signer for each of the probing study's own splits.

  Raises:
    ValueError: naming the setting to change.
  """
  config = stage_config("tokenizer", preset)
  config.data = ml_collections.ConfigDict(data.to_dict())
  test = datasets.load(config)["test"]
  fractions = dict(stage_config("probe", preset).probe_fractions)
  signers = len(np.unique(test.participant_ids))
  if signers < len(fractions):
    raise errors.UserError(
        f"the test split holds {signers} signer(s), but the probing study "
        f"splits it by signer into {len(fractions)} ({fractions}): use data "
        "with more signers or a larger data.fractions.test "
        f"(now {dict(config.data.fractions)})"
    )


def _with(config, data, epochs: int):
  """The shared data block (same dataset, signer split and lengths as the
  tokenizers') and the epoch budget."""
  flip_prob = config.data.flip_prob
  config.data = ml_collections.ConfigDict(data.to_dict())
  config.data.flip_prob = flip_prob
  config.train.num_epochs = epochs
  return config


def _set_aside(path: str) -> str:
  """Renames `path` to the first free `<path>.stale-N`; returns it."""
  n = 1
  while epath.Path(f"{path}.stale-{n}").exists():
    n += 1
  epath.Path(path).rename(f"{path}.stale-{n}")
  return f"{path}.stale-{n}"


def adopt_renamed_stages(workdir: str, timings: dict[str, float]) -> None:
  """Moves the sub-workdirs of stages saved under a task's earlier name
  (`config_lib.RENAMED_TASKS`: `seq2seq_<row>`, `.stale-N` ones too) to
  today's (`translate_<row>`), and their wall seconds in `timings`, so that
  tables begun before the rename resume them; one of today's name already
  there is kept."""
  for old_task, task in config_lib.RENAMED_TASKS.items():
    old_prefix, new_prefix = f"{old_task}_", f"{task}_"
    for old in sorted(epath.Path(workdir).glob(f"{old_prefix}*")):
      new = old.parent / (new_prefix + old.name[len(old_prefix) :])
      if new.exists():
        continue
      if jax.process_index() == 0:
        old.rename(new)
      if old.name in timings:
        timings[new.name] = timings.pop(old.name)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("asl_vq: renamed stages")


def run_all(
    workdir: str,
    preset: str,
    rows: Sequence[str],
    data: ml_collections.ConfigDict | None = None,
    epochs: dict[str, int | None] | None = None,
) -> dict[str, dict]:
  """Runs (or resumes) every stage; returns {row: {model: test metrics}}.

  `data`: the data block of every config (default: `data_config(preset)`).
  `epochs`: stage (tokenizer, translate, probe) -> epochs, over `budget`'s (each
  stage config's own, then `BUDGETS[preset]`). Every stage is run in turn and
  resumes what its sub-workdir holds; a finished one returns its results at
  once. A stage whose inputs changed (e.g. a tokenizer trained further, so its
  tokens are made again) is set aside as `<stage>.stale-N` and run again, and
  so is everything after it. `<workdir>/timings.json` holds each stage's wall
  seconds summed over the calls that ran it (a stage stopped and resumed
  counts both parts; one only read back adds the seconds to read it; one set
  aside or removed starts again from 0).

  Raises:
    ValueError: the data cannot serve every stage (`check_data`), or a
      stage's sub-workdir holds a run of another config.
  """
  data = data or data_config(preset)
  check_data(preset, data)
  epochs = budget(preset, epochs)
  timings_path = os.path.join(workdir, "timings.json")
  timings = fileio.read_json(timings_path) or {}
  adopt_renamed_stages(workdir, timings)
  sub = lambda name: os.path.join(workdir, name.replace("+", "_"))
  plan = []  # (row, model, sub-workdir, run, config), in order.
  for row in [*rows, "continuous"]:
    tokens_dir = None
    if row != "continuous":
      tok_dir, tokens_dir = sub(f"tokenizer_{row}"), sub(f"tokens_{row}")
      plan.append(
          (
              row,
              "tokenizer",
              tok_dir,
              tokenizer_task.run,
              _with(
                  stage_config("tokenizer", f"{preset},row={row}"),
                  data,
                  epochs["tokenizer"],
              ),
          )
      )
      config = config_lib.load("tokenize", "")
      config.checkpoint = tok_dir
      plan.append((row, "tokens", tokens_dir, tokenize.run, config))
    inputs = "continuous" if tokens_dir is None else "tokens"
    for model, module in (("translate", translate), ("probe", probe)):
      config = _with(
          stage_config(model, f"{preset},input={inputs}"), data, epochs[model]
      )
      config.tokens = tokens_dir or ""
      plan.append((row, model, sub(f"{model}_{row}"), module.run, config))

  results = {}
  for k, (row, model, out, run, config) in enumerate(plan, 1):
    name = os.path.basename(out)
    if jax.process_index() == 0:
      print(f"[stage {k}/{len(plan)}] {name}", flush=True)
    # A stage whose folder is gone (removed by hand) starts again from 0.
    spent = timings.get(name, 0.0) if epath.Path(out).exists() else 0.0
    start = time.time()
    try:
      try:
        result = run(config, out)
      except workdir_lib.StaleInputs as e:
        if jax.process_index() == 0:
          print(
              f"{e}\n{name}: set aside as {_set_aside(out)}; running it "
              "again",
              flush=True,
          )
        if jax.process_count() > 1:
          multihost_utils.sync_global_devices(f"asl_vq: set aside {name}")
        spent, start = 0.0, time.time()  # the stage starts over.
        result = run(config, out)
    finally:  # also when stopped (SIGTERM) or failed: resumed, it adds on.
      timings[name] = round(spent + time.time() - start, 1)
      if jax.process_index() == 0:
        fileio.write_json(timings_path, timings)
    results.setdefault(row, {})[model] = result
  return {
      row: {m: r[m] for m in ("translate", "probe")}
      for row, r in results.items()
  }


ROW_NAMES = {
    "continuous": "Continuous",
    "rvq": "RVQ",
    "rvq+qdrop": "RVQ + QDrop",
    "rvq+ctc": "RVQ + CTC",
    "rvq+ctc+qdrop": "RVQ + CTC + QDrop",
}


def write_tables(
    workdir: str, results: dict[str, dict], data: str, budget: str = ""
) -> str:
  """`budget`: a line on the epochs and wall time the tables cost."""
  order = ["continuous"] + [
      r for r in ROW_NAMES if r in results and r != "continuous"
  ]
  t2 = tables.write_table(
      workdir,
      "table2",
      ["model", "normalised Levenshtein (test)"],
      [[ROW_NAMES[r], results[r]["translate"]["score"]] for r in order],
      f"Table 2 equivalent ({data} data): sign-to-text translation."
      + (f"\n\n{budget}" if budget else ""),
  )
  t5 = tables.write_table(
      workdir,
      "table5",
      ["model", "mean", "majority baseline", "balanced", *LETTERS],
      [
          [
              ROW_NAMES[r],
              results[r]["probe"]["accuracy"],
              results[r]["probe"].get("majority_accuracy", float("nan")),
              results[r]["probe"].get("balanced_accuracy", float("nan")),
              *(results[r]["probe"][f"accuracy_{c}"] for c in LETTERS),
          ]
          for r in order
      ],
      f"Table 5 equivalent ({data} data): probing accuracy per letter (one "
      "model, 26 sigmoid outputs), test part of the test split, beside the "
      "majority baseline (each letter's more frequent class, present or "
      "absent, always) and the balanced accuracy (mean of the true positive "
      "and true negative rates; 0.5 is chance).",
  )
  return t2 + "\n" + t5


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax's INFO lines drown the bars.
  compilation_cache.enable()
  data = data_config(FLAGS.preset)
  data.dir = FLAGS.data_dir
  epochs = {
      "tokenizer": FLAGS.tokenizer_epochs,
      "translate": FLAGS.translate_epochs,
      "probe": FLAGS.probe_epochs,
  }
  with provenance.recording(FLAGS.workdir):
    results = run_all(FLAGS.workdir, FLAGS.preset, FLAGS.rows, data, epochs)
  timings = fileio.read_json(os.path.join(FLAGS.workdir, "timings.json")) or {}
  stages = budget(FLAGS.preset, epochs)
  epochs_text = ", ".join(f"{k} {v}" for k, v in stages.items())
  print(
      write_tables(
          FLAGS.workdir,
          results,
          "real" if FLAGS.data_dir else "synthetic",
          f"Budget: preset {FLAGS.preset}, epochs: {epochs_text}; stage wall "
          f"times in timings.json, {sum(timings.values()) / 60:.1f} min in all.",
      )
  )


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
