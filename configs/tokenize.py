"""Tokenize every split with a trained tokenizer (`asl_vq.tasks.tokenize`).

The splits are the tokenizer run's own (its saved data config), so train /
validation / test hold the same signers it was trained and selected on.

  python -m asl_vq.main --config=configs/tokenize.py \
      --config.checkpoint=runs/rvq_ctc --workdir=runs/rvq_ctc_tokens
"""

import ml_collections


def get_config(arg=None):
  del arg  # No presets.
  config = ml_collections.ConfigDict()
  config.task = "tokenize"
  config.checkpoint = ""  # the tokenizer's training workdir (required).
  config.data = ml_collections.ConfigDict()
  config.data.dir = ""  # "" = the tokenizer run's data.dir.
  config.data.cache_dir = ""  # "" = the tokenizer run's data.cache_dir.
  config.batch_size = 64  # sequences per device batch (a multiple of the
  # local device count).
  config.part_batches = 16  # a resumable part every this many batches.
  config.verify = False  # re-decode the stored codes and compare.
  return config
