"""Text to signing: the MusicGen-style LM over a tokenized dataset.

`get_config(arg)`; `arg` is a comma-separated list of
  * a size preset: `paper` (default), `cpu` (about 10 minutes on a 2-core
    CPU, on the tokens of the cpu tokenizer) or `tiny` (seconds; for tests);
  * optionally `pattern=parallel` (default: MusicGen's parallel pattern, the
    paper's) or `pattern=delay` (stream k shifted by k steps).

  python -m asl_vq.main --config=configs/lm.py:cpu \
      --config.tokens=runs/tokens_rvq_ctc --workdir=runs/lm_rvq_ctc

The paper gives no LM sizes: `paper` is our choice, a small decoder.
"""

import ml_collections

from asl_vq import config_lib

PATTERNS = ("parallel", "delay")


def _parse(arg):
  size, pattern = "paper", "parallel"
  for token in filter(None, (arg or "").split(",")):
    if token.startswith("pattern="):
      pattern = token[len("pattern="):]
    else:
      size = token
  if size not in ("paper", "cpu", "tiny"):
    raise ValueError(f"unknown size preset {size!r}: paper, cpu or tiny")
  if pattern not in PATTERNS:
    raise ValueError(f"unknown pattern {pattern!r}: {', '.join(PATTERNS)}")
  return size, pattern


def get_config(arg=None):
  size, pattern = _parse(arg)
  config = ml_collections.ConfigDict()
  config.task = "lm"
  config.preset = size
  config.seed = 0
  config.tokens = ""        # configs/tokenize.py output (required).

  # The tokenizer's data block: the lengths must match the tokenized files;
  # data.max_len also caps the length of generated sequences.
  config.data = config_lib.load("rvq_ctc", size).data
  config.data.flip_prob = 0.0

  config.model = model = ml_collections.ConfigDict()
  model.num_quantizers = 4      # both adopted from the tokenized files.
  model.codebook_size = 1024
  model.pattern = pattern
  model.dim = 256
  model.num_heads = 4
  model.num_layers = 8
  model.num_text_layers = 2
  model.text_dim = 64           # character embeddings, projected to dim.
  model.mlp_dim = 1024
  model.dropout = 0.1

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 32
  train.eval_batch_size = 64
  train.num_epochs = 100
  train.learning_rate = 1e-3
  train.warmup_steps = 500
  train.grad_clip = 4.0
  train.weight_decay = 0.0
  train.log_every_steps = 50
  train.checkpoint_every_steps = 500
  train.keep_checkpoints = 2
  train.eval_every_epochs = 1
  train.max_eval_batches = -1

  if size == "cpu":
    # ~1 s a step on a shared 2-core CPU (the 4 x 1027-way heads cost as
    # much as the 3 layers): ~600 steps of small batches in ~11 minutes.
    model.dim = 128
    model.num_layers = 3
    model.num_text_layers = 1
    model.mlp_dim = 256
    train.batch_size = 16
    train.num_epochs = 4
    train.learning_rate = 2e-3
    train.warmup_steps = 50
    train.log_every_steps = 10
    train.checkpoint_every_steps = 100
    train.eval_every_epochs = 2
  elif size == "tiny":
    model.codebook_size = 32
    model.dim = 16
    model.num_heads = 2
    model.num_layers = 1
    model.num_text_layers = 1
    model.text_dim = 8
    model.mlp_dim = 32
    train.batch_size = 8
    train.eval_batch_size = 8
    train.num_epochs = 2
    train.warmup_steps = 2
    train.log_every_steps = 2
    train.checkpoint_every_steps = 3
  return config
