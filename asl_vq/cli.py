"""How every command starts and ends: on bad input one line `error: ...`
that names the file, sequence or setting and the fix, exit status 1, and no
traceback (`--verbosity=0` shows it); the flags of the commands that load
one tokenizer, defined once."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging

from asl_vq import errors
from asl_vq import runtime

# What bad data, settings and paths raise (`errors.UserError`: every check
# of the project's, `reader.DataError`, `workdir.StaleInputs` ...; a path that
# cannot be read or written: OSError; a diverged run: FloatingPointError; a
# missing optional extra: `errors.MissingExtra`). Anything else is a bug,
# ValueError and ImportError included: a traceback.
# The flags this module defines for a command (`define_tokenizer_flags`)
# are that command's key flags, listed by its --help.
flags.disclaim_key_flags()

USER_ERRORS = (
    errors.UserError,
    errors.MissingExtra,
    OSError,
    FloatingPointError,
)


class Stopped(Exception):
  """A command stopped on request with its work saved and said so: `run`
  exits with `exit_code` and prints nothing more: 0 for a preemption notice
  (SIGTERM), 130 for Ctrl-C, so that `train && next` does not go on."""

  def __init__(self, *args, exit_code: int = 0):
    super().__init__(*args)
    self.exit_code = exit_code


def one_line(error: BaseException) -> str:
  """The error's message on one line."""
  return " ".join(str(error).split()) or type(error).__name__


def start(argv: Sequence[str]) -> None:
  """The first lines of a command that loads a model: no arguments but
  flags (`app.UsageError` names the others), absl's INFO lines (Orbax's)
  hidden unless `--verbosity` is given, and JAX's persistent compilation
  cache on (`compilation_cache.enable`)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax's INFO lines.
  # Imported here: JAX and the data modules are slow to import, and the
  # commands that load no model import this module too.
  from asl_vq import compilation_cache  # pylint: disable=g-import-not-at-top

  compilation_cache.enable()


def define_tokenizer_flags() -> None:
  """`--tokenizer` (required) and `--which`, the flags of the commands that
  load one trained tokenizer by `--tokenizer`:
  `inference.Tokenizer.load(FLAGS.tokenizer, FLAGS.which)`."""
  flags.DEFINE_string("tokenizer", None, "The tokenizer's training workdir.")
  flags.DEFINE_enum("which", "best", ["best", "latest"], "Its checkpoint.")
  flags.mark_flag_as_required("tokenizer")


def run(main: Callable[[Sequence[str]], None], flags_parser=None) -> None:
  """`absl.app.run(main)` after `runtime.setup()`, with `USER_ERRORS`
  ending in one line."""
  runtime.setup()

  def guarded(argv):
    try:
      main(argv)
    except Stopped as e:
      sys.exit(e.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C during training, or any.
      print("interrupted", file=sys.stderr)
      sys.exit(130)
    except USER_ERRORS as e:
      if (
          flags.FLAGS["verbosity"].present
          and logging.get_verbosity() >= logging.INFO
      ):
        raise  # asked for: --verbosity=0 or more.
      sys.exit(f"error: {one_line(e)}")

  if flags_parser is None:
    app.run(guarded)
  else:
    app.run(guarded, flags_parser=flags_parser)
