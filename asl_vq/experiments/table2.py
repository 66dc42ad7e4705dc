r"""The paper's Table 2 (translation) and Table 5 (probing) as one command.

  python -m asl_vq.experiments.table2 --workdir=runs/table2 --preset=cpu

For each tokenizer row of the ablation it trains the tokenizer, tokenizes
every split, trains the translator on the tokens and the letter probe inside
the test split; then the continuous baseline of both. Every stage is a
sub-workdir that resumes (a finished stage is skipped), so the command can be
killed and run again. It writes `table2.md`/`.csv` (normalised Levenshtein on
test) and `table5.md`/`.csv` (probing accuracy per letter and mean) into
`--workdir`. With no `--data_dir` the embedded synthetic dataset is used and
the tables say so.
"""

from __future__ import annotations

import csv
import json
import os
import string
from typing import Sequence

import ml_collections
from absl import app
from absl import flags
from absl import logging

from asl_vq import config_lib
from asl_vq import probe
from asl_vq import tokenize
from asl_vq import train
from asl_vq import translate

FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a program, so importing the module defines no flags."""
  flags.DEFINE_string("workdir", None, "Where the runs and tables go.")
  flags.DEFINE_enum("preset", "cpu", ["paper", "cpu", "tiny"],
                    "Size preset of every config.")
  flags.DEFINE_list("rows", ["rvq", "rvq+qdrop", "rvq+ctc", "rvq+ctc+qdrop"],
                    "Tokenizer ablation rows.")
  flags.DEFINE_string("data_dir", "", "A Kaggle-layout dataset ('' = the "
                      "embedded synthetic one).")
  flags.DEFINE_integer("tokenizer_epochs", None,
                       "Override the tokenizer's epochs (the budget knob).")
  flags.DEFINE_integer("downstream_epochs", None,
                       "Override the translators' and probes' epochs.")
  flags.mark_flags_as_required(["workdir"])

LETTERS = string.ascii_lowercase


def _done(workdir: str, name: str = "test_metrics.json") -> dict | None:
  path = os.path.join(workdir, name)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def _with(config, data, epochs: int | None):
  """The shared data block (same dataset, signer split and lengths as the
  tokenizers') and the epoch budget."""
  flip_prob = config.data.flip_prob
  config.data = ml_collections.ConfigDict(data.to_dict())
  config.data.flip_prob = flip_prob
  if epochs is not None:
    config.train.num_epochs = epochs
  return config


def run_all(workdir: str, preset: str, rows: Sequence[str],
            data: ml_collections.ConfigDict | None = None,
            tokenizer_epochs: int | None = None,
            downstream_epochs: int | None = None) -> dict[str, dict]:
  """Runs (or resumes) every stage; returns {row: {model: test metrics}}.

  `data`: the data block of every config (default: configs/rvq_ctc.py's for
  `preset`).
  """
  data = data or config_lib.load("rvq_ctc", preset).data
  sub = lambda name: os.path.join(workdir, name.replace("+", "_"))
  stages = [(row, sub(f"tokens_{row}")) for row in rows]
  stages.append(("continuous", None))
  results = {}
  for row, tokens_dir in stages:
    if tokens_dir is not None:
      tok_dir = sub(f"tokenizer_{row}")
      if _done(tok_dir) is None:
        train.run(_with(config_lib.load("rvq_ctc", f"{preset},row={row}"), data,
                        tokenizer_epochs), tok_dir)
      config = config_lib.load("tokenize", "")
      config.checkpoint = tok_dir
      tokenize.run(config, tokens_dir)   # skips the splits already written.
    inputs = "continuous" if tokens_dir is None else "tokens"
    results[row] = {}
    for name, module in (("seq2seq", translate), ("probe", probe)):
      out = sub(f"{name}_{row}")
      if _done(out) is None:
        config = _with(config_lib.load(name, f"{preset},input={inputs}"), data,
                       downstream_epochs)
        config.tokens = tokens_dir or ""
        module.run(config, out)
      results[row][name] = _done(out)
  return results


def _write(workdir: str, name: str, header: Sequence[str],
           rows: Sequence[Sequence[object]], note: str) -> str:
  with open(os.path.join(workdir, f"{name}.csv"), "w", newline="") as f:
    csv.writer(f).writerows([header, *rows])
  fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
  lines = [note, "", "| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, f"{name}.md"), "w") as f:
    f.write(text)
  return text


ROW_NAMES = {"continuous": "Continuous", "rvq": "RVQ",
             "rvq+qdrop": "RVQ + QDrop", "rvq+ctc": "RVQ + CTC",
             "rvq+ctc+qdrop": "RVQ + CTC + QDrop"}


def write_tables(workdir: str, results: dict[str, dict], data: str) -> str:
  order = ["continuous"] + [r for r in ROW_NAMES if r in results and
                            r != "continuous"]
  t2 = _write(workdir, "table2", ["model", "normalised Levenshtein (test)"],
              [[ROW_NAMES[r], results[r]["seq2seq"]["score"]] for r in order],
              f"Table 2 equivalent ({data} data): sign-to-text translation.")
  t5 = _write(workdir, "table5", ["model", "mean", *LETTERS],
              [[ROW_NAMES[r], results[r]["probe"]["accuracy"],
                *(results[r]["probe"][f"accuracy_{c}"] for c in LETTERS)]
               for r in order],
              f"Table 5 equivalent ({data} data): probing accuracy per "
              "letter (one model, 26 sigmoid outputs), test part of the "
              "test split.")
  return t2 + "\n" + t5


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # Orbax's INFO lines drown the bars.
  os.makedirs(FLAGS.workdir, exist_ok=True)
  data = config_lib.load("rvq_ctc", FLAGS.preset).data
  data.dir = FLAGS.data_dir
  results = run_all(FLAGS.workdir, FLAGS.preset, FLAGS.rows, data,
                    FLAGS.tokenizer_epochs, FLAGS.downstream_epochs)
  print(write_tables(FLAGS.workdir, results,
                     "real" if FLAGS.data_dir else "synthetic"))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
