"""Test-wide setup: 8 simulated CPU devices, and a private data cache."""

import os
import tempfile

# Before JAX is imported anywhere: the sharded code paths run on 8 devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("ASL_VQ_CACHE", tempfile.mkdtemp(prefix="asl_vq_test_"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Every test process and the entry points' subprocesses share one persistent
# compilation cache, under the session's $ASL_VQ_CACHE: the many tiny runs
# compile the same programs (the in-process all-reduce abort once seen with
# it on was XLA:CPU's 40 s rendezvous timeout under load, which
# asl_vq/__init__.py raises; not the cache).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.environ["ASL_VQ_CACHE"], "jax"))
