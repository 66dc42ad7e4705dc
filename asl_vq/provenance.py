"""What made an output: the command of each start of a run (`command.txt`),
which the report uses to caption figures."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from typing import Iterator

from etils import epath
import jax

from asl_vq import fileio


def command_line(argv: list[str] | None = None) -> str:
  """This process's command as a user would type it (`python -m asl_vq.X`
  rather than the module file's path)."""
  argv = list(sys.argv if argv is None else argv)
  package = os.path.dirname(os.path.abspath(__file__))
  script = os.path.abspath(argv[0]) if argv else ""
  if script.startswith(package + os.sep) and script.endswith(".py"):
    module = os.path.relpath(script[:-3], os.path.dirname(package))
    module = module.replace(os.sep, ".").removesuffix(".__main__")
    return shlex.join(["python", "-m", module, *argv[1:]])
  return shlex.join(["python", *argv])


def record_command(workdir: str) -> None:
  """Appends the command to `<workdir>/command.txt` (one line per start, so
  a resumed run lists each), for the report's figure captions. `workdir`
  is local or an object store URL (`gs://bucket/run`)."""
  if jax.process_index() == 0:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    fileio.append_text(
        os.path.join(workdir, "command.txt"), command_line() + "\n"
    )


@contextlib.contextmanager
def recording(out: str) -> Iterator[None]:
  """`record_command(out)` for a command's block; if the block fails and
  `out` was made by it and holds only `command.txt`, `out` is removed: a
  failed command leaves no output folder of its own behind."""
  made = not epath.Path(out).exists()
  record_command(out)
  try:
    yield
  except BaseException:
    path = epath.Path(out)
    if (
        made
        and jax.process_index() == 0
        and path.exists()
        and [p.name for p in path.iterdir()] == ["command.txt"]
    ):
      path.rmtree()
    raise


def last_command(workdir: str) -> str | None:
  """The command of the run's last start (`command.txt`'s last line), the one
  that made its outputs as they are: an earlier start may have failed, or
  the run been resumed with other flags. None when nothing was recorded."""
  path = epath.Path(workdir) / "command.txt"
  if not path.exists():
    return None
  lines = [
      line.strip() for line in path.read_text().splitlines() if line.strip()
  ]
  return lines[-1] if lines else None
