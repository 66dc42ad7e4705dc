"""The continuous baseline of Table 2: configs/translate.py with `input=continuous`.

`get_config(arg)` takes the same size presets (`paper`, `cpu`, `tiny`).

  python -m asl_vq.main --config=configs/continuous.py:cpu \
      --workdir=runs/continuous
"""

from asl_vq import config_lib


def get_config(arg=None):
  return config_lib.load(
      "translate", ",".join(filter(None, (arg, "input=continuous")))
  )
