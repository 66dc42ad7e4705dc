"""asl_vq.data.realism: hand normalisation and the two-sample test."""

import os

import numpy as np
import pytest

from asl_vq.data import realism

REAL = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "realhands"
)


def _clips(rng, n, shift=0.0, groups=8):
  """n clips of 12 frames of a right hand: a fixed template plus noise,
  its fingertips moved by `shift` palm lengths."""
  template = rng.normal(size=(21, 2))
  template[0], template[9] = (0, 0), (0, -1)
  template[[4, 8, 12, 16, 20], 0] += shift
  out = []
  for i in range(n):
    clip = np.full((12, 42, 2), np.nan, np.float32)
    clip[:, 21:] = 0.5 + 0.05 * (template + 0.05 * rng.normal(size=(12, 21, 2)))
    out.append((f"g{i % groups}", clip))
  return out, template


def test_normalise_puts_the_wrist_at_0_and_the_palm_at_length_1():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(5, 21, 2))
  side = np.array([0, 1, 0, 1, 1])
  placed = realism.normalise(points, side, upright=False)
  np.testing.assert_allclose(placed[:, 0], 0, atol=1e-12)
  np.testing.assert_allclose(np.linalg.norm(placed[:, 9], axis=-1), 1)
  # A left hand is mirrored: its x flips, its y does not.
  rel = points[0] - points[0, 0]
  scale = np.linalg.norm(rel[9])
  np.testing.assert_allclose(placed[0], rel * [-1, 1] / scale)
  upright = realism.normalise(points, side, upright=True)
  np.testing.assert_allclose(upright[:, 9], [[0, -1]] * 5, atol=1e-12)
  # Turning keeps every distance.
  np.testing.assert_allclose(
      np.linalg.norm(upright[:, 8] - upright[:, 4], axis=-1),
      np.linalg.norm(placed[:, 8] - placed[:, 4], axis=-1),
  )


@pytest.mark.slow
@pytest.mark.parametrize(
    "shift, low, high", [(0.0, 0.35, 0.65), (1.0, 0.95, 1.0)]
)
def test_two_sample_auc_is_chance_for_one_distribution_and_1_for_two(
    shift, low, high
):
  rng = np.random.default_rng(1)
  real, template = _clips(rng, 40)
  rng2 = np.random.default_rng(2)
  synthetic, _ = _clips(rng2, 40)
  # Same template for both unless shifted: rebuild the synthetic clips on it.
  for _, clip in synthetic:
    noise = 0.05 * rng2.normal(size=(12, 21, 2))
    moved = template.copy()
    moved[[4, 8, 12, 16, 20], 0] += shift
    clip[:, 21:] = 0.5 + 0.05 * (moved + noise)
  result = realism.measure(real, synthetic, seed=0)
  for view in realism.VIEWS:
    a = result["auc"][view]
    assert low <= a["auc"] <= high, result["auc"]
    assert a["low"] <= a["auc"] <= a["high"]
    # Every group fitted or scored, none both (8 groups a side).
    assert a["real_groups_fitted"] + a["real_groups_scored"] == 8
    assert a["synthetic_groups_fitted"] + a["synthetic_groups_scored"] == 8
  spread = {r["statistic"]: r["ks"] for r in result["statistics"]}
  assert (spread["bone 19-20 / palm"] > 0.5) == (shift > 0)


@pytest.mark.skipif(
    not os.path.isdir(REAL), reason="../shared/realhands is absent"
)
def test_real_files_load_with_their_groups():
  clips = realism.load_real([os.path.join(REAL, "spreadthesign_letters.npz")])
  groups = {g for g, _ in clips}
  assert len(clips) == 626 and len(groups) == 20
  assert all(c.shape[1:] == (42, 2) for _, c in clips)


def test_one_real_group_cannot_be_split():
  rng = np.random.default_rng(3)
  real, _ = _clips(rng, 6, groups=1)
  synthetic, _ = _clips(rng, 6, groups=3)
  with pytest.raises(ValueError, match="real hands hold fewer than 2 groups"):
    realism.measure(real, synthetic)
