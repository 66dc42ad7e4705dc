r"""How far synthetic hands are from real ones: a two-sample test and the
statistics that differ.

  python -m asl_vq.data.realism --real=letters.npz,signs.npz \
      [--synthetic=DIR] [--out=realism.json]

`--real` are `.npz` files of real MediaPipe hands (each key a clip, float32
[T, 42, 2] in the project's layout, NaN where no hand was found), such as
`../shared/realhands/*.npz` (not shipped). A key `<group>/<name>` puts the
clip in `<group>` (a signer, or a language recorded by one signer); the keys
of a file without `/` are one group (their signers unknown, they are never
split between fitting and scoring). `--synthetic` is a Kaggle-layout dataset
directory (default: the embedded synthetic dataset of the `cpu` preset).

Every hand of every frame is a sample: its 21 points translated to the wrist
and scaled by the palm's length (wrist to middle-finger knuckle), left hands
mirrored, in two views: as placed in the image, and turned upright (wrist to
middle knuckle pointing up). Per view, a gradient-boosted classifier
(scikit-learn's HistGradientBoostingClassifier) is fitted on real hands of
half the real groups against synthetic hands of half the synthetic signers,
and scored on the other halves: its ROC AUC (0.5: indistinguishable, 1:
always told apart), with a 95% interval from a bootstrap over the scored
groups. Then, per interpretable statistic, the Kolmogorov-Smirnov distance
(0: same distribution, 1: disjoint) between real and synthetic values: bone
length ratios, joint angles and their correlations, fingertip spread, hand
orientation, the knuckle line's slope (how far the palm is turned), speed,
acceleration and jitter of the wrist, detection drop-outs and two-hand rate.
The statistics pool every real file: motion and drop-outs compare like with
like only for sources in image fractions at their recorded frame rate (the
SpreadTheSign letters are shoulder-normalised and resampled to ~1 s).

Needs scikit-learn (the `measure` extra).
"""

from __future__ import annotations

import glob
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from absl import app
from absl import flags
from scipy import stats as sp_stats

from asl_vq import cli
from asl_vq import errors
from asl_vq import fileio
from asl_vq.data import hand_model
from asl_vq.data import reader

_WRIST, _MIDDLE_MCP, _INDEX_MCP, _PINKY_MCP = 0, 9, 5, 17
_TIPS = (4, 8, 12, 16, 20)
# (parent, joint, child) whose 2D angle is a finger joint's bend: each
# finger's first three joints (thumb 1-4, index 5-8, ... pinky 17-20).
_JOINTS = tuple(
    (parent, joint, joint + 1)
    for base in (1, 5, 9, 13, 17)
    for parent, joint in ((0, base), (base, base + 1), (base + 1, base + 2))
)
VIEWS = ("as_placed", "upright")


def load_real(paths: Sequence[str]) -> list[tuple[str, np.ndarray]]:
  """(group, clip [T, 42, 2]) of every key of every `.npz` in `paths`.

  Raises:
    ValueError: a file holds an array that is not [T, 42, 2].
  """
  out = []
  for path in paths:
    with np.load(path) as f:
      for key in f.files:
        clip = np.asarray(f[key], np.float32)
        if clip.ndim != 3 or clip.shape[1:] != (42, 2):
          raise errors.UserError(
              f"{path}: {key} is {clip.shape}, not [T, 42, 2]"
          )
        group = key.split("/", 1)[0] if "/" in key else "*"
        out.append((f"{os.path.basename(path)}:{group}", clip))
  return out


def load_synthetic(data_dir: str) -> list[tuple[str, np.ndarray]]:
  """(signer, sequence [T, 42, 2]) of a Kaggle-layout dataset's `train`."""
  meta = reader.read_metadata(data_dir, "train")
  out = []
  for rel_path, rows in meta.files():
    hands = reader.read_hands(os.path.join(data_dir, rel_path))
    for r in rows:
      sid = int(meta.sequence_id[r])
      if sid in hands:
        out.append((str(int(meta.participant_id[r])), hands[sid]))
  return out


def hand_samples(clip: np.ndarray):
  """The present hands of a clip: (points [N, 21, 2] as found, hand index
  0 left / 1 right [N], frame [N])."""
  points, side, frame = [], [], []
  for h in range(2):
    hand = clip[:, 21 * h : 21 * (h + 1)]
    present = ~np.isnan(hand).any(axis=(1, 2))
    points.append(hand[present])
    side.append(np.full(present.sum(), h))
    frame.append(np.flatnonzero(present))
  return (np.concatenate(points), np.concatenate(side), np.concatenate(frame))


def normalise(
    points: np.ndarray, side: np.ndarray, upright: bool
) -> np.ndarray:
  """[N, 21, 2] -> wrist at 0, palm length 1, left hands mirrored;
  `upright`: rotated so that wrist -> middle knuckle points up (-y)."""
  p = points - points[:, _WRIST : _WRIST + 1]
  p[side == 0, :, 0] *= -1  # a mirrored left hand looks like a right one.
  palm = p[:, _MIDDLE_MCP]
  length = np.maximum(np.linalg.norm(palm, axis=-1), 1e-9)
  p = p / length[:, None, None]
  if upright:
    # palm = R(angle) up with up = (0, -1): turn every point by -angle.
    angle = np.arctan2(palm[:, 0], -palm[:, 1])
    c, s = np.cos(angle), -np.sin(angle)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    p = np.einsum("nij,nkj->nki", rot, p)
  return p


def _angle(a, b, c):
  u, v = a - b, c - b
  cos = (u * v).sum(-1) / np.maximum(
      np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), 1e-9
  )
  return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def frame_statistics(
    points: np.ndarray, side: np.ndarray
) -> dict[str, np.ndarray]:
  """Per hand sample: bone ratios, joint angles, spread, orientation and
  palm aspect (names -> [N])."""
  p = normalise(points, side, upright=False)
  out = {}
  for a, b in hand_model.BONES:
    out[f"bone {a}-{b} / palm"] = np.linalg.norm(p[:, b] - p[:, a], axis=-1)
  for a, b, c in _JOINTS:
    out[f"angle at {b}"] = _angle(p[:, a], p[:, b], p[:, c])
  out["tip spread (thumb-pinky) / palm"] = np.linalg.norm(
      p[:, _TIPS[0]] - p[:, _TIPS[-1]], axis=-1
  )
  out["|orientation| (deg from up)"] = np.abs(
      np.degrees(np.arctan2(p[:, _MIDDLE_MCP, 0], -p[:, _MIDDLE_MCP, 1]))
  )
  width = np.abs(points[:, _INDEX_MCP] - points[:, _PINKY_MCP])
  out["knuckle line |dx| / |dy| (palm turn)"] = width[:, 0] / np.maximum(
      width[:, 1], 1e-9
  )
  return out


def clip_statistics(clip: np.ndarray) -> dict[str, np.ndarray]:
  """Per clip or per frame step: motion, jitter, drop-outs, hands seen."""
  out = {
      k: []
      for k in (
          "wrist speed / palm",
          "wrist acceleration / palm",
          "wrist jitter / palm",
          "missing frames of a seen " "hand",
          "frames with two hands",
      )
  }
  seen = ~np.isnan(clip).all(-1)  # [T, 42]
  both = seen[:, :21].any(1) & seen[:, 21:].any(1)
  out["frames with two hands"].append(np.array([both.mean()]))
  for h in range(2):
    hand = clip[:, 21 * h : 21 * (h + 1)]
    present = ~np.isnan(hand).any(axis=(1, 2))
    if present.sum() < 4:
      continue
    out["missing frames of a seen hand"].append(
        np.array(
            [
                1
                - present[
                    np.argmax(present) : len(present) - np.argmax(present[::-1])
                ].mean()
            ]
        )
    )
    palm = np.nanmedian(
        np.linalg.norm(hand[:, _MIDDLE_MCP] - hand[:, _WRIST], axis=-1)
    )
    wrist = hand[:, _WRIST] / max(palm, 1e-9)
    v = np.diff(wrist, axis=0)
    a = np.diff(v, axis=0)
    out["wrist speed / palm"].append(np.linalg.norm(v, axis=-1))
    out["wrist acceleration / palm"].append(np.linalg.norm(a, axis=-1))
    smooth = (wrist[:-2] + wrist[1:-1] + wrist[2:]) / 3
    out["wrist jitter / palm"].append(
        np.linalg.norm(wrist[1:-1] - smooth, axis=-1)
    )
  return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def _gather(clips: Iterable[tuple[str, np.ndarray]]):
  groups, samples, sides, frame_stats, clip_stats = [], [], [], [], []
  for group, clip in clips:
    points, side, _ = hand_samples(clip)
    groups.append(np.full(len(points), group, object))
    samples.append(points)
    sides.append(side)
    frame_stats.append(frame_statistics(points, side))
    clip_stats.append(clip_statistics(clip))
  merge = lambda parts: {
      k: np.concatenate([p[k] for p in parts]) for k in parts[0]
  }
  return dict(
      groups=np.concatenate(groups),
      points=np.concatenate(samples),
      sides=np.concatenate(sides),
      frame=merge(frame_stats),
      clip=merge(clip_stats),
  )


def _sklearn():
  try:
    # pylint: disable-next=g-import-not-at-top
    from sklearn import ensemble, metrics as sk_metrics
  except ImportError:
    raise errors.MissingExtra(
        "asl_vq.data.realism needs scikit-learn: pip install -e " "'.[measure]'"
    ) from None
  return ensemble, sk_metrics


def _split_groups(groups: np.ndarray, rng) -> np.ndarray:
  """bool per sample: its group is in the fitting half of the groups."""
  names = np.unique(groups)
  first = set(rng.permutation(names)[: len(names) // 2])
  return np.array([g in first for g in groups])


def two_sample_auc(
    real: Mapping[str, Any],
    synthetic: Mapping[str, Any],
    *,
    upright: bool,
    seed: int = 0,
    max_samples: int = 20000,
    bootstrap: int = 200,
) -> dict[str, float]:
  """The classifier test of the module docstring, one view: AUC and its
  95% interval from a bootstrap over the scored groups of each side.

  Raises:
    ValueError: a side has fewer than 2 groups (none could be scored).
  """
  ensemble, sk_metrics = _sklearn()
  rng = np.random.default_rng(seed)

  def part(data, label):
    x = normalise(data["points"], data["sides"], upright).reshape(
        len(data["points"]), -1
    )
    keep = rng.permutation(len(x))[:max_samples]
    groups = data["groups"][keep]
    if len(np.unique(groups)) < 2:
      raise errors.UserError(
          f"the {'real' if label else 'synthetic'} hands hold "
          "fewer than 2 groups: nothing to fit on one and score "
          "on another"
      )
    return x[keep], np.full(len(keep), label), groups

  xr, yr, gr = part(real, 1)
  xs, ys, gs = part(synthetic, 0)
  fr, fs = _split_groups(gr, rng), _split_groups(gs, rng)
  model = ensemble.HistGradientBoostingClassifier(
      max_iter=200, random_state=seed
  )
  model.fit(np.concatenate([xr[fr], xs[fs]]), np.concatenate([yr[fr], ys[fs]]))
  scores = [
      model.predict_proba(xr[~fr])[:, 1],
      model.predict_proba(xs[~fs])[:, 1],
  ]
  labels = [np.ones(len(scores[0])), np.zeros(len(scores[1]))]
  auc = float(
      sk_metrics.roc_auc_score(np.concatenate(labels), np.concatenate(scores))
  )
  # Per side, the scored samples of each group; groups drawn per side.
  rows = [
      {g: np.flatnonzero(groups == g) for g in np.unique(groups)}
      for groups in (gr[~fr], gs[~fs])
  ]
  boot = []
  for _ in range(bootstrap):
    picked = [
        np.concatenate([r[g] for g in rng.choice(list(r), len(r))])
        for r in rows
    ]
    boot.append(
        sk_metrics.roc_auc_score(
            np.concatenate([labels[k][picked[k]] for k in range(2)]),
            np.concatenate([scores[k][picked[k]] for k in range(2)]),
        )
    )
  low, high = np.percentile(boot, [2.5, 97.5])
  return dict(
      auc=auc,
      low=float(low),
      high=float(high),
      real_groups_scored=len(rows[0]),
      synthetic_groups_scored=len(rows[1]),
      real_groups_fitted=int(len(np.unique(gr[fr]))),
      synthetic_groups_fitted=int(len(np.unique(gs[fs]))),
  )


def statistic_distances(
    real: Mapping[str, Any], synthetic: Mapping[str, Any]
) -> list[dict[str, Any]]:
  """Per statistic: real and synthetic medians and the Kolmogorov-Smirnov
  distance of their distributions."""
  rows = []
  for kind in ("frame", "clip"):
    for name, r in real[kind].items():
      s = synthetic[kind][name]
      r, s = r[np.isfinite(r)], s[np.isfinite(s)]
      if len(r) < 2 or len(s) < 2:
        continue
      rows.append(
          dict(
              statistic=name,
              real=float(np.median(r)),
              synthetic=float(np.median(s)),
              ks=float(sp_stats.ks_2samp(r, s).statistic),
          )
      )
  return rows


def angle_correlation_difference(
    real: Mapping[str, Any], synthetic: Mapping[str, Any]
) -> float:
  """Mean |difference| between the real and synthetic correlation matrices
  of the joint angles, over the pairs of distinct angles (0: the angles
  move together alike)."""
  angles = [k for k in real["frame"] if k.startswith("angle at")]
  corr = lambda d: np.corrcoef(np.stack([d["frame"][k] for k in angles]))
  off = ~np.eye(len(angles), dtype=bool)
  return float(np.nanmean(np.abs(corr(real) - corr(synthetic))[off]))


def measure(real_clips, synthetic_clips, seed: int = 0) -> dict[str, Any]:
  """The module docstring's figures for lists of (group, clip [T, 42, 2])."""
  _sklearn()  # before the slow part.
  real, synthetic = _gather(real_clips), _gather(synthetic_clips)
  return dict(
      real_hands=int(len(real["points"])),
      synthetic_hands=int(len(synthetic["points"])),
      auc={
          v: two_sample_auc(real, synthetic, upright=v == "upright", seed=seed)
          for v in VIEWS
      },
      statistics=statistic_distances(real, synthetic),
      angle_correlation_difference=angle_correlation_difference(
          real, synthetic
      ),
  )


def report(result: Mapping[str, Any]) -> str:
  """`measure`'s figures as lines of text, the statistics by KS distance."""
  lines = [
      f"{result['real_hands']} real and {result['synthetic_hands']} "
      "synthetic hand frames"
  ]
  for view, a in result["auc"].items():
    lines.append(
        f"  classifier AUC, {view}: {a['auc']:.3f} (95% "
        f"{a['low']:.3f}-{a['high']:.3f}; scored on "
        f"{a['real_groups_scored']} real groups, "
        f"{a['synthetic_groups_scored']} synthetic signers)"
    )
  lines.append(
      "  joint angle correlations, mean |real - synthetic|: "
      f"{result['angle_correlation_difference']:.3f}"
  )
  lines.append(
      f"  {'statistic':48s} {'real':>9s} {'synthetic':>9s} " f"{'KS':>5s}"
  )
  for r in sorted(result["statistics"], key=lambda r: -r["ks"]):
    lines.append(
        f"  {r['statistic']:48s} {r['real']:9.3f} "
        f"{r['synthetic']:9.3f} {r['ks']:5.2f}"
    )
  return "\n".join(lines)


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a program, so importing the module defines no flags."""
  flags.DEFINE_list(
      "real",
      None,
      ".npz files of real hands (each key a "
      "[T, 42, 2] clip; <group>/<name> keys).",
  )
  flags.DEFINE_string(
      "synthetic",
      "",
      "A Kaggle-layout dataset; default: "
      "the embedded synthetic dataset of the cpu preset.",
  )
  flags.DEFINE_integer("seed", 0, "Group halves, subsamples, bootstrap.")
  flags.DEFINE_string("out", "", "Also write the figures as JSON here.")
  flags.mark_flags_as_required(["real"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  data_dir = FLAGS.synthetic
  if not data_dir:
    # pylint: disable-next=g-import-not-at-top
    from asl_vq import config_lib
    from asl_vq.data import datasets  # pylint: disable=g-import-not-at-top

    data_dir = datasets.embedded_dataset(
        config_lib.load("tokenizer", "cpu").data.synthetic.to_dict()
    )
  paths = [p for pattern in FLAGS.real for p in sorted(glob.glob(pattern))]
  if not paths:
    raise errors.UserError(f"--real={','.join(FLAGS.real)}: no such file")
  result = measure(load_real(paths), load_synthetic(data_dir), FLAGS.seed)
  result.update(real=paths, synthetic=data_dir, seed=FLAGS.seed)
  print(report(result))
  if FLAGS.out:
    fileio.write_json(FLAGS.out, result)


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
