r"""Entry point: `python -m asl_vq.main --config=configs/tokenizer.py --workdir=DIR`.

`--config` takes a config file (`configs/tokenizer.py:cpu` in a checkout) or a
packaged config by name (`tokenizer:cpu`, from anywhere), then overrides
(`--config.train.batch_size=64`).

Runs the task the config names on every device of every host. On a multi-host
slice or cluster pass `--distributed` (TPU VMs and SLURM are auto-detected by
`jax.distributed.initialize`), or the explicit coordinator flags.
"""

import importlib
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from asl_vq import cli
from asl_vq import compilation_cache
from asl_vq import config_lib
from asl_vq import fileio
from asl_vq import runtime
from asl_vq import workdir
from asl_vq.tasks import TASKS

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "workdir",
    None,
    "Directory for checkpoints and metrics " "(local or gs://...).",
)
config_flags.DEFINE_config_file(
    "config",
    None,
    "A config file (configs/tokenizer.py[:arg]) or a packaged "
    "config's name (tokenizer[:arg]).",
    lock_config=True,
)
flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host runs)."
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Number of processes.")
flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def _initialize_distributed():
  if FLAGS.coordinator_address:
    # CPU processes (tests, laptops) need gloo for cross-process collectives.
    runtime.default_cpu_threads_for_gloo()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )
  elif FLAGS.distributed:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax's INFO lines drown the bar.
  _initialize_distributed()
  compilation_cache.enable()
  logging.info(
      "JAX process %d / %d, %d local / %d global devices (%s)",
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
      jax.devices()[0].device_kind,
  )
  config = FLAGS.config
  config.task = config_lib.task_name(config.task)  # e.g. an old config file.
  if config.task not in TASKS:
    raise app.UsageError(f"unknown task {config.task!r}: {', '.join(TASKS)}")
  # A workdir of another run is refused before any data is made or loaded
  # (the task checks the inputs too, once it has them).
  workdir.check_config(config, fileio.abspath(FLAGS.workdir))
  importlib.import_module(f"asl_vq.tasks.{config.task}").run(
      config, FLAGS.workdir
  )
  if jax.process_count() > 1:
    # Leave together: the coordinator (process 0) must not go first.
    jax.distributed.shutdown()


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with `--config=NAME[:arg]` resolved to its file first."""
  argv = list(argv)
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      argv[i] = "--config=" + _resolve(a[len("--config=") :])
    elif a == "--config" and i + 1 < len(argv):
      argv[i + 1] = _resolve(argv[i + 1])
  try:
    return FLAGS(argv)
  except AttributeError as e:  # ml_collections: an override of no field.
    # Its message: a KeyError's, "'name'" and, for a near miss, a line
    # 'Did you mean "names" instead of "name"?'.
    inner = e.args[0] if e.args else e
    lines = [
        l.strip()
        for l in str(
            inner.args[0]
            if isinstance(inner, KeyError) and inner.args
            else inner
        ).splitlines()
        if l.strip()
    ]
    name = lines[0].strip("\"'") if lines else "?"
    hint = next((l for l in lines[1:] if l.startswith("Did you mean")), None)
    given = [
        a
        for a in argv
        if a.startswith("--config.") and f".{name}" in a.split("=")[0]
    ]
    sys.exit(
        f"error: {given[0] if given else name}: the config has no "
        f"field {name!r}; " + (hint or "see the config file for its " "fields")
    )
  except flags.Error as e:
    # One line: a config's own error (e.g. an unknown preset) arrives as the
    # last line of a traceback that config_flags formats into the message.
    last = [l for l in str(e).splitlines() if l.strip()][-1]
    sys.exit(
        f"error: {last.strip()}\n"
        "Pass --helpshort or --helpfull to see help on flags."
    )


def _resolve(spec: str) -> str:
  try:
    return config_lib.resolve(spec)
  except ValueError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  cli.run(main, flags_parser=_parse_flags)
