"""The embedded dataset: synthetic fingerspelling in the Kaggle layout.

A stand-in for the competition's data, so that training, tests and benchmarks
run anywhere with no download, on data with known ground truth. Each sequence
is a signer spelling a random address, phone number or URL with the kinematic
hand of `hand_model`: one handshape per symbol, personal bone lengths, speed,
style, handedness and camera, eased transitions, jitter and lost detections.

Only the hands are modelled: the face and pose columns are all NaN. The
project reads the 42 hand points only, and a modelled body would make the
files ~10x larger and slower to write for no use.

  python -m asl_vq.data.synthetic --out=DIR --num_sequences=N --seed=S
  python -m asl_vq.data.synthetic --preview=data/handshapes.png
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from typing import NamedTuple, Sequence

import numpy as np
import pyarrow.parquet as pq
import tqdm

from asl_vq import errors
from asl_vq import plotting
from asl_vq import vocab
from asl_vq.data import hand_model as hm
from asl_vq.data import layout

# Independent random streams derived from the seed.
_SIGNERS, _META, _SEQUENCES = 1, 2, 3
_LEFT, _RIGHT = 0, 1  # Slots of the hands array: left_hand, right_hand.


def _knob(default, help_text: str):
  """A `SyntheticConfig` field: its default and its flag's help
  (`_define_flags`)."""
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """The dataset's size and difficulty knobs (also the CLI flags)."""

  num_signers: int = _knob(40, "Signers in the population.")
  sequences_per_file: int = _knob(1000, "Sequences per landmark parquet file.")
  frames_per_char: float = _knob(
      10.0, "Mean frames per character (30 fps); a letter takes at least 2."
  )
  jitter: float = _knob(
      0.015, "Landmark noise std, relative to the hand's length in the image."
  )
  drop_rate: float = _knob(
      0.06,
      "Share of spelling frames whose hand detection is lost (single + "
      "bursts).",
  )
  signer_variation: float = _knob(
      1.0,
      "Scales how much signers differ (size, proportions, style, speed, "
      "camera).",
  )
  left_handed_rate: float = _knob(0.1, "Share of left-handed signers.")
  other_hand_rate: float = _knob(
      0.3, "Share of signers whose resting hand is detected."
  )
  min_chars: int = _knob(10, "Shortest phrase.")
  max_chars: int = _knob(30, "Longest phrase.")
  nan_as_null: bool = _knob(
      False,
      "Store missing values as Parquet nulls (as pandas writes NaN) instead "
      "of float NaN.",
  )

  def __post_init__(self):
    if not (
        1 <= self.min_chars <= min(self.max_chars, 40) and self.max_chars >= 12
    ):  # So that phrases of that length exist.
      raise errors.UserError(
          "need 1 <= min_chars <= max_chars, min_chars <= 40 "
          "and max_chars >= 12"
      )
    if not 0 <= self.drop_rate <= 0.5:
      raise errors.UserError("drop_rate must be in [0, 0.5]")
    if self.num_signers < 1 or self.sequences_per_file < 1:
      raise errors.UserError("num_signers and sequences_per_file must be >= 1")
    if self.frames_per_char <= 0:
      raise errors.UserError("frames_per_char must be > 0")


# ------------------------------------------------------------------- phrases

_STREETS = (
    "hillcrest oak maple cedar pine elm lake park sunset river meadow "
    "highland willow forest spring valley ridge church mill grove franklin "
    "lincoln washington jefferson madison jackson main broad market union "
    "chestnut walnut cherry dogwood magnolia laurel aspen birch sycamore "
    "hickory prospect summit fairview woodland center harbor canyon mesa "
    "vista sierra orchard garden heritage liberty o'connor o'neil quincy "
    "quail juniper hazel zephyr oxford foxglove jasmine king york bayview "
    "brookside kirkwood aztec quarry zinnia"
).split()
_SUFFIXES = (
    "road street avenue drive lane court boulevard way place circle "
    "trail parkway terrace plaza square expressway rd st ave dr ln "
    "ct blvd hwy"
).split()
_DIRECTIONS = "north south east west n s e w northeast southwest".split()
_CITIES = (
    "springfield portland salem austin dayton fresno tulsa boise reno "
    "tacoma eugene akron omaha provo macon phoenix yonkers fargo "
    "kenosha zanesville"
).split()
_WORDS = (
    "example news shop blog data cloud photo music travel recipe "
    "health games learn code mail forum wiki store tech art sports "
    "weather video book pet home auto food green blue star sun moon "
    "city river apple smart fast open my the best world daily zone "
    "quiz jazz buzz pixel box fix joy key quick zoom jobs flex gym zen "
    "kiwi vybe"
).split()
_TLDS = "com org net edu io co us info gov me tv uk de".split()
_URL_TAILS = (
    "?q={w}",
    "?q={w}&p={d}",
    "#{w}",
    "#!/{w}",
    "%20{w}",
    ";sid={n}",
    "?price=${d}",
    "/[{w}",
    "/index.html",
    "?{w}={d}",
)


def _pick(rng: np.random.Generator, items: Sequence[str]) -> str:
  return items[rng.integers(len(items))]


def _digits(rng: np.random.Generator, n: int) -> str:
  return "".join(str(d) for d in rng.integers(0, 10, n))


def _address(rng: np.random.Generator) -> str:
  parts = [str(rng.integers(1, 100000))]
  if rng.random() < 0.4:
    parts.append(_pick(rng, _DIRECTIONS))
  parts += [_pick(rng, _STREETS), _pick(rng, _SUFFIXES)]
  text = " ".join(parts)
  extra = rng.random()
  if extra < 0.2:
    text += ", " + _pick(rng, _CITIES)
  elif extra < 0.3:
    text += f" apt {rng.integers(1, 500)}"
  elif extra < 0.38:
    text += f" #{rng.integers(1, 50)}"
  return text


def _phone(rng: np.random.Generator) -> str:
  a, b, c = (str(rng.integers(200, 1000)), _digits(rng, 3), _digits(rng, 4))
  formats = (
      f"+1-{a}-{b}-{c}",
      f"{a}-{b}-{c}",
      f"({a}) {b}-{c}",
      f"+1 {a} {b} {c}",
      f"{a}.{b}.{c}",
      f"*67 {a}-{b}-{c}",
      f"+44 {_digits(rng, 2)} {_digits(rng, 4)} {c}",
      f"1-800-{b}-{c}",
      f"+1-{a}-{b}-{c} ext {_digits(rng, 3)}",
  )
  return _pick(rng, formats)


def _name(rng: np.random.Generator) -> str:
  word = _pick(rng, _WORDS)
  r = rng.random()
  if r < 0.25:
    return word + _pick(rng, "-_.") + _pick(rng, _WORDS)
  if r < 0.4:
    return word + str(rng.integers(1, 100))
  return word


def _url(rng: np.random.Generator) -> str:
  domain = f"{_name(rng).replace('_', '-')}.{_pick(rng, _TLDS)}"
  if rng.random() < 0.2:
    return f"{_name(rng)}@{domain}"
  prefix = _pick(rng, ("", "www.", "https://", "http://www.", "https://www."))
  path = ""
  for _ in range(rng.integers(0, 3)):
    path += "/" + (
        f"~{_pick(rng, _WORDS)}" if rng.random() < 0.1 else _name(rng)
    )
  if rng.random() < 0.25:
    path += _pick(rng, _URL_TAILS).format(
        w=_pick(rng, _WORDS), n=rng.integers(1, 1000), d=rng.integers(1, 10)
    )
  return prefix + domain + path


def random_phrase(
    rng: np.random.Generator, min_chars: int = 10, max_chars: int = 30
) -> str:
  """An address, phone number or URL within the vocabulary and length."""
  kinds = (_address, _phone, _url)
  while True:
    phrase = kinds[rng.choice(3, p=(0.4, 0.25, 0.35))](rng)
    if min_chars <= len(phrase) <= max_chars:
      return phrase


# ------------------------------------------------------------------- signers


@dataclasses.dataclass(frozen=True)
class Camera:
  """A pinhole camera in front of the signer (world: cm, chest at 0)."""

  distance: float  # From the chest to the camera (cm).
  focal: np.ndarray  # [2] image widths, image heights per unit of depth.
  centre: np.ndarray  # [2] where the chest projects.
  rotation: np.ndarray  # [3, 3] small tilt of the camera.

  def project(self, world: np.ndarray) -> np.ndarray:
    """[..., 21, 3] world -> image x, y (normalised) and z relative to the
    wrist (MediaPipe's convention: same scale as x, negative = closer)."""
    p = world @ self.rotation.T
    depth = self.distance - p[..., 2]
    x = self.centre[0] + self.focal[0] * p[..., 0] / depth
    y = self.centre[1] - self.focal[1] * p[..., 1] / depth
    z = -(p[..., 2] - p[..., :1, 2]) * self.focal[0] / self.distance
    return np.stack([x, y, z], -1)


@dataclasses.dataclass(frozen=True)
class Signer:
  """One person: their hand, habits and recording set-up."""

  participant_id: int
  left_handed: bool
  geometry: hm.HandGeometry
  frames_per_char: float
  hold_fraction: float  # Share of a letter's frames held still.
  style: np.ndarray  # [59, POSE_SIZE] personal offsets of the shapes.
  position: np.ndarray  # [3] where the (right) hand spells, cm.
  slide: float  # Outward drift per letter, cm.
  camera: Camera
  jitter: float
  drop_rate: float
  shows_other_hand: bool


def _make_signer(
    participant_id: int, rng: np.random.Generator, config: SyntheticConfig
) -> Signer:
  v = config.signer_variation
  size = np.exp(rng.normal(0, 0.08 * v))
  joints = rng.normal(0, 5 * v, (59, 21)) + rng.normal(0, 4 * v, 21)
  wrist = rng.normal(0, 5 * v, (59, 3)) + rng.normal(0, v, 3) * (8, 12, 8)
  portrait = rng.random() < 0.8
  fy = 0.65 * np.exp(rng.normal(0, 0.12 * v))
  return Signer(
      participant_id=participant_id,
      left_handed=bool(rng.random() < config.left_handed_rate),
      geometry=hm.DEFAULT_GEOMETRY.perturbed(rng, size, 0.04 * v),
      frames_per_char=config.frames_per_char
      * float(np.clip(np.exp(rng.normal(0, 0.18 * v)), 0.6, 1.6)),
      hold_fraction=rng.uniform(0.35, 0.55),
      style=np.concatenate([joints, wrist], 1),
      position=np.array([-7.0, 6.0, 25.0]) + rng.normal(0, v, 3) * (3, 3, 4),
      slide=rng.normal(0.25, 0.15),
      camera=Camera(
          distance=85.0 + 8.0 * v * rng.normal(),
          focal=np.array([fy * (16 / 9 if portrait else 9 / 16), fy]),
          centre=np.array([0.5, 0.62]) + rng.normal(0, 0.04 * v, 2),
          rotation=hm.rotation(rng.normal(0, v, 3) * (5, 5, 4)),
      ),
      jitter=config.jitter * np.exp(rng.normal(0, 0.3)),
      drop_rate=config.drop_rate * np.exp(rng.normal(0, 0.4)),
      shows_other_hand=bool(rng.random() < config.other_hand_rate),
  )


def make_signers(config: SyntheticConfig, seed: int) -> list[Signer]:
  """The signer population; participant ids are distinct, like real ones."""
  rng = np.random.default_rng([seed, _SIGNERS])
  ids = rng.choice(np.arange(100, 10000), config.num_signers, replace=False)
  return [
      _make_signer(int(pid), np.random.default_rng([seed, _SIGNERS, k]), config)
      for k, pid in enumerate(ids)
  ]


def signer_pose(signer: Signer, symbol: str) -> np.ndarray:
  """The signer's personal version of a symbol's canonical pose."""
  i = vocab.CHAR_TO_ID[symbol]
  return hm.clip(hm.canonical_poses()[i] + signer.style[i])


# ----------------------------------------------------------------- sequences

_REST, _MOVE, _HOLD = 0, 1, 2  # Frame kinds.


@dataclasses.dataclass(frozen=True)
class SyntheticSequence:
  hands: np.ndarray  # [T, 2, 21, 3] float32 (left, right), NaN = undetected.
  letter: np.ndarray  # [T] int: phrase position being signed, -1 at rest.


def _ease(t):
  return 0.5 - 0.5 * np.cos(np.pi * t)


def _smooth_noise(
    rng: np.random.Generator, n: int, scale: np.ndarray, width: int = 6
) -> np.ndarray:
  """[n, len(scale)] slowly varying noise (moving sum of white noise)."""
  c = np.cumsum(rng.normal(size=(n + width, len(scale))), 0)
  return (c[width:] - c[:-width]) / np.sqrt(width) * scale


class _Timeline(NamedTuple):
  """Per frame: the keys blended from and to, and where in the phrase.

  Keys are 0 (rest), 1..n (the letters), n + 1 (rest again).
  """

  src: np.ndarray
  dst: np.ndarray
  weight: np.ndarray  # Of dst, eased.
  progress: np.ndarray  # Through the frame's move or hold, 0..1.
  kind: np.ndarray  # _REST, _MOVE or _HOLD.
  letter: np.ndarray  # Phrase position, -1 at rest.


def _timeline(
    phrase: str, signer: Signer, rng: np.random.Generator
) -> _Timeline:
  """Each letter is a move from the previous key, then a hold; j and z take
  longer. Before and after, the hand rests out of view, rises and falls."""
  n = len(phrase)
  length = signer.frames_per_char * np.exp(rng.normal(0, 0.15, n))
  length *= np.where([c in hm.MOVING for c in phrase], 1.5, 1.0)
  length = np.maximum(np.round(length), 2)
  move = np.maximum(np.round(length * (1 - signer.hold_fraction)), 1)
  hold = np.maximum(length - move, 1)
  # Rest, raising the hand into the first letter, lowering it, rest.
  pace = signer.frames_per_char / 10
  pre, move[0], fall, post = np.maximum(
      np.round(rng.uniform((2, 5, 5, 2), (15, 9, 9, 15)) * pace), 1
  )
  # Segments: (kind, from, to, letter, frames).
  segments = [(_REST, 0, 0, -1, pre)]
  for k in range(n):
    segments.append((_MOVE, k, k + 1, k, move[k]))
    segments.append((_HOLD, k + 1, k + 1, k, hold[k]))
  segments += [(_MOVE, n, n + 1, -1, fall), (_REST, n + 1, n + 1, -1, post)]
  kind, src, dst, letter, frames = (np.array(c) for c in zip(*segments))
  frames = frames.astype(int)
  seg = np.repeat(np.arange(len(segments)), frames)
  i = np.arange(len(seg)) - (np.cumsum(frames) - frames)[seg]
  moving = kind[seg] == _MOVE
  progress = np.where(
      moving, (i + 1) / frames[seg], i / np.maximum(frames[seg] - 1, 1)
  )
  return _Timeline(
      src=src[seg],
      dst=dst[seg],
      weight=np.where(moving, _ease(progress), 1.0),
      progress=progress,
      kind=kind[seg],
      letter=letter[seg],
  )


def _keyframes(phrase: str, signer: Signer, rng: np.random.Generator):
  """Poses [n + 2, POSE_SIZE] and wrist positions [n + 2, 3] of the keys."""
  n = len(phrase)
  ids = vocab.encode(phrase)
  poses = hm.canonical_poses()[ids] + signer.style[ids]
  poses = poses + rng.normal(0, 3.0, poses.shape)  # Each occurrence differs.
  rest = hm.REST_POSE[None]
  poses = hm.clip(np.concatenate([rest, poses, rest]))
  walk = np.cumsum(rng.normal(0, 0.5, (n, 3)), 0)
  walk[:, 0] -= signer.slide * np.arange(n)
  spelling = signer.position + walk + rng.normal(0, 0.3, (n, 3))
  rest_position = signer.position + (0.0, -28.0, -8.0)
  positions = np.concatenate(
      [rest_position[None], spelling, rest_position[None]]
  )
  return poses, positions


def _add_motion(
    pose: np.ndarray, position: np.ndarray, phrase: str, timeline: _Timeline
) -> None:
  """Adds the paths of j and z, and the bounce of doubled letters."""
  src, _, weight, progress, kind, letter = timeline
  n = len(phrase)
  chars = np.array(list(phrase))
  current = np.where(letter >= 0, chars[letter], "")
  previous = np.where(
      (src >= 1) & (src <= n), chars[np.clip(src - 1, 0, n - 1)], ""
  )
  for symbol in hm.MOVING:
    path = (kind == _HOLD) & (current == symbol)
    offset = hm.motion(symbol, progress[path])
    position[path] += offset[:, :3]
    pose[path, hm.WRIST] += offset[:, 3:]
    # The next move starts where the path ended.
    back = (kind == _MOVE) & (previous == symbol)
    end = hm.motion(symbol, np.ones(1))
    position[back] += end[:, :3] * (1 - weight[back, None])
    pose[back, hm.WRIST] += end[:, 3:] * (1 - weight[back, None])
  double = (kind == _MOVE) & (letter >= 1) & (current == previous)
  bump = np.sin(np.pi * progress[double])[:, None]
  position[double] += bump * (-2.5, 1.0, 0.0)  # Slides outwards and back.
  pose[double, hm.JOINTS] += (
      0.35 * bump * (hm.REST_POSE[hm.JOINTS] - pose[double, hm.JOINTS])
  )


def _detected(
    timeline: _Timeline, n: int, signer: Signer, rng: np.random.Generator
) -> np.ndarray:
  """Frames where the spelling hand is found: none at rest, partly while it
  rises and falls, then single dropped frames (more when moving) and bursts."""
  src, _, weight, _, kind, _ = timeline
  t = len(kind)
  seen = kind != _REST
  seen &= ~((kind == _MOVE) & (src == 0) & (weight < rng.uniform(0.1, 0.6)))
  seen &= ~((kind == _MOVE) & (src == n) & (weight > rng.uniform(0.4, 0.9)))
  single = signer.drop_rate / 2 * np.where(kind == _MOVE, 1.4, 0.6)
  seen &= rng.random(t) >= single
  burst = 5.0  # Mean length.
  for _ in range(rng.poisson(signer.drop_rate / 2 * t / burst)):
    start = rng.integers(t)
    seen[start : start + rng.geometric(1 / burst)] = False
  if not seen.any():  # A sequence always shows the hand somewhere.
    seen[kind == _HOLD] = True
  return seen


def _other_hand(t: int, signer: Signer, rng: np.random.Generator):
  """Where the resting left hand is seen [t], and its world points there."""
  seen = np.zeros(t, bool)
  if signer.shows_other_hand and rng.random() < 0.8:
    span = int(t * rng.uniform(0.3, 1.0))
    start = rng.integers(t - span + 1)
    seen[start : start + span] = rng.random(span) >= 0.15
  n = int(seen.sum())
  pose = (
      hm.OTHER_HAND_POSE
      + rng.normal(0, 5, hm.POSE_SIZE)
      + _smooth_noise(rng, n, np.full(hm.POSE_SIZE, 1.0))
  )
  position = (
      (-14.0, -30.0, 12.0)
      + rng.normal(0, 2, 3)
      + _smooth_noise(rng, n, np.full(3, 0.3))
  )
  world = hm.forward_kinematics(pose, signer.geometry) + position[:, None]
  world[..., 0] *= -1  # A left hand is the mirror image of a right one.
  return seen, world


_TREMOR = np.array([2.0] * 21 + [1.5] * 3)  # Degrees.


def synthesize_sequence(
    phrase: str, signer: Signer, rng: np.random.Generator
) -> SyntheticSequence:
  """One signer spelling `phrase`: both hands in image coordinates."""
  timeline = _timeline(phrase, signer, rng)
  src, dst, weight, _, kind, letter = timeline
  key_poses, key_positions = _keyframes(phrase, signer, rng)
  w = weight[:, None]
  pose = key_poses[src] + (key_poses[dst] - key_poses[src]) * w
  position = key_positions[src] + (key_positions[dst] - key_positions[src]) * w
  _add_motion(pose, position, phrase, timeline)
  t = len(kind)
  pose += _smooth_noise(rng, t, _TREMOR)
  position += _smooth_noise(rng, t, np.full(3, 0.3))
  seen = _detected(timeline, len(phrase), signer, rng)
  spelling = (
      hm.forward_kinematics(pose[seen], signer.geometry) + position[seen, None]
  )
  dominant = _LEFT if signer.left_handed else _RIGHT
  hands = np.full((t, 2, 21, 3), np.nan, np.float32)
  for slot, (found, world) in (
      (dominant, (seen, spelling)),
      (1 - dominant, _other_hand(t, signer, rng)),
  ):
    if signer.left_handed:
      world[..., 0] *= -1  # The whole scene is mirrored.
    hands[found, slot] = _observe(world, signer, rng)
  return SyntheticSequence(hands=hands, letter=letter)


def _observe(
    world: np.ndarray, signer: Signer, rng: np.random.Generator
) -> np.ndarray:
  """Projects and adds detector noise, relative to the hand's image size."""
  cam = signer.camera
  hand_size = (
      cam.focal[1]
      * signer.geometry.length
      / (cam.distance - signer.position[2])
  )
  aspect = cam.focal[0] / cam.focal[1]
  sigma = signer.jitter * hand_size * np.array([aspect, 1.0, 2.0 * aspect])
  out = cam.project(world)
  out += rng.normal(size=out.shape) * sigma
  out += rng.normal(size=out[:, :1].shape) * sigma / 2  # Whole-hand shake.
  out[..., 2] -= out[..., :1, 2]
  return out


# --------------------------------------------------------------------- files


# Dictionaries shrink the all-missing columns to nothing; noisy hand
# coordinates compress better split by byte.
_MISSING_COLUMNS = [c for c in layout.landmark_columns() if "_hand_" not in c]
_HAND_ENCODING = {
    f"{axis}_{side}_hand_{i}": "BYTE_STREAM_SPLIT"
    for axis in "xyz"
    for side in ("left", "right")
    for i in range(layout.NUM_HAND_POINTS)
}


def _write_file(
    path: str, rows: list[tuple[int, int, SyntheticSequence]], nan_as_null: bool
) -> int:
  """Writes (sequence_id, first frame, sequence) rows; returns the frames."""
  lengths = [len(seq.hands) for _, _, seq in rows]
  ids = np.repeat([sid for sid, _, _ in rows], lengths)
  frames = np.concatenate(
      [np.arange(f0, f0 + n) for (_, f0, _), n in zip(rows, lengths)]
  )
  hands = np.concatenate([seq.hands for _, _, seq in rows])
  table = layout.landmark_table(
      ids,
      frames,
      {"left_hand": hands[:, _LEFT], "right_hand": hands[:, _RIGHT]},
      nan_as_null=nan_as_null,
  )
  pq.write_table(
      table,
      path,
      compression="zstd",
      use_dictionary=_MISSING_COLUMNS,
      column_encoding=_HAND_ENCODING,
  )
  return len(frames)


def _unique_ids(
    rng: np.random.Generator, n: int, low: int, high: int
) -> np.ndarray:
  return low + rng.choice(high - low, n, replace=False)


def generate(
    out_dir: str,
    num_sequences: int,
    seed: int = 0,
    progress: bool = True,
    **knobs,
) -> dict:
  """Writes a synthetic dataset in the Kaggle layout; returns a summary.

  Sequence i depends only on (seed, i) and the knobs, so datasets of
  different sizes from one seed share their first sequences, and the same
  arguments give byte-identical metadata and identical landmarks.
  Besides the real layout it writes `synthetic.json` (the knobs and the
  signers, e.g. who is left-handed) to mark the data as synthetic.
  `progress` shows a progress bar over the sequences on stderr.
  """
  start = time.time()
  config = SyntheticConfig(**knobs)
  signers = make_signers(config, seed)
  meta = np.random.default_rng([seed, _META])
  share = meta.dirichlet(np.full(len(signers), 2.0))  # Some sign more.
  sequence_ids = _unique_ids(meta, num_sequences, 10**6, 2**31 - 1)
  num_files = -(-num_sequences // config.sequences_per_file)
  file_ids = _unique_ids(meta, num_files, 10**6, 2**31 - 1)
  _, directory = layout.SOURCES["train"]
  os.makedirs(os.path.join(out_dir, directory), exist_ok=True)
  metadata, num_frames, num_chars = [], 0, 0
  with tqdm.tqdm(
      total=num_sequences,
      desc="synthetic sequences",
      unit="seq",
      file=sys.stderr,
      disable=not progress,
  ) as bar:
    for f, file_id in enumerate(file_ids):
      rel_path = f"{directory}/{file_id}.parquet"
      rows = []
      first = f * config.sequences_per_file
      for i in range(
          first, min(first + config.sequences_per_file, num_sequences)
      ):
        rng = np.random.default_rng([seed, _SEQUENCES, i])
        signer = signers[rng.choice(len(signers), p=share)]
        phrase = random_phrase(rng, config.min_chars, config.max_chars)
        seq = synthesize_sequence(phrase, signer, rng)
        rows.append((int(sequence_ids[i]), int(rng.integers(0, 300)), seq))
        metadata.append(
            (
                rel_path,
                int(file_id),
                int(sequence_ids[i]),
                signer.participant_id,
                phrase,
            )
        )
        num_chars += len(phrase)
        bar.update()
      num_frames += _write_file(
          os.path.join(out_dir, rel_path), rows, config.nan_as_null
      )
  _write_metadata(out_dir, metadata, config, seed, signers)
  return dict(
      out_dir=out_dir,
      num_sequences=num_sequences,
      num_files=num_files,
      num_frames=num_frames,
      num_signers=len(signers),
      num_left_handed=sum(s.left_handed for s in signers),
      mean_frames=num_frames / max(num_sequences, 1),
      mean_chars=num_chars / max(num_sequences, 1),
      bytes=_disk_size(out_dir),
      seconds=time.time() - start,
  )


def _write_metadata(out_dir, metadata, config, seed, signers):
  csv_name, _ = layout.SOURCES["train"]
  with open(
      os.path.join(out_dir, csv_name), "w", newline="", encoding="utf-8"
  ) as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(layout.METADATA_COLUMNS)
    writer.writerows(metadata)
  with open(os.path.join(out_dir, layout.CHARACTER_MAP), "w") as f:
    json.dump(vocab.as_json_dict(), f)
  with open(os.path.join(out_dir, "synthetic.json"), "w") as f:
    json.dump(
        dict(
            generator="asl_vq.data.synthetic",
            seed=seed,
            config=dataclasses.asdict(config),
            signers=[
                dict(
                    participant_id=s.participant_id,
                    left_handed=s.left_handed,
                    frames_per_char=round(s.frames_per_char, 2),
                    hand_length_cm=round(s.geometry.length, 2),
                )
                for s in signers
            ],
        ),
        f,
        indent=1,
    )


def _disk_size(root: str) -> int:
  return sum(
      os.path.getsize(os.path.join(d, name))
      for d, _, names in os.walk(root)
      for name in names
  )


# ------------------------------------------------------------------- preview

PREVIEW_SYMBOLS = "aseghvkyl5"


def preview(
    path: str,
    symbols: str = PREVIEW_SYMBOLS,
    seed: int = 0,
    config: SyntheticConfig = SyntheticConfig(),
) -> None:
  """Draws each symbol's canonical shape and two signers' versions (one
  right-, one left-handed, as their cameras see them) to a PNG (its
  directory made if absent)."""
  plt = plotting.pyplot()
  population = make_signers(dataclasses.replace(config, num_signers=50), seed)
  chosen = [
      next(s for s in population if not s.left_handed),
      next(s for s in population if s.left_handed),
  ]
  fig, axes = plt.subplots(
      3, len(symbols), squeeze=False, figsize=(1.7 * len(symbols), 6.0)
  )
  for k, symbol in enumerate(symbols):
    canonical = hm.forward_kinematics(hm.canonical_pose(symbol))
    plotting.draw_hand(
        axes[0, k], canonical * (1, -1, 1), f"{symbol!r} canonical"
    )
    for row, signer in enumerate(chosen, 1):
      world = (
          hm.forward_kinematics(signer_pose(signer, symbol), signer.geometry)
          + signer.position
      )
      if signer.left_handed:
        world[..., 0] *= -1
      image = signer.camera.project(world)
      image[:, 0] *= signer.camera.focal[1] / signer.camera.focal[0]  # Pixels.
      hand = "left" if signer.left_handed else "right"
      plotting.draw_hand(
          axes[row, k], image, f"signer {signer.participant_id} ({hand})"
      )
  fig.suptitle("Synthetic fingerspelling handshapes (stand-in data)")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)


# ----------------------------------------------------------------------- CLI


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("out", None, "Dataset directory to write.")
  flags.DEFINE_integer("num_sequences", 1000, "Sequences to write.")
  flags.DEFINE_integer("seed", 0, "Random seed.")
  flags.DEFINE_string("preview", None, "Draw handshapes to this PNG.")
  define = {
      "int": flags.DEFINE_integer,
      "float": flags.DEFINE_float,
      "bool": flags.DEFINE_bool,
  }
  for field in dataclasses.fields(SyntheticConfig):
    define[field.type](field.name, field.default, field.metadata["help"])


def main(argv: Sequence[str]) -> None:
  from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  config = SyntheticConfig(
      **{
          f.name: values[f.name].value
          for f in dataclasses.fields(SyntheticConfig)
      }
  )
  if values.preview:
    preview(values.preview, seed=values.seed, config=config)
    logging.info("wrote %s", values.preview)
  if values.out:
    if values.num_sequences < 1:
      raise errors.UserError(
          f"--num_sequences={values.num_sequences}: give at " "least 1 sequence"
      )
    summary = generate(
        values.out,
        values.num_sequences,
        values.seed,
        **dataclasses.asdict(config),
    )
    logging.info("synthetic dataset: %s", summary)
  if not (values.out or values.preview):
    raise app.UsageError("give --out and/or --preview")


if __name__ == "__main__":
  from asl_vq import cli  # pylint: disable=g-import-not-at-top

  _define_flags()
  cli.run(main)
