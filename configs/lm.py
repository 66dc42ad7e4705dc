"""Text to signing: the MusicGen-style LM over a tokenized dataset.

`get_config(arg)`; `arg` is a comma-separated list of
  * a size preset: `paper` (default), `cpu` (about 10 minutes on a 2-core
    CPU, on the tokens of the cpu tokenizer) or `tiny` (seconds; for tests);
  * optionally `pattern=parallel` (default: MusicGen's parallel pattern, the
    paper's) or `pattern=delay` (stream k shifted by k steps).

  python -m asl_vq.main --config=configs/lm.py:cpu \
      --config.tokens=runs/tokens_rvq_ctc --workdir=runs/lm_rvq_ctc

The paper gives no LM sizes: `paper` is our choice, a small decoder. The
data block is the tokenizer's: its lengths must match the tokenized files,
and data.max_len caps the length of generated sequences.
"""

from asl_vq import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, pattern=("parallel", "delay"))
  size = args["size"]
  config = config_lib.downstream_config("lm", size)
  # The code streams' sizes are the tokens' (read from config.tokens).
  config.model = config_lib.model_config(
      size,
      pattern=args["pattern"],
      dim=256,
      num_heads=4,
      num_layers=8,
      num_text_layers=2,
      text_dim=64,  # character embeddings, projected to dim.
      mlp_dim=1024,
      dropout=0.1,
      # ~1 s a step on a shared 2-core CPU (the 4 x 1027-way heads cost as
      # much as the 3 layers): ~600 steps of small batches in ~11 minutes.
      cpu=dict(dim=128, num_layers=3, num_text_layers=1, mlp_dim=256),
      tiny=dict(num_layers=1, num_text_layers=1, text_dim=8),
  )
  # The paper's optimiser: AdamW at 3e-4 (the tokenizer's is schedule-free),
  # with PyTorch's default weight decay 0.01 (the paper gives none).
  config.train = config_lib.train_config(
      size,
      cpu=dict(
          batch_size=16, num_epochs=4, warmup_steps=50, eval_every_epochs=2
      ),
      optimizer="adamw",
      learning_rate=3e-4,
      weight_decay=0.01,
      batch_size=32,
  )
  return config
