"""Metrics a person can plot: JSONL + TensorBoard event files + PNG curves."""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import sys
from typing import Any, Mapping, Sequence

import jax


class MetricWriter:
  """Writes scalars from process 0 only; other processes are silent."""

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    if not self.active:
      return
    row = {"step": int(step), "split": split}
    row.update({k: float(v) for k, v in scalars.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for k, v in scalars.items():
      self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


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
  a resumed run lists each), for the report's figure captions."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "command.txt"), "a") as f:
      f.write(command_line() + "\n")


def first_command(workdir: str) -> str | None:
  path = os.path.join(workdir, "command.txt")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return f.readline().strip() or None


def _cell(v: Any) -> str:
  if isinstance(v, float):
    return "n/a" if v != v else f"{v:.3f}"
  return str(v)


def write_table(out_dir: str, name: str, header: Sequence[str],
                rows: Sequence[Sequence[Any]], note: str) -> str:
  """`<out_dir>/<name>.csv` and `.md` (the note above a markdown table);
  returns the markdown. Floats to 3 decimals, NaN as n/a."""
  cells = [[_cell(v) for v in r] for r in rows]
  with open(os.path.join(out_dir, f"{name}.csv"), "w", newline="") as f:
    csv.writer(f).writerows([header, *cells])
  lines = [note, "", "| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in cells]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
    f.write(text)
  return text


def read_metrics(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_learning_curves(workdir: str, keys: tuple[str, ...],
                         out_name: str = "learning_curves.png") -> str:
  """One panel per metric, train and validation on the same axes."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  keys = [k for k in keys if any(k in r for r in rows)]
  cols = min(3, max(1, len(keys)))
  nrows = max(1, math.ceil(len(keys) / cols))
  fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.2 * nrows),
                           squeeze=False)
  for ax, key in zip(axes.flat, keys):
    for split, style in (("train", "-"), ("validation", "o-")):
      pts = sorted({r["step"]: r[key] for r in rows
                    if r["split"] == split and key in r}.items())
      if pts:
        ax.plot(*zip(*pts), style, label=split, markersize=3)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.legend()
  for ax in list(axes.flat)[len(keys):]:
    ax.axis("off")
  fig.tight_layout()
  path = os.path.join(workdir, out_name)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
