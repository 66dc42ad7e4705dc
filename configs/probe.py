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

# Signer split of the test split: the probe's own train / validation / test
# (the accuracy reported is on its test part). The cpu preset's test split
# has 8 signers: 4 / 1 / 3.
_FRACTIONS = dict(
    paper=(0.6, 0.2, 0.2), cpu=(0.5, 0.125, 0.375), tiny=(0.5, 0.25, 0.25)
)


def get_config(arg=None):
  args = config_lib.parse_arg(arg, input=("tokens", "continuous"))
  size, inputs = args["size"], args["input"]
  config = config_lib.downstream_config("probe", size, inputs)
  config.init_from_codebooks = True
  config.probe_fractions = ml_collections.ConfigDict(
      dict(zip(("train", "validation", "test"), _FRACTIONS[size]))
  )
  # The code streams' sizes are the tokens' (read from config.tokens).
  config.model = config_lib.downstream_model(
      size,
      inputs,
      dim=128,
      num_heads=8,
      num_layers=6,
      mlp_dim=512,
      dropout=0.1,
      cpu=dict(num_layers=2),
      tiny=dict(num_layers=1),
  )
  config.train = config_lib.train_config(
      size,
      cpu=dict(batch_size=16, num_epochs=15, warmup_steps=50),
      batch_size=32,
      num_epochs=40,
      warmup_steps=200,
      log_every_steps=20,
  )
  return config
