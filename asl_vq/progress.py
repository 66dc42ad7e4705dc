"""A progress bar with steps/s, ETA and loss (process 0 only)."""

from __future__ import annotations

import sys

import jax
from tqdm import tqdm


class Progress:

  def __init__(self, total: int, start: int = 0):
    self._bar = None
    if jax.process_index() == 0:
      self._bar = tqdm(
          total=total,
          initial=start,
          unit="step",
          dynamic_ncols=True,
          file=sys.stderr,
          mininterval=1.0,
          smoothing=0.1,
      )

  def update(self, step: int, loss: float | None = None) -> None:
    """Advances to `step` (every step: steps/s and ETA from the first ones);
    `loss` at log points (a host value the caller already has)."""
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      if loss is not None:
        self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

  def message(self, text: str) -> None:
    if self._bar is not None:
      self._bar.write(text)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
