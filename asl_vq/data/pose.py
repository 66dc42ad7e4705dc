"""`.pose` files (pose-format) in and out, as the project's hands.

The project's hands are float32 [T, 42, 2]: the left hand's 21 MediaPipe
points, then the right hand's, x/y in *normalised image coordinates* (x / image
width, y / image height, y down), NaN where a hand was not detected -- the
Kaggle data's convention (`asl_vq.data.layout`).

pose-format stores *pixel* coordinates and the image size in its header
(`PoseHeaderDimensions` width, height), with a confidence per point (0: not
detected). `read` divides by the width and height and turns confidence 0 into
NaN; `write` multiplies back and writes confidence 0 where a point is NaN.

Reading needs a header with a 21-point left and/or right hand component, as
pose-format's MediaPipe Holistic estimator writes (`LEFT_HAND_LANDMARKS`,
`RIGHT_HAND_LANDMARKS`) or OpenPose's (`hand_left_keypoints_2d`, ...); other
components (body, face) are ignored, and so is z. Needs the `pose` extra
(`pip install 'asl_vq[pose]'`).
"""

from __future__ import annotations

import os

import numpy as np

from asl_vq import errors
from asl_vq.data import hand_model
from asl_vq.data import layout

try:
  # pylint: disable=g-import-not-at-top
  import pose_format
  from pose_format import pose_header
  from pose_format.numpy import NumPyPoseBody
  from pose_format.utils import openpose
except ImportError:  # the `pose` extra: needed only when a function runs.
  pose_format = None

# MediaPipe's hand landmarks (`HandLandmark`), in index order, and its
# HAND_CONNECTIONS (the same 21 bones as `hand_model.BONES`).
HAND_POINTS = (
    "WRIST",
    "THUMB_CMC",
    "THUMB_MCP",
    "THUMB_IP",
    "THUMB_TIP",
    "INDEX_FINGER_MCP",
    "INDEX_FINGER_PIP",
    "INDEX_FINGER_DIP",
    "INDEX_FINGER_TIP",
    "MIDDLE_FINGER_MCP",
    "MIDDLE_FINGER_PIP",
    "MIDDLE_FINGER_DIP",
    "MIDDLE_FINGER_TIP",
    "RING_FINGER_MCP",
    "RING_FINGER_PIP",
    "RING_FINGER_DIP",
    "RING_FINGER_TIP",
    "PINKY_MCP",
    "PINKY_PIP",
    "PINKY_DIP",
    "PINKY_TIP",
)
# Component names as pose-format's Holistic estimator writes them.
COMPONENTS = ("LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS")
_SIDES = ("left", "right")


class PoseFileError(errors.UserError):
  """A `.pose` file that is unreadable or has no hand components."""


def _require_pose_format() -> None:
  if pose_format is None:
    raise errors.MissingExtra(
        ".pose files need pose-format: pip install 'asl_vq[pose]'"
    )


def _hand_components(header, path: str) -> list[tuple[int, int] | None]:
  """Per side, (first point index, component index) of its hand, or None."""
  found = {side: [] for side in _SIDES}
  start = 0
  for i, c in enumerate(header.components):
    name = c.name.lower()
    if "hand" in name and len(c.points) == layout.NUM_HAND_POINTS:
      for side in _SIDES:
        if side in name:
          found[side].append((start, i))
    start += len(c.points)
  names = [c.name for c in header.components]
  if not any(found.values()):
    raise PoseFileError(
        f"{path}: the header has no 21-point left or right hand component "
        f"(components: {', '.join(names) or 'none'}); write the file with a "
        "hand or holistic estimator (pose-format's MediaPipe Holistic names "
        f"them {' and '.join(COMPONENTS)})"
    )
  for side, matches in found.items():
    if len(matches) > 1:
      raise PoseFileError(
          f"{path}: {len(matches)} {side} hand components "
          f"({', '.join(names[i] for _, i in matches)}); keep one with "
          "pose_format's Pose.get_components"
      )
  return [matches[0] if matches else None for matches in found.values()]


def _point_order(component) -> np.ndarray:
  """Indices that put a component's points in MediaPipe's order: by name
  when they are MediaPipe's names, else as stored (OpenPose's hand has the
  same topology in the same order)."""
  if sorted(component.points) == sorted(HAND_POINTS):
    return np.array([component.points.index(p) for p in HAND_POINTS])
  return np.arange(layout.NUM_HAND_POINTS)


def read(path: str | os.PathLike) -> tuple[np.ndarray, float]:
  """A `.pose` file -> (hands float32 [T, 42, 2], fps): `read_sized`
  without the image size; the same errors."""
  return read_sized(path)[:2]


def read_sized(
    path: str | os.PathLike,
) -> tuple[np.ndarray, float, tuple[int, int]]:
  """A `.pose` file -> (hands float32 [T, 42, 2], fps, (width, height) of
  its image in pixels, from the header).

  Hands in normalised image coordinates (pixels / header width and height),
  NaN where the confidence is 0 or the side has no component; the first
  person of each frame (NaN when a frame has none).

  Raises:
    PoseFileError: not a readable `.pose` file, no hand component, two of one
      side, or a header with width or height 0.
    OSError: the file cannot be opened.
    ModuleNotFoundError: pose-format is not installed.
  """
  path = os.fspath(path)
  _require_pose_format()
  with open(path, "rb") as f:
    buffer = f.read()
  try:
    pose = pose_format.Pose.read(buffer)
  except Exception as e:  # pylint: disable=broad-except
    # The binary reader raises whatever struct/numpy raise on a bad file.
    raise PoseFileError(
        f"{path}: not a readable .pose file ({type(e).__name__}" f": {e})"
    ) from None
  header = pose.header
  sides = _hand_components(header, path)
  size = np.array(
      [header.dimensions.width, header.dimensions.height], np.float64
  )
  if not size.all():
    raise PoseFileError(
        f"{path}: the header's dimensions are {header.dimensions.width} x "
        f"{header.dimensions.height} pixels, so its coordinates cannot be "
        "normalised; set pose.header.dimensions to the video's size"
    )
  data = np.asarray(pose.body.data.data, np.float64)  # [T, people, P, D]
  confidence = np.asarray(pose.body.confidence)  # [T, people, P]
  hands = np.full((len(data), layout.NUM_POINTS, 2), np.nan, np.float32)
  if data.shape[1]:
    h = layout.NUM_HAND_POINTS
    for k, side in enumerate(sides):
      if side is None:
        continue
      start, component = side
      idx = start + _point_order(header.components[component])
      xy = data[:, 0, idx, :2] / size
      xy[confidence[:, 0, idx] <= 0] = np.nan
      hands[:, k * h : (k + 1) * h] = xy
  return (
      layout.missing_as_nan(hands),
      float(pose.body.fps),
      (int(header.dimensions.width), int(header.dimensions.height)),
  )


def write(
    path: str | os.PathLike,
    hands: np.ndarray,
    fps: float,
    *,
    width: int = 1000,
    height: int = 1000,
) -> None:
  """Writes hands [T, 42, 2] as a `.pose` file of one person.

  `hands` are normalised image coordinates, written as pixels of a
  `width` x `height` image in two components, `COMPONENTS`, of MediaPipe's
  21 points and bones (format XYC); a point with a NaN coordinate gets
  confidence 0. `pose_format.Pose.read` and its `PoseVisualizer` open it;
  `read` gives the hands back (to float32 rounding).

  Raises:
    ValueError: hands not [T, 42, 2], or fps not positive.
    ModuleNotFoundError: pose-format is not installed.
  """
  hands = np.asarray(hands, np.float32)
  if hands.ndim != 3 or hands.shape[1:] != (layout.NUM_POINTS, 2):
    raise errors.UserError(
        f"hands must be [T, {layout.NUM_POINTS}, 2], got " f"{hands.shape}"
    )
  if not fps > 0:
    raise errors.UserError(f"fps must be positive, got {fps}")
  _require_pose_format()
  components = [
      pose_header.PoseHeaderComponent(
          name=name,
          points=list(HAND_POINTS),
          limbs=list(hand_model.BONES),
          colors=openpose.hand_colors,
          point_format="XYC",
      )
      for name in COMPONENTS
  ]
  header = pose_header.PoseHeader(
      version=pose_header.VERSION,
      dimensions=pose_header.PoseHeaderDimensions(width, height, 0),
      components=components,
  )
  detected = ~np.isnan(hands).any(-1)
  pixels = np.where(
      detected[..., None], hands * np.float32([width, height]), 0.0
  )
  body = NumPyPoseBody(
      fps=float(fps),
      data=pixels[:, None].astype(np.float32),
      confidence=detected[:, None].astype(np.float32),
  )
  with open(path, "wb") as f:
    pose_format.Pose(header, body).write(f)
