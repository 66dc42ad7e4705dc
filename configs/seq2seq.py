"""Sign-to-text translation (the paper's Table 2), from tokens or keypoints.

`get_config(arg)`; `arg` is a comma-separated list of
  * a size preset: `paper` (default), `cpu` (minutes on a 2-core CPU, on the
    embedded synthetic dataset) or `tiny` (seconds; for tests);
  * optionally `input=tokens` (default: the 4 code streams of a tokenized
    dataset, `--config.tokens=DIR` from configs/tokenize.py) or
    `input=continuous` (the continuous baseline: a Squeezeformer over the 42
    (x, y) keypoints; configs/continuous.py is this).

  python -m asl_vq.main --config=configs/seq2seq.py:cpu \
      --config.tokens=runs/tokens_rvq_ctc --workdir=runs/seq2seq_rvq_ctc
"""

import ml_collections

from asl_vq import config_lib

INPUTS = ("tokens", "continuous")


def _parse(arg):
  size, inputs = "paper", "tokens"
  for token in filter(None, (arg or "").split(",")):
    if token.startswith("input="):
      inputs = token[len("input="):]
    else:
      size = token
  if size not in ("paper", "cpu", "tiny"):
    raise ValueError(f"unknown size preset {size!r}: paper, cpu or tiny")
  if inputs not in INPUTS:
    raise ValueError(f"unknown input {inputs!r}: {', '.join(INPUTS)}")
  return size, inputs


def get_config(arg=None):
  size, inputs = _parse(arg)
  config = ml_collections.ConfigDict()
  config.task = "seq2seq"
  config.preset = size
  config.seed = 0
  config.tokens = ""        # configs/tokenize.py output (input=tokens).

  # The splits: those of the tokenized dataset (input=tokens) or, for the
  # continuous baseline, the same data and signer split as the tokenizer's.
  # The tokenizer's data block: the same dataset, signer split and lengths
  # (for input=tokens they must match the tokenized files).
  config.data = config_lib.load("rvq_ctc", size).data
  config.data.flip_prob = 0.25 if inputs == "continuous" else 0.0

  config.model = model = ml_collections.ConfigDict()
  model.encoder = inputs
  model.num_quantizers = 4
  model.codebook_size = 1024
  model.dim = 128
  model.num_heads = 4
  model.num_encoder_layers = 4
  model.num_decoder_layers = 4
  model.mlp_dim = 512
  model.dropout = 0.1
  model.num_blocks = 6          # continuous encoder: Squeezeformer blocks.
  model.kernel_size = 51

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 64
  train.eval_batch_size = 64
  train.num_epochs = 60
  train.learning_rate = 1e-3
  train.warmup_steps = 500
  train.grad_clip = 4.0
  train.weight_decay = 0.0
  train.label_smoothing = 0.1
  train.log_every_steps = 50
  train.checkpoint_every_steps = 500
  train.keep_checkpoints = 2
  train.eval_every_epochs = 1
  train.max_eval_batches = -1

  if size == "cpu":
    model.num_encoder_layers = 2
    model.num_decoder_layers = 2
    model.num_blocks = 3
    model.kernel_size = 31
    train.batch_size = 32
    train.num_epochs = 8
    train.warmup_steps = 100
    train.log_every_steps = 10
    train.checkpoint_every_steps = 100
  elif size == "tiny":
    model.codebook_size = 32
    model.dim = 16
    model.num_heads = 2
    model.num_encoder_layers = 1
    model.num_decoder_layers = 1
    model.mlp_dim = 32
    model.num_blocks = 1
    model.kernel_size = 5
    train.batch_size = 8
    train.eval_batch_size = 8
    train.num_epochs = 2
    train.warmup_steps = 2
    train.log_every_steps = 2
    train.checkpoint_every_steps = 3
  return config
