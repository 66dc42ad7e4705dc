"""A tiny trained tokenizer, trained once per test session and shared (by
every test process: the first makes it, under a file lock, the others wait
for it)."""

import os

import filelock

from asl_vq import config_lib
from asl_vq.tasks import tokenize
from asl_vq.tasks import tokenizer as tokenizer_task

# More sequences, a higher learning rate and no evaluation but the last: in
# ~90 steps, each added quantizer then reconstructs better (in 45, with only
# the first quantizer's commitment term reaching the encoder as in the
# reference, the fourth did not yet: MSE 0.3213 with 3, 0.3241 with 4).
EPOCHS, SEQUENCES, LEARNING_RATE = 6, 160, 3e-3

load_config = config_lib.load


def workdir() -> str:
  """The run's workdir under the session's private $ASL_VQ_CACHE."""
  out = os.path.join(os.environ["ASL_VQ_CACHE"], "tiny_tokenizer")
  with filelock.FileLock(out + ".lock"):
    if not os.path.exists(os.path.join(out, "test_metrics.json")):
      config = load_config("tokenizer", "tiny")
      config.data.synthetic.num_sequences = SEQUENCES
      config.train.num_epochs = EPOCHS
      config.train.learning_rate = LEARNING_RATE
      config.train.eval_every_epochs = EPOCHS
      config.train.checkpoint_every_steps = 10**6
      tokenizer_task.run(config, out)
  return out


def tokens_dir() -> str:
  """The tiny tokenizer's splits tokenized (once per session), next to it."""
  run_dir = workdir()
  out = os.path.join(os.environ["ASL_VQ_CACHE"], "tiny_tokens")
  config = load_config("tokenize", "")
  config.checkpoint = run_dir
  config.batch_size = 16
  with filelock.FileLock(out + ".lock"):
    tokenize.run(config, out)  # Skips the splits already made.
  return out
