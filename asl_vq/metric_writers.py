"""Metrics a person can plot: JSONL and TensorBoard event files (the PNG
learning curves are `plotting.plot_learning_curves`'s)."""

from __future__ import annotations

import json
import os
from typing import Mapping

from etils import epath
import jax

from asl_vq import fileio


class MetricWriter:
  """Writes scalars from process 0 only; other processes are silent.

  `workdir` is local or a `gs://` URL (tensorboardX writes its event files
  there itself, through google-cloud-storage).
  """

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.active:
      epath.Path(workdir).mkdir(parents=True, exist_ok=True)
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    if not self.active:
      return
    row = {"step": int(step), "split": split}
    row.update({k: float(v) for k, v in scalars.items()})
    fileio.append_text(self.path, json.dumps(row) + "\n")
    for k, v in scalars.items():
      self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(path: str) -> list[dict]:
  """The rows of a metrics.jsonl, local or remote; [] if there is none."""
  path = epath.Path(path)
  if not path.exists():
    return []
  return [
      json.loads(line) for line in path.read_text().splitlines() if line.strip()
  ]
