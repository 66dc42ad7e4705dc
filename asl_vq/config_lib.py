"""`configs/*.py` are files (for `--config=`), not modules: load them by name.

Used by the downstream configs (which share the tokenizer's data block) and by
`asl_vq.experiments.table2`.
"""

import importlib.util
import os

import ml_collections

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs")


def load(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`configs/<name>.py`'s `get_config(arg)`."""
  spec = importlib.util.spec_from_file_location(
      f"asl_vq_config_{name}", os.path.join(CONFIGS_DIR, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)
