"""SIGTERM or Ctrl-C during training: stop at the next step, save, exit.

`asl_vq.train.fit` installs a `Preemption` for the run and calls `check`
after every step and before every evaluation batch: the one place a run
stops. A stopped run raises `Preempted`, which its caller sees too (so that
`asl_vq.experiments.paper_tables` does not go on from a part-trained stage).
"""

from __future__ import annotations

import signal
import time

import jax
from jax.experimental import multihost_utils

from asl_vq import cli


class Preempted(cli.Stopped):
  """A SIGTERM (or Ctrl-C) asked the run to stop; raised by
  `Preemption.check`, and by `fit` once the step is saved. A command then
  exits 0 (130 after Ctrl-C: `cli.run`)."""


class Preemption:
  """SIGTERM or Ctrl-C -> `check` raises `Preempted` (multi-host: JAX's
  preemption sync point, SIGTERM only).

  One process: the handler only sets a flag, which `check` reads after
  every training step and before every evaluation batch, so the run saves
  within one step (or one evaluation batch) plus one checkpoint write. A
  second Ctrl-C stops at once (KeyboardInterrupt; the steps since the last
  save are lost). Several processes: JAX's preemption sync point, read
  after every step (an evaluation in progress finishes first: the processes
  must agree on the step). A context manager: leaving it gives the signals
  back to the handlers they had before.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested, self.since, self.signal = False, None, "SIGTERM"
    self._previous = {}

  def __enter__(self) -> "Preemption":
    if jax.process_count() == 1:
      self._previous = {
          s: signal.signal(s, self._handler) for s in self.SIGNALS
      }
    return self

  def __exit__(self, *exc) -> None:
    for s, previous in self._previous.items():
      signal.signal(s, previous)
    self._previous = {}

  def _handler(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now.
    self.requested, self.since = True, time.monotonic()
    self.signal = signal.Signals(signum).name

  def check(self, step: int | None = None) -> None:
    """Raises `Preempted` once a stop was asked for. `step`: the training
    step just done (several processes agree on it through JAX's sync
    point; None, within an evaluation, reads this process's flag only).

    Raises:
      Preempted: a SIGTERM or Ctrl-C arrived.
    """
    if step is not None and jax.process_count() > 1:
      stop = multihost_utils.reached_preemption_sync_point(step)
    else:
      stop = self.requested
    if stop:
      raise Preempted()

  def save(self, workdir, step, state, ckpts, data_iter, say) -> Preempted:
    """Within the notice: `state` at `step` with the data iterator's
    position, waiting for the write, unless `ckpts` (a
    `checkpointing.Checkpoints`) holds it already (a stop while the resumed
    step or the test split was evaluated); `say` gets one line. Returns the
    `Preempted` for the caller to raise, naming `workdir`."""
    resume = "run the same command to resume"
    if ckpts.latest_step() == step:
      say(f"preempted at step {step}, which is saved; {resume}")
    else:
      saving = time.monotonic()
      ckpts.save_latest(step, state, data_iter, wait=True)
      say(
          f"preempted: saved step {step} in {time.monotonic() - saving:.1f} "
          f"s{self._since_signal()}; {resume}"
      )
    return Preempted(
        f"{workdir}: preempted; {resume}", exit_code=self.exit_code
    )

  @property
  def exit_code(self) -> int:
    """The command's exit code once stopped: 130 after Ctrl-C, else 0."""
    return 130 if self.signal == "SIGINT" else 0

  def _since_signal(self) -> str:
    """', 2.1 s after SIGTERM' (how long ago the signal came), or ''."""
    if self.since is None:
      return ""
    return f", {time.monotonic() - self.since:.1f} s after {self.signal}"
