"""JAX's persistent compilation cache, on by default for the entry points.

A resumed run, a rerun, the four token translators of
`asl_vq.experiments.paper_tables` (one program, four datasets) and the tokenize
runs of its four tokenizers would otherwise compile the same XLA programs
again: tens of seconds each on a CPU, minutes on a TPU pod.
"""

import os

import jax

from asl_vq.data import datasets

MAX_BYTES = 4 << 30  # least recently used entries go beyond this.


def enable() -> str:
  """Caches compiled programs under `<ASL_VQ_CACHE>/jax` (default
  ~/.cache/asl_vq/jax) unless a directory is already set (e.g. by
  JAX_COMPILATION_CACHE_DIR); returns the directory."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update(
        "jax_compilation_cache_dir", os.path.join(datasets.cache_root(), "jax")
    )
    if jax.config.jax_compilation_cache_max_size < 0:
      jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return jax.config.jax_compilation_cache_dir
