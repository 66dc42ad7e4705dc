"""The entry points' persistent compilation cache setting."""

import os
import subprocess
import sys

import jax
import pytest

from asl_vq import compilation_cache
from asl_vq.data import datasets


@pytest.fixture
def restore_jax_cache_config():
  keys = ("jax_compilation_cache_dir", "jax_compilation_cache_max_size")
  saved = {k: getattr(jax.config, k) for k in keys}
  yield
  for k, v in saved.items():
    jax.config.update(k, v)


def test_defaults_to_the_asl_vq_cache(restore_jax_cache_config):
  jax.config.update("jax_compilation_cache_dir", None)
  jax.config.update("jax_compilation_cache_max_size", -1)
  path = compilation_cache.enable()
  assert path == os.path.join(datasets.cache_root(), "jax")
  assert jax.config.jax_compilation_cache_dir == path
  assert (
      jax.config.jax_compilation_cache_max_size == compilation_cache.MAX_BYTES
  )


def test_keeps_a_directory_the_user_set(restore_jax_cache_config, tmp_path):
  jax.config.update("jax_compilation_cache_dir", str(tmp_path))
  jax.config.update("jax_compilation_cache_max_size", -1)
  assert compilation_cache.enable() == str(tmp_path)
  assert jax.config.jax_compilation_cache_max_size == -1


def test_a_compiled_program_lands_in_the_cache(tmp_path):
  # A fresh process: JAX sets its cache up once, at the first compilation.
  script = (
      "import jax, jax.numpy as jnp\n"
      "from asl_vq import compilation_cache\n"
      "compilation_cache.enable()\n"
      "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
      "jax.jit(lambda x: jnp.tanh(x @ x.T)).lower(jnp.ones((8, 8))).compile()\n"
  )
  env = dict(os.environ, ASL_VQ_CACHE=str(tmp_path))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  result = subprocess.run(
      [sys.executable, "-c", script],
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert result.returncode == 0, result.stderr
  assert "Error" not in result.stderr, result.stderr
  entries = os.listdir(tmp_path / "jax")
  assert any(e.endswith("-cache") for e in entries), entries
