"""What the project raises for a user's bad input, and nothing else.

A command (`asl_vq.cli.run`) ends on a `UserError` (bad data, settings,
paths, codes: the message names the file, sequence or setting and the fix),
a `MissingExtra`, an `OSError` (a path that cannot be read or written) or
the `FloatingPointError` of a diverged run with one line and exit status 1.
Any other exception is a bug, in this project or one it uses, and keeps its
traceback: a shape mismatch after a model edit, an ImportError of a typo.
"""

from __future__ import annotations


class UserError(ValueError):
  """Bad input: data, a setting, a path or codes the user gave. A
  ValueError, so that callers catching ValueError still do."""


class MissingExtra(ModuleNotFoundError):
  """An optional extra is not installed; the message names the pip install
  that adds it."""
