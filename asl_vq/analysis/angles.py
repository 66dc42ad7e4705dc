"""Finger-joint angles of tokenized frames (the paper's Table 4).

Angles are measured in 2D image coordinates (the pipeline reads only x, y),
so a finger flexing towards the camera looks shorter rather than bent: they
compare tokens with each other, not with the 3D joint angles of a hand.
"""

from __future__ import annotations

import numpy as np

from asl_vq.data import hand_model as hm
from asl_vq.data import layout

MCP, PIP, DIP = 0, 1, 2
FINGER_NAMES = ("index", "middle", "ring", "pinky")
JOINT_NAMES = ("MCP", "PIP", "DIP")
_H = layout.NUM_HAND_POINTS


def flexion(hand: np.ndarray, finger: int, joint: int) -> np.ndarray:
  """Flexion (deg) of one joint of [..., 21, 2] hands: the angle between the
  bone into the joint and the bone out of it (0 = straight, 90 = a right
  angle), as `hand_model`'s pose angles count. The bone into an MCP joint
  starts at the wrist. NaN where a bone has no length (a missing hand)."""
  hand = np.asarray(hand, np.float64)
  at = hm.landmark(finger, joint)
  before = 0 if joint == MCP else at - 1
  into = hand[..., at, :] - hand[..., before, :]
  out = hand[..., at + 1, :] - hand[..., at, :]
  norms = np.linalg.norm(into, axis=-1) * np.linalg.norm(out, axis=-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    cos = np.sum(into * out, -1) / norms
  return np.where(norms > 0, np.degrees(np.arccos(np.clip(cos, -1, 1))), np.nan)


def present(frames: np.ndarray, eps: float = 1e-6) -> np.ndarray:
  """bool [..., 2]: whether each hand (left, right) of [..., 42, 2] frames
  was seen (the pipeline writes a missing hand as zeros)."""
  frames = np.asarray(frames)
  hands = frames.reshape(frames.shape[:-2] + (2, _H, 2))
  return np.abs(hands).max((-1, -2)) > eps


def dominant_hand(frames: np.ndarray) -> np.ndarray:
  """[T, 42, 2] frames of one sequence -> [T, 21, 2]: the hand seen in more
  of its frames (ties: right), the signing hand; the other one rests."""
  seen = present(frames).sum(0)
  side = 0 if seen[0] > seen[1] else 1
  return np.asarray(frames)[:, side * _H : (side + 1) * _H]


def summary(angles: np.ndarray) -> str:
  """'mean ± std' of the finite angles; '-' if there are none."""
  angles = np.asarray(angles)[np.isfinite(angles)]
  return f"{angles.mean():.1f} ± {angles.std():.1f}" if angles.size else "-"
