"""Test-wide setup: 8 simulated CPU devices, and a private data cache."""

import os
import tempfile

# Before JAX is imported anywhere: the sharded code paths run on 8 devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("ASL_VQ_CACHE", tempfile.mkdtemp(prefix="asl_vq_test_"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The entry points' persistent compilation cache stays off in tests (their
# subprocesses included) but in its own test: one full run saw XLA:CPU's
# in-process all-reduce abort with it on (passed on rerun; cause not known).
os.environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "false")
