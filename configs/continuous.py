"""The continuous baseline of Table 2: configs/seq2seq.py with `input=continuous`.

`get_config(arg)` takes the same size presets (`paper`, `cpu`, `tiny`).

  python -m asl_vq.main --config=configs/continuous.py:cpu \
      --workdir=runs/continuous
"""

import importlib.util
import os


def get_config(arg=None):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "seq2seq.py")
  spec = importlib.util.spec_from_file_location("asl_vq_seq2seq_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(",".join(filter(None, (arg, "input=continuous"))))
