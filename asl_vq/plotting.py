"""Hand skeletons for every figure (previews, galleries, trees, heatmap
diagonals, generated-signing animations), in one place so they all look alike.
"""

from __future__ import annotations

import math
import os

import numpy as np

from asl_vq import errors
from asl_vq import fileio
from asl_vq.data import hand_model as hm

FPS = 30  # the competition's videos.
SMALL_HAND = 0.25  # Of the other hand's extent: below it, not a hand.
_FINGER_COLORS = (
    "tab:red",
    "tab:orange",
    "tab:green",
    "tab:blue",
    "tab:purple",
)


def pyplot():
  """matplotlib.pyplot on the headless Agg backend (imported late: only the
  figure commands need matplotlib loaded)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def draw_hand(
    ax,
    points: np.ndarray,
    title: str = "",
    lw: float = 2.0,
    invert_y: bool = True,
    color: str | None = None,
) -> None:
  """A 2D hand skeleton from [21, >=2] image coordinates (y down); `color`
  for every bone and point (default: a colour per finger)."""
  for a, b in hm.BONES:
    palm = a == 0 and b > 4 or a in (5, 9, 13) and b in (9, 13, 17)
    bone = color or ("gray" if palm else _FINGER_COLORS[(b - 1) // 4])
    ax.plot(points[[a, b], 0], points[[a, b], 1], "-", color=bone, lw=lw)
  ax.scatter(points[:, 0], points[:, 1], s=4 * lw, c=color or "k", zorder=3)
  _finish(ax, title, invert_y)


def hand_present(points: np.ndarray, eps: float = 1e-6) -> bool:
  """Whether [21, 2] points show a hand: not all NaN and not all ~0 (the
  pipeline writes an undetected hand as zeros)."""
  finite = np.isfinite(points).all(-1)
  return bool(finite.any() and np.abs(points[finite]).max() > eps)


def draw_hands(
    ax,
    hands: np.ndarray,
    title: str = "",
    lw: float = 2.0,
    color: str | None = None,
) -> None:
  """Both hands of one frame, [42, 2] (left 0..20, right 21..41), drawing
  only those present; the left hand's skeleton is drawn thinner; `color`
  as `draw_hand`'s."""
  hands = np.asarray(hands)
  if hands.shape != (42, 2):
    raise errors.UserError(f"hands must be [42, 2], got {hands.shape}")
  sides = [(slice(0, 21), lw * 0.6), (slice(21, 42), lw)]
  sides = [(s, t) for s, t in sides if hand_present(hands[s])]
  extent = [np.ptp(np.nan_to_num(hands[s]), 0).max() for s, _ in sides]
  for (side, thickness), e in zip(sides, extent):
    # A decoder draws an absent hand as a small blob (a few % of a hand's
    # size) rather than exact zeros: skip it next to a real hand.
    if e >= SMALL_HAND * max(extent):
      draw_hand(ax, hands[side], lw=thickness, invert_y=False, color=color)
  _finish(ax, title, True)


def save_gif(
    hands: np.ndarray,
    path: str,
    *,
    title: str = "",
    fps: float = FPS,
    underlay: np.ndarray | None = None,
) -> str:
  """An animated GIF of landmarks [T, 42, 2], one frame per row, to a local
  path or an object store URL; `underlay` [T, 42, 2] (e.g. the input a
  reconstruction is of) drawn under them in light grey.

  Raises:
    errors.UserError: `underlay` not of `hands`' shape.
  """
  plt = pyplot()
  from matplotlib import animation  # pylint: disable=g-import-not-at-top

  hands = np.asarray(hands)
  if underlay is not None and np.shape(underlay) != hands.shape:
    raise errors.UserError(
        f"underlay {np.shape(underlay)} is not of the "
        f"hands' shape {hands.shape}"
    )
  both = hands if underlay is None else np.concatenate([hands, underlay])
  finite = both[np.isfinite(both).all(-1)].reshape(-1, 2)
  lo, hi = (
      (finite.min(0), finite.max(0))
      if len(finite)
      else (-np.ones(2), np.ones(2))
  )
  margin = 0.05 * np.max(hi - lo) + 1e-3
  fig, ax = plt.subplots(figsize=(3, 3), dpi=80)

  def draw(t):
    ax.clear()
    if underlay is not None:
      draw_hands(ax, underlay[t], lw=3.0, color="0.8")
    draw_hands(ax, hands[t], f"{title} {t + 1}/{len(hands)}".strip())
    ax.set_xlim(lo[0] - margin, hi[0] + margin)
    ax.set_ylim(hi[1] + margin, lo[1] - margin)  # y down, as images.

  anim = animation.FuncAnimation(fig, draw, frames=len(hands))
  with fileio.writing(path) as local:
    anim.save(local, writer=animation.PillowWriter(fps=fps))
  plt.close(fig)
  return path


def _finish(ax, title: str, invert_y: bool) -> None:
  ax.set_aspect("equal")
  if invert_y and not ax.yaxis_inverted():
    ax.invert_yaxis()
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=9)


def plot_learning_curves(
    workdir: str, keys: tuple[str, ...], out_name: str = "learning_curves.png"
) -> str:
  """One panel per metric, train and validation on the same axes, into
  `workdir` (local or an object store URL)."""
  from asl_vq import metric_writers  # pylint: disable=g-import-not-at-top

  plt = pyplot()
  rows = metric_writers.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  keys = [k for k in keys if any(k in r for r in rows)]
  cols = min(3, max(1, len(keys)))
  nrows = max(1, math.ceil(len(keys) / cols))
  fig, axes = plt.subplots(
      nrows, cols, figsize=(4.5 * cols, 3.2 * nrows), squeeze=False
  )
  for ax, key in zip(axes.flat, keys):
    for split, style in (("train", "-"), ("validation", "o-")):
      pts = sorted(
          {
              r["step"]: r[key]
              for r in rows
              if r["split"] == split and key in r
          }.items()
      )
      if pts:
        ax.plot(*zip(*pts), style, label=split, markersize=3)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.legend()
  for ax in list(axes.flat)[len(keys) :]:
    ax.axis("off")
  fig.tight_layout()
  path = os.path.join(workdir, out_name)
  with fileio.writing(path) as local:
    fig.savefig(local, dpi=100)
  plt.close(fig)
  return path
