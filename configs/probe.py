"""The probing study (the paper's Table 5): which letters occur in the phrase?

Trained and evaluated inside the tokenizer's test split (phrases and signers
it never saw), split again by signer. `get_config(arg)`; `arg` is a
comma-separated list of a size preset (`paper` default, `cpu`, `tiny`) and
optionally `input=tokens` (default; `--config.tokens=DIR` from
configs/tokenize.py, stream embeddings initialised from that tokenizer's
codebooks) or `input=continuous` (Squeezeformer encoder over the keypoints).

  python -m asl_vq.main --config=configs/probe.py:cpu \
      --config.tokens=runs/tokens_rvq_ctc --workdir=runs/probe_rvq_ctc
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
  config.task = "probe"
  config.preset = size
  config.seed = 0
  config.tokens = ""          # configs/tokenize.py output (input=tokens).
  config.init_from_codebooks = True
  # Signer split of the test split: the probe's own train / validation /
  # test (the accuracy reported is on its test part).
  config.probe_fractions = ml_collections.ConfigDict(
      dict(train=0.6, validation=0.2, test=0.2))

  # The tokenizer's data block: the same dataset, signer split and lengths
  # (for input=tokens they must match the tokenized files).
  config.data = config_lib.load("rvq_ctc", size).data
  config.data.flip_prob = 0.25 if inputs == "continuous" else 0.0

  config.model = model = ml_collections.ConfigDict()
  model.encoder = inputs
  model.num_quantizers = 4
  model.codebook_size = 1024
  model.dim = 128
  model.num_heads = 8
  model.num_layers = 6
  model.mlp_dim = 512
  model.dropout = 0.1
  model.num_blocks = 6          # continuous encoder: Squeezeformer blocks.
  model.kernel_size = 51

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 32
  train.eval_batch_size = 64
  train.num_epochs = 40
  train.learning_rate = 1e-3
  train.warmup_steps = 200
  train.grad_clip = 4.0
  train.weight_decay = 0.0
  train.log_every_steps = 20
  train.checkpoint_every_steps = 500
  train.keep_checkpoints = 2
  train.eval_every_epochs = 1
  train.max_eval_batches = -1

  if size == "cpu":
    # The cpu preset's test split has 8 signers: 4 / 1 / 3 here.
    config.probe_fractions = ml_collections.ConfigDict(
        dict(train=0.5, validation=0.125, test=0.375))
    model.num_layers = 2
    model.num_blocks = 3
    model.kernel_size = 31
    train.batch_size = 16
    train.num_epochs = 15
    train.warmup_steps = 50
    train.log_every_steps = 10
    train.checkpoint_every_steps = 100
  elif size == "tiny":
    config.probe_fractions = ml_collections.ConfigDict(
        dict(train=0.5, validation=0.25, test=0.25))
    model.codebook_size = 32
    model.dim = 16
    model.num_heads = 2
    model.num_layers = 1
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
