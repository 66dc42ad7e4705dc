"""Figures of what tokens look like: the per-letter token similarity heatmap
(the paper's Figure 2), the hierarchical code tree (Figure 3) and the token
gallery (Figure 4).

Frames are the model's inputs (`Tokenizer.preprocess`: normalised per
sequence), one per code row. A token is drawn as the mean of its frames
(`mean_hands`), not as its decoded codebook vector: the decoder is a sequence
model, and one code alone is not a sequence it was trained to decode.
Every figure has a fixed size per panel, so its pixel size is known.
"""

from __future__ import annotations

import math
import textwrap
from typing import Sequence

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial import distance

from asl_vq import errors
from asl_vq import fileio
from asl_vq import plotting
from asl_vq.analysis import angles
from asl_vq.data import layout

DPI = 100
HEATMAP_INCHES = 12.0
PANEL_INCHES = (2.0, 2.4)  # Width and height of one skeleton panel.
_H = layout.NUM_HAND_POINTS


def mean_hands(frames: np.ndarray) -> np.ndarray:
  """[M, 42, 2] -> [42, 2]: each hand's shape (its points relative to the
  wrist) averaged over the frames it is seen in, at its mean wrist position,
  so that the hand moving does not blur the shape; a hand seen in under
  half of the frames is left out (zeros, as missing)."""
  frames = np.asarray(frames, np.float64)
  weights = angles.present(frames).astype(np.float64)  # [M, 2]
  hands = frames.reshape(len(frames), 2, _H, 2)
  wrists = hands[:, :, :1]
  counts = np.maximum(weights.sum(0), 1)[:, None, None]
  shape = np.einsum("ms,mshd->shd", weights, hands - wrists) / counts
  wrist = np.einsum("ms,mshd->shd", weights, wrists) / counts
  mean = shape + wrist
  mean[weights.sum(0) < max(len(frames), 1) / 2] = 0.0
  return mean.reshape(2 * _H, 2)


def cosine_similarity(vectors: np.ndarray) -> np.ndarray:
  """[L, D] -> [L, L]."""
  v = np.asarray(vectors, np.float64)
  v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
  return v @ v.T


def cluster_order(similarity: np.ndarray) -> np.ndarray:
  """An order of the rows that puts similar ones next to each other
  (average-linkage clustering on 1 - similarity)."""
  if len(similarity) < 3:
    return np.arange(len(similarity))
  dist = np.clip(1.0 - similarity, 0.0, None)
  np.fill_diagonal(dist, 0.0)
  return hierarchy.leaves_list(
      hierarchy.linkage(distance.squareform(dist, checks=False), "average")
  )


def _wrap(title: str, inches: float) -> str:
  return textwrap.fill(title, int(inches * 12))


def _save(fig, path: str) -> str:
  with fileio.writing(path) as local:
    fig.savefig(local, dpi=DPI)
  plotting.pyplot().close(fig)
  return path


def plot_heatmap(
    path: str,
    similarity: np.ndarray,
    labels: Sequence[str],
    skeletons: np.ndarray,
    title: str,
) -> str:
  """The similarity matrix with each row's mean skeleton [L, 42, 2] on the
  diagonal; HEATMAP_INCHES square."""
  plt = plotting.pyplot()
  n = len(labels)
  if similarity.shape != (n, n) or len(skeletons) != n:
    raise errors.UserError(
        f"{n} labels, similarity {similarity.shape} and "
        f"{len(skeletons)} skeletons do not match"
    )
  fig, ax = plt.subplots(figsize=(HEATMAP_INCHES, HEATMAP_INCHES))
  image = ax.imshow(similarity, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
  fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="cosine")
  ax.set_xticks(range(n), labels, fontsize=7, rotation=90)
  ax.set_yticks(range(n), labels, fontsize=7)
  for i, hands in enumerate(skeletons):
    inset = ax.inset_axes([i / n, 1 - (i + 1) / n, 1 / n, 1 / n])
    inset.set_facecolor("white")
    plotting.draw_hands(inset, hands, lw=0.8)
  ax.set_title(_wrap(title, HEATMAP_INCHES), fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def _panels(n: int, cols: int, title: str):
  plt = plotting.pyplot()
  rows = max(1, math.ceil(n / cols))
  fig, axes = plt.subplots(
      rows,
      cols,
      squeeze=False,
      figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows),
  )
  fig.suptitle(_wrap(title, PANEL_INCHES[0] * cols), fontsize=9)
  for ax in axes.flat:
    ax.axis("off")
  return fig, axes


def gallery_picks(
    sequence_ids: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
  """Indices of one random frame from each of up to `n` random sequences."""
  order = rng.permutation(len(sequence_ids))
  _, first = np.unique(np.asarray(sequence_ids)[order], return_index=True)
  return rng.permutation(order[first])[:n]


def plot_gallery(
    path: str,
    frames: np.ndarray,
    sequence_ids: Sequence[int],
    title: str,
    cols: int = 6,
) -> str:
  """One panel per frame [M, 42, 2], its sequence id under it."""
  if not len(frames):
    raise errors.UserError("no frames to draw")
  cols = min(cols, len(frames))
  fig, axes = _panels(len(frames), cols, title)
  for ax, hands, sid in zip(axes.flat, frames, sequence_ids):
    ax.axis("on")
    plotting.draw_hands(ax, hands)
    ax.set_xlabel(f"seq {sid}", fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


def _commonest(values: np.ndarray, k: int) -> np.ndarray:
  ids, counts = np.unique(values, return_counts=True)
  return ids[np.argsort(-counts, kind="stable")[:k]]


def code_tree(
    codes: np.ndarray, branches: int = 4, leaves: int = 3
) -> list[tuple[tuple[int, ...], np.ndarray]]:
  """The frames of one first-quantizer token (their codes [M, Q >= 3]) split
  by the second code, then by the third: (code path, frame indices) of the
  root, then of each of the `branches` commonest second codes followed by
  its `leaves` commonest third codes."""
  codes = np.asarray(codes)
  if (
      codes.ndim != 2
      or codes.shape[1] < 3
      or not len(codes)
      or (codes[:, 0] != codes[0, 0]).any()
  ):
    raise errors.UserError(
        "codes must be [M > 0, Q >= 3] frames of one "
        f"first-quantizer token, got {codes.shape}"
    )
  root = int(codes[0, 0])
  nodes = [((root,), np.arange(len(codes)))]
  for q2 in _commonest(codes[:, 1], branches):
    branch = np.flatnonzero(codes[:, 1] == q2)
    nodes.append(((root, int(q2)), branch))
    nodes += [
        ((root, int(q2), int(q3)), branch[codes[branch, 2] == q3])
        for q3 in _commonest(codes[branch, 2], leaves)
    ]
  return nodes


def plot_tree(
    path: str,
    frames: np.ndarray,
    nodes: Sequence[tuple[tuple[int, ...], np.ndarray]],
    title: str,
) -> str:
  """`code_tree`'s nodes as a grid: the root on top, a column per second
  code with its mean skeleton, under it its third codes'; frame counts in
  the titles. PANEL_INCHES per cell, rows = 2 + the most leaves of a
  branch, columns = branches."""
  branches = [i for i, (p, _) in enumerate(nodes) if len(p) == 2]
  if not branches:
    raise errors.UserError("the tree has no second-code branch")
  children = {
      b: [
          i
          for i, (p, _) in enumerate(nodes)
          if len(p) == 3 and p[:2] == nodes[b][0]
      ]
      for b in branches
  }
  rows = 2 + max(len(c) for c in children.values())
  fig, axes = _panels(rows * len(branches), len(branches), title)
  cells = [(axes[0, len(branches) // 2], 0)]
  for col, b in enumerate(branches):
    cells += [(axes[1 + r, col], i) for r, i in enumerate([b] + children[b])]
  for ax, i in cells:
    code_path, index = nodes[i]
    ax.axis("on")
    plotting.draw_hands(
        ax,
        mean_hands(frames[index]),
        f"q{len(code_path) - 1}={code_path[-1]}: " f"{len(index)} frames",
    )
  fig.tight_layout()
  return _save(fig, path)
