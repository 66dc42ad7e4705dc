"""Sign-to-text translation (the paper's Table 2), from tokens or keypoints.

`get_config(arg)`; `arg` is a comma-separated list of
  * a size preset: `paper` (default), `cpu` (minutes on a 2-core CPU, on the
    embedded synthetic dataset) or `tiny` (seconds; for tests);
  * optionally `input=tokens` (default: the 4 code streams of a tokenized
    dataset, `--config.tokens=DIR` from configs/tokenize.py) or
    `input=continuous` (the continuous baseline: a Squeezeformer over the 42
    (x, y) keypoints; configs/continuous.py is this).

  python -m asl_vq.main --config=configs/translate.py:cpu \
      --config.tokens=runs/tokens_rvq_ctc --workdir=runs/translate_rvq_ctc
"""

from asl_vq import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, input=("tokens", "continuous"))
  size, inputs = args["size"], args["input"]
  config = config_lib.downstream_config("translate", size, inputs)
  # The code streams' sizes are the tokens' (read from config.tokens).
  config.model = config_lib.downstream_model(
      size,
      inputs,
      dim=128,
      num_heads=4,
      num_encoder_layers=4,
      num_decoder_layers=4,
      mlp_dim=512,
      dropout=0.1,
      cpu=dict(num_encoder_layers=2, num_decoder_layers=2),
      tiny=dict(num_encoder_layers=1, num_decoder_layers=1),
  )
  config.train = config_lib.train_config(
      size,
      cpu=dict(batch_size=32, num_epochs=8, warmup_steps=100),
      batch_size=64,
      num_epochs=60,
  )
  config.train.label_smoothing = 0.1
  return config
