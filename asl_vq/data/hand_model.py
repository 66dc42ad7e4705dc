"""A kinematic hand in MediaPipe's 21-point topology, and the handshapes of
the manual alphabet that drive it (the model behind the synthetic dataset).

Hand frame, in centimetres, of a right hand: origin at the wrist, +x towards
the thumb, +y along the fingers, +z out of the palm (the side fingers flex
to). With a neutral wrist the hand frame is the world frame of `synthetic`
(x right in the image, y up, z towards the camera): the hand is held up with
the palm to the camera, as the manual alphabet is shown to a viewer.

A pose is a vector of POSE_SIZE angles in degrees:
  pose[4 f + k], f = index, middle, ring, pinky; k = MCP flexion, MCP
    abduction (+ towards the thumb), PIP flexion, DIP flexion;
  pose[16:21] thumb: CMC flexion (across the palm), CMC abduction (out of the
    palm), MCP flexion, IP flexion, opposition (turns the thumb's bending
    plane from across the palm to out of it);
  pose[21:24] wrist: pitch (about x), yaw (about y), roll (about the view
    axis), applied in that order.
Handshapes put the thumb where it touches or tucks (a/s/t/m/n/e differ in
where it goes), solved by inverse kinematics, so that look-alike letters stay
alike the way they are in the real alphabet.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np

from asl_vq import vocab

POSE_SIZE = 24
THUMB = slice(16, 21)
WRIST = slice(21, 24)
JOINTS = slice(0, 21)
# Landmark index of joint j (0 MCP, 1 PIP, 2 DIP, 3 tip) of finger f (0 index).
_MCP, _PIP, _DIP, _TIP = 0, 1, 2, 3


def landmark(finger: int, joint: int) -> int:
  return 5 + 4 * finger + joint


INDEX, MIDDLE, RING, PINKY = range(4)
# Skeleton edges, for drawing.
BONES = (
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 4),
    (0, 5),
    (5, 6),
    (6, 7),
    (7, 8),
    (5, 9),
    (9, 10),
    (10, 11),
    (11, 12),
    (9, 13),
    (13, 14),
    (14, 15),
    (15, 16),
    (13, 17),
    (0, 17),
    (17, 18),
    (18, 19),
    (19, 20),
)

# Joint limits (degrees) of pose[0:21]; the wrist is free.
_FINGER_LO = (-15.0, -30.0, -5.0, -10.0)
_FINGER_HI = (100.0, 30.0, 115.0, 90.0)
LOWER = np.array(_FINGER_LO * 4 + (-45.0, -15.0, -15.0, -20.0, -20.0))
UPPER = np.array(_FINGER_HI * 4 + (80.0, 85.0, 75.0, 90.0, 110.0))
_THUMB_REST_ANGLE = 35.0  # The thumb metacarpal's angle from +y towards +x.


@dataclasses.dataclass(frozen=True)
class HandGeometry:
  """Bone layout of one hand (cm); signers differ in size and proportions."""

  bases: np.ndarray  # [5, 3]: thumb CMC, then index..pinky MCP.
  lengths: np.ndarray  # [5, 3]: the three bones of the thumb and fingers.
  splay: np.ndarray  # [4]: rest angle of each finger in the palm (deg).

  def perturbed(
      self, rng: np.random.Generator, size: float, spread: float
  ) -> HandGeometry:
    """This hand scaled by `size`, each bone varied by `spread` (relative)."""
    return HandGeometry(
        bases=self.bases * size * (1 + spread * rng.normal(size=(5, 1))),
        lengths=self.lengths * size * (1 + spread * rng.normal(size=(5, 3))),
        splay=self.splay + 40 * spread * rng.normal(size=4),
    )

  @property
  def length(self) -> float:
    """Wrist to middle fingertip, fingers straight."""
    return float(self.bases[2, 1] + self.lengths[2].sum())


# An adult hand of about 19 cm.
DEFAULT_GEOMETRY = HandGeometry(
    bases=np.array(
        [
            [2.0, 2.4, 0.6],
            [2.9, 9.0, 0.0],
            [0.95, 9.4, 0.0],
            [-0.95, 9.0, 0.0],
            [-2.7, 8.2, 0.0],
        ]
    ),
    lengths=np.array(
        [
            [4.1, 3.2, 2.6],
            [4.2, 2.5, 2.0],
            [4.6, 2.9, 2.1],
            [4.3, 2.8, 2.0],
            [3.4, 2.0, 1.9],
        ]
    ),
    splay=np.array([7.0, 0.0, -6.0, -14.0]),
)


def _chain(base, directions, lengths):
  """Joint positions [..., 4, 3] of a chain from its base and bone vectors."""
  bones = directions * lengths[..., :, None]
  joints = base + np.cumsum(bones, axis=-2)
  return np.concatenate(
      [np.broadcast_to(base, joints[..., :1, :].shape), joints], axis=-2
  )


def _finger_points(rad: np.ndarray, g: HandGeometry) -> np.ndarray:
  """[..., 4 fingers, 4 joints, 3]: each finger bends in one plane."""
  f = rad[..., :16].reshape(rad.shape[:-1] + (4, 4))
  spread = np.deg2rad(g.splay) + f[..., 1]
  zero = np.zeros_like(spread)
  along = np.stack([np.sin(spread), np.cos(spread), zero], -1)  # [..., 4, 3]
  theta = np.cumsum(f[..., [0, 2, 3]], axis=-1)[..., None]  # [..., 4, 3, 1]
  palm = np.array([0.0, 0.0, 1.0])
  directions = np.cos(theta) * along[..., None, :] + np.sin(theta) * palm
  return _chain(g.bases[1:, None, :], directions, g.lengths[1:])


def _thumb_points(thumb_rad: np.ndarray, g: HandGeometry) -> np.ndarray:
  """[..., 4, 3]: CMC, MCP, IP, tip."""
  cmc_flex, cmc_abd, mcp, ip, opposition = np.moveaxis(thumb_rad, -1, 0)
  a = np.deg2rad(_THUMB_REST_ANGLE) - cmc_flex
  u = np.stack(
      [
          np.sin(a) * np.cos(cmc_abd),
          np.cos(a) * np.cos(cmc_abd),
          np.sin(cmc_abd),
      ],
      -1,
  )
  w = np.stack([-np.cos(opposition), np.zeros_like(a), np.sin(opposition)], -1)
  bend = w - np.sum(w * u, -1, keepdims=True) * u
  bend /= np.linalg.norm(bend, axis=-1, keepdims=True)
  angles = np.stack([np.zeros_like(mcp), mcp, mcp + ip], -1)[..., None]
  directions = (
      np.cos(angles) * u[..., None, :] + np.sin(angles) * bend[..., None, :]
  )
  return _chain(g.bases[0], directions, g.lengths[0])


def rotation(wrist: np.ndarray) -> np.ndarray:
  """Wrist angles [..., 3] (deg) -> [..., 3, 3] Rz(roll) Ry(yaw) Rx(pitch)."""
  p, y, r = np.moveaxis(np.deg2rad(wrist), -1, 0)
  one, zero = np.ones_like(p), np.zeros_like(p)

  def mat(rows):
    return np.stack([np.stack(row, -1) for row in rows], -2)

  rx = mat(
      [
          [one, zero, zero],
          [zero, np.cos(p), -np.sin(p)],
          [zero, np.sin(p), np.cos(p)],
      ]
  )
  ry = mat(
      [
          [np.cos(y), zero, np.sin(y)],
          [zero, one, zero],
          [-np.sin(y), zero, np.cos(y)],
      ]
  )
  rz = mat(
      [
          [np.cos(r), -np.sin(r), zero],
          [np.sin(r), np.cos(r), zero],
          [zero, zero, one],
      ]
  )
  return rz @ ry @ rx


def hand_frame_points(
    pose: np.ndarray, geometry: HandGeometry = DEFAULT_GEOMETRY
) -> np.ndarray:
  """[..., POSE_SIZE] -> [..., 21, 3] in the hand frame (wrist ignored)."""
  rad = np.deg2rad(np.asarray(pose, np.float64))
  fingers = _finger_points(rad, geometry)
  thumb = _thumb_points(rad[..., THUMB], geometry)
  wrist = np.zeros(rad.shape[:-1] + (1, 3))
  return np.concatenate(
      [wrist, thumb, fingers.reshape(rad.shape[:-1] + (16, 3))], axis=-2
  )


def forward_kinematics(
    pose: np.ndarray, geometry: HandGeometry = DEFAULT_GEOMETRY
) -> np.ndarray:
  """[..., POSE_SIZE] -> [..., 21, 3] world-oriented, wrist at the origin."""
  points = hand_frame_points(pose, geometry)
  rot = rotation(np.asarray(pose, np.float64)[..., WRIST])
  return points @ np.swapaxes(rot, -1, -2)


def clip(pose: np.ndarray) -> np.ndarray:
  """Keeps the joints within their limits."""
  out = np.array(pose, np.float64)
  out[..., JOINTS] = np.clip(out[..., JOINTS], LOWER, UPPER)
  return out


# ----------------------------------------------------------------- handshapes


def _f(mcp: float, pip: float, dip: float, abd: float = 0.0) -> tuple:
  return (mcp, abd, pip, dip)


EXT = _f(0, 4, 2)  # Straight.
FIST = _f(88, 100, 55)  # Folded into the palm.
CURVE = _f(30, 45, 25)  # The C hand.
ROUND = _f(55, 65, 40)  # The O hand: tips meet the thumb.
HOOK = _f(15, 95, 60)  # The X hand.
BENT = _f(40, 100, 70)  # The E hand: tips rest on the thumb.
RELAXED = _f(22, 28, 14)

# Thumb priors: CMC flexion, CMC abduction, MCP, IP, opposition.
T_SIDE = (20.0, 25.0, 10.0, 10.0, 30.0)  # Up along the side of the fist (a).
T_ACROSS = (45.0, 40.0, 30.0, 15.0, 70.0)  # Across the front of the fingers.
T_TUCK = (45.0, 20.0, 25.0, 25.0, 50.0)  # Under the fingers (t, m, n).
T_PALM = (55.0, 15.0, 30.0, 25.0, 30.0)  # Folded onto the palm (b, 4).
T_OPPOSE = (25.0, 45.0, 15.0, 15.0, 70.0)  # Meets a fingertip (o, f, d).
T_OUT = (-25.0, 10.0, 0.0, 0.0, 20.0)  # Out to the side (l, y, 5).
T_CURVE = (0.0, 45.0, 20.0, 20.0, 60.0)  # Opposite the fingers (c).
T_RELAXED = (15.0, 25.0, 15.0, 10.0, 40.0)


@dataclasses.dataclass(frozen=True)
class Touch:
  """The thumb tip goes to `offset` (cm, hand frame) from the mean of the
  `joints` ((finger, joint) pairs); `prior` is where the solver starts and
  what it stays near."""

  joints: tuple
  offset: tuple
  prior: tuple


@dataclasses.dataclass(frozen=True)
class Shape:
  """A handshape: fingers, thumb, and the wrist's pitch, yaw and roll."""

  fingers: tuple  # Four (mcp, abd, pip, dip), index to pinky.
  thumb: tuple | Touch  # Five thumb angles, or where the tip goes.
  wrist: tuple = (0.0, 0.0, 0.0)


# Where the thumb goes in the closed-hand letters (a/s/t/m/n/e/...).
_ACROSS_FINGERS = Touch(
    ((INDEX, _DIP), (MIDDLE, _DIP)), (0.0, 0.3, 1.4), T_ACROSS
)
_BETWEEN_INDEX_MIDDLE = Touch(
    ((INDEX, _PIP), (MIDDLE, _PIP)), (0.0, 0.3, -0.4), T_TUCK
)
_BETWEEN_MIDDLE_RING = Touch(
    ((MIDDLE, _PIP), (RING, _PIP)), (0.0, -1.2, -0.8), T_TUCK
)
_BETWEEN_RING_PINKY = Touch(
    ((RING, _PIP), (PINKY, _PIP)), (0.0, -1.2, -0.8), T_TUCK
)
_UNDER_TIPS = Touch(((INDEX, _TIP), (MIDDLE, _TIP)), (0.0, -1.6, 0.2), T_ACROSS)
_ON_PALM = Touch(((RING, _MCP),), (0.2, -1.5, 1.3), T_PALM)
# Holding down folded fingers (u/v/w/k/i...).
_HOLD_RING = Touch(((RING, _PIP), (RING, _DIP)), (0.3, 0.0, 1.3), T_ACROSS)
_HOLD_PINKY = Touch(((PINKY, _PIP), (PINKY, _DIP)), (0.3, 0.0, 1.3), T_ACROSS)
_HOLD_MIDDLE_RING = Touch(
    ((MIDDLE, _DIP), (RING, _DIP)), (0.0, 0.3, 1.4), T_ACROSS
)


def _tip(finger, dx=0.0, dy=-0.8, dz=0.6):
  return Touch(((finger, _TIP),), (dx, dy, dz), T_OPPOSE)


_SIDEWAYS = (0.0, 150.0, -90.0)  # Fingers point across, palm to the signer.
_DOWN_FORWARD = (120.0, 0.0, 0.0)  # Fingers point down and forward.
_PROFILE = (0.0, 70.0, 0.0)  # Seen from the thumb side.


def _shapes() -> dict[str, Shape]:
  """One handshape per symbol of the vocabulary."""
  s = {}
  fist4 = (FIST,) * 4
  # The closed hands: only the thumb tells them apart (e: fingers bent).
  s["a"] = Shape(fist4, T_SIDE)
  s["s"] = Shape(fist4, _ACROSS_FINGERS)
  s["t"] = Shape(fist4, _BETWEEN_INDEX_MIDDLE)
  s["n"] = Shape(fist4, _BETWEEN_MIDDLE_RING)
  s["m"] = Shape(fist4, _BETWEEN_RING_PINKY)
  s["e"] = Shape((BENT,) * 4, _UNDER_TIPS)
  together = (_f(0, 4, 2, -3), _f(0, 4, 2, 0), _f(0, 4, 2, 3), _f(0, 4, 2, 8))
  spread = (_f(0, 4, 2, 10), _f(0, 4, 2, 0), _f(0, 4, 2, -8), _f(0, 4, 2, -14))
  s["b"] = Shape(together, _ON_PALM)
  s["4"] = Shape(spread, _ON_PALM)
  s["5"] = Shape(spread, T_OUT)
  s["c"] = Shape((CURVE,) * 4, T_CURVE, _PROFILE)
  s["o"] = Shape((ROUND,) * 4, _tip(INDEX, 0.2, 0.3), (0.0, 50.0, 0.0))
  s["0"] = Shape((ROUND,) * 4, _tip(INDEX, 0.2, 0.3), (0.0, 40.0, -10.0))
  s["d"] = Shape((EXT, ROUND, ROUND, ROUND), _tip(MIDDLE))
  s["1"] = Shape((EXT, FIST, FIST, FIST), _HOLD_MIDDLE_RING, (0.0, 20.0, 0.0))
  s["z"] = Shape((EXT, FIST, FIST, FIST), _HOLD_MIDDLE_RING)
  s["f"] = Shape(
      (ROUND, _f(0, 4, 2, 2), _f(0, 4, 2, -6), _f(0, 4, 2, -12)), _tip(INDEX)
  )
  s["9"] = Shape(s["f"].fingers, _tip(INDEX), (0.0, 20.0, 0.0))
  s["g"] = Shape(
      (EXT, FIST, FIST, FIST),
      Touch(((INDEX, _MCP),), (1.0, 3.0, 1.2), T_SIDE),
      _SIDEWAYS,
  )
  s["h"] = Shape(
      (_f(0, 4, 2, -2), _f(0, 4, 2, 2), FIST, FIST), _HOLD_RING, _SIDEWAYS
  )
  s["q"] = Shape(s["g"].fingers, s["g"].thumb, (40.0, 150.0, 170.0))
  s["i"] = Shape((FIST, FIST, FIST, _f(0, 4, 2, -4)), _ACROSS_FINGERS)
  s["j"] = s["i"]  # Its motion path tells them apart.
  v = (_f(0, 4, 2, 11), _f(0, 4, 2, -9), FIST, FIST)
  s["v"] = Shape(v, _HOLD_RING)
  s["2"] = Shape(v, _HOLD_RING, (0.0, 25.0, 0.0))
  s["k"] = Shape(
      (_f(0, 4, 2, 9), _f(35, 8, 4, -9), FIST, FIST),
      Touch(((MIDDLE, _PIP),), (0.9, -0.6, 0.9), T_OPPOSE),
  )
  s["p"] = Shape(s["k"].fingers, s["k"].thumb, _DOWN_FORWARD)
  s["u"] = Shape((_f(0, 4, 2, -2), _f(0, 4, 2, 2), FIST, FIST), _HOLD_RING)
  s["r"] = Shape((_f(4, 4, 2, -7), _f(14, 4, 2, 10), FIST, FIST), _HOLD_RING)
  s["w"] = Shape(
      (_f(0, 4, 2, 11), _f(0, 4, 2, 0), _f(0, 4, 2, -10), _f(60, 70, 40)),
      _HOLD_PINKY,
  )
  s["6"] = Shape(s["w"].fingers[:3] + (_f(60, 70, 40),), _tip(PINKY))
  s["7"] = Shape(
      (_f(0, 4, 2, 10), _f(0, 4, 2, 0), _f(55, 65, 35), _f(0, 4, 2, -14)),
      _tip(RING),
  )
  s["8"] = Shape(
      (_f(0, 4, 2, 10), _f(50, 65, 35), _f(0, 4, 2, -8), _f(0, 4, 2, -14)),
      _tip(MIDDLE),
  )
  s["x"] = Shape((HOOK, FIST, FIST, FIST), _ACROSS_FINGERS)
  s["y"] = Shape((FIST, FIST, FIST, _f(0, 4, 2, -22)), T_OUT)
  s["l"] = Shape((EXT, FIST, FIST, FIST), (-35.0, 5.0, 0.0, 0.0, 10.0))
  s["3"] = Shape(
      (_f(0, 4, 2, 10), _f(0, 4, 2, -6), FIST, FIST),
      (-30.0, 10.0, 0.0, 0.0, 15.0),
      (0.0, 20.0, 0.0),
  )
  # Punctuation and space: distinct shapes, most from a tilted letter hand.
  s[" "] = Shape(
      (_f(22, 28, 14, 4), RELAXED, _f(22, 28, 14, -4), _f(22, 28, 14, -8)),
      T_RELAXED,
      (25.0, 15.0, 0.0),
  )
  s["-"] = Shape(together, _ON_PALM, (0.0, 90.0, -90.0))
  s["_"] = Shape(together, _ON_PALM, (0.0, 90.0, -125.0))
  s["="] = Shape(s["h"].fingers, s["h"].thumb, (60.0, 150.0, -90.0))
  s["."] = Shape((ROUND, FIST, FIST, FIST), _tip(INDEX), (0.0, 40.0, 0.0))
  s[";"] = Shape((ROUND, FIST, FIST, FIST), _tip(INDEX), (50.0, 40.0, 30.0))
  s[","] = Shape(s["i"].fingers, s["i"].thumb, (50.0, 0.0, 30.0))
  s["/"] = Shape(s["u"].fingers, s["u"].thumb, (0.0, 0.0, -40.0))
  s[":"] = Shape((EXT, FIST, FIST, _f(0, 4, 2, -20)), _HOLD_MIDDLE_RING)
  s["@"] = Shape((ROUND, CURVE, CURVE, CURVE), _tip(INDEX), (0.0, 55.0, 0.0))
  s["+"] = Shape(s["r"].fingers, s["r"].thumb, (0.0, 0.0, 45.0))
  s["#"] = Shape(v, _HOLD_RING, (0.0, 0.0, -60.0))
  s["%"] = Shape(v, _HOLD_RING, (40.0, 0.0, 50.0))
  s["~"] = Shape(s["y"].fingers, T_OUT, (0.0, 0.0, 45.0))
  s["?"] = Shape(s["x"].fingers, s["x"].thumb, (20.0, 0.0, 30.0))
  s["!"] = Shape(
      (EXT, FIST, FIST, FIST), (-35.0, 5.0, 0.0, 0.0, 10.0), (0.0, 0.0, 30.0)
  )
  s["$"] = Shape(s["3"].fingers, s["3"].thumb, (0.0, 0.0, -80.0))
  s["&"] = Shape(
      (_f(0, 4, 2, 10), _f(60, 10, 5), _f(0, 4, 2, -8), _f(0, 4, 2, -14)), T_OUT
  )
  s["("] = Shape((CURVE,) * 4, T_CURVE, (0.0, 70.0, 25.0))
  s[")"] = Shape((CURVE,) * 4, T_CURVE, (0.0, -50.0, -25.0))
  s["["] = Shape(
      (EXT, FIST, FIST, FIST), (-35.0, 5.0, 0.0, 0.0, 10.0), (0.0, 0.0, 90.0)
  )
  s["*"] = Shape(
      (
          _f(30, 60, 40, 10),
          _f(30, 60, 40),
          _f(30, 60, 40, -8),
          _f(30, 60, 40, -14),
      ),
      (-15.0, 30.0, 20.0, 20.0, 40.0),
  )
  s["'"] = Shape((_f(0, 90, 60, 10), _f(0, 90, 60, -8), FIST, FIST), _HOLD_RING)
  missing = set(vocab.CHARACTERS) - set(s)
  assert not missing, missing
  return s


def _solve_thumbs(
    targets: np.ndarray,
    priors: np.ndarray,
    geometry: HandGeometry,
    steps: int = 80,
    stiffness: float = 0.4,
) -> np.ndarray:
  """Thumb angles [S, 5] (deg) whose tips reach targets [S, 3].

  Levenberg-Marquardt on |tip - target|^2 + stiffness^2 |angles - prior|^2
  (cm and radians), batched over shapes; the prior keeps each solution in
  the intended posture.
  """
  prior = np.deg2rad(priors)
  lo, hi = np.deg2rad(LOWER[THUMB]), np.deg2rad(UPPER[THUMB])

  def residual(x):
    tip = _thumb_points(x, geometry)[..., -1, :]
    return np.concatenate([tip - targets, stiffness * (x - prior)], -1)

  x, eps = prior.copy(), 1e-5
  for _ in range(steps):
    r = residual(x)
    jac = np.stack(
        [(residual(x + eps * np.eye(5)[i]) - r) / eps for i in range(5)], -1
    )  # [S, 8, 5]
    jtj = np.swapaxes(jac, 1, 2) @ jac + 1e-3 * np.eye(5)
    step = np.linalg.solve(jtj, -np.einsum("sri,sr->si", jac, r)[..., None])
    x = np.clip(x + step[..., 0], lo, hi)
  return np.rad2deg(x)


def _thumb_target(shape: Shape, fingers: np.ndarray) -> np.ndarray:
  """Where a Touch puts the thumb tip, given the shape's finger points."""
  joints = [landmark(finger, joint) for finger, joint in shape.thumb.joints]
  return fingers[joints].mean(0) + shape.thumb.offset


@functools.cache
def _canonical() -> np.ndarray:
  shapes = [_shapes()[ch] for ch in vocab.CHARACTERS]
  poses = np.array(
      [np.ravel(s.fingers).tolist() + [0.0] * 5 + list(s.wrist) for s in shapes]
  )
  touch = [i for i, s in enumerate(shapes) if isinstance(s.thumb, Touch)]
  fixed = [i for i in range(len(shapes)) if i not in touch]
  poses[fixed, THUMB] = [shapes[i].thumb for i in fixed]
  fingers = hand_frame_points(poses[touch])
  targets = np.stack(
      [_thumb_target(shapes[i], f) for i, f in zip(touch, fingers)]
  )
  priors = np.array([shapes[i].thumb.prior for i in touch])
  poses[touch, THUMB] = _solve_thumbs(targets, priors, DEFAULT_GEOMETRY)
  poses = clip(poses)
  poses.flags.writeable = False
  return poses


def canonical_poses() -> np.ndarray:
  """[59, POSE_SIZE] read-only: the canonical pose of each vocabulary id."""
  return _canonical()


def canonical_pose(symbol: str) -> np.ndarray:
  return _canonical()[vocab.CHAR_TO_ID[symbol]]


REST_POSE = np.array(RELAXED * 4 + T_RELAXED + (60.0, 20.0, 20.0))
"""The hand lowered before and after spelling."""
OTHER_HAND_POSE = np.array(RELAXED * 4 + T_RELAXED + (80.0, -10.0, 30.0))
"""The non-dominant hand resting low."""

MOVING = frozenset("jz")


def _ease(t):
  return 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))


def _waypoints(t: np.ndarray, points: Sequence[Sequence[float]]) -> np.ndarray:
  """Eased piecewise-linear path through `points` for t in [0, 1]."""
  points = np.asarray(points, np.float64)
  n = len(points) - 1
  seg = np.minimum((np.asarray(t) * n).astype(int), n - 1)
  local = _ease(np.asarray(t) * n - seg)[..., None]
  return points[seg] + local * (points[seg + 1] - points[seg])


def motion(symbol: str, t: np.ndarray) -> np.ndarray:
  """[..., 6] wrist offset for progress t in [0, 1] through a letter:
  position (cm; x, y, z world) and wrist angles (deg; pitch, yaw, roll).

  j: the pinky traces a J (down, then hooking inwards while the wrist
  turns); z: the index traces a Z (as the signer writes it, so mirrored for
  the viewer). Static symbols do not move.
  """
  t = np.asarray(t, np.float64)
  out = np.zeros(t.shape + (6,))
  if symbol == "j":
    down = _ease(t / 0.6)
    hook = _ease((t - 0.4) / 0.6)
    out[..., 1] = -5.0 * down
    out[..., 0] = 3.0 * hook
    out[..., 4] = 50.0 * hook
    out[..., 5] = -40.0 * _ease(t)
  elif symbol == "z":
    out[..., :2] = _waypoints(t, [(0, 0), (-4, 0), (0, -4), (-4, -4)])
  return out
