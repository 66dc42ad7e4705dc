"""asl_vq: discrete tokens for ASL fingerspelling (JAX/Flax).

`asl_vq.Tokenizer` is imported on first use, so that `import asl_vq.data...`
(e.g. the synthetic generator) does not load JAX.
"""

__version__ = "0.1.0"


def __getattr__(name):
  if name == "Tokenizer":
    from asl_vq.inference import Tokenizer  # pylint: disable=g-import-not-at-top

    return Tokenizer
  raise AttributeError(f"module 'asl_vq' has no attribute {name!r}")
