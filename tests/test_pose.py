"""`asl_vq.data.pose`: .pose files to and from the project's hands."""

import numpy as np
import pytest
from pose_format.numpy import NumPyPoseBody
from pose_format import Pose
from pose_format.pose_header import PoseHeader
from pose_format.pose_header import PoseHeaderComponent
from pose_format.pose_header import PoseHeaderDimensions
from pose_format.pose_visualizer import PoseVisualizer

from asl_vq.data import pose

W, H = 640, 480


def _hands(t=6, seed=0):
  hands = (
      np.random.default_rng(seed)
      .uniform(0.05, 0.95, (t, 42, 2))
      .astype(np.float32)
  )
  hands[1, :21] = np.nan  # no left hand
  hands[2] = np.nan  # no hand at all
  hands[4, 30] = np.nan  # one undetected point
  return hands


def _read_with_pose_format(path):
  with open(path, "rb") as f:
    return Pose.read(f.read())


def test_written_file_reads_back_with_pose_format_and_the_module(tmp_path):
  hands = _hands()
  path = tmp_path / "a.pose"
  pose.write(path, hands, 25.0, width=W, height=H)

  p = _read_with_pose_format(path)
  assert [c.name for c in p.header.components] == list(pose.COMPONENTS)
  for c in p.header.components:
    assert c.points == list(pose.HAND_POINTS) and len(c.limbs) == 21
  assert (p.header.dimensions.width, p.header.dimensions.height) == (W, H)
  assert p.body.fps == 25.0 and p.body.data.shape == (6, 1, 42, 2)
  detected = ~np.isnan(hands).any(-1)
  np.testing.assert_array_equal(p.body.confidence[:, 0] > 0, detected)
  np.testing.assert_allclose(
      p.body.data.data[:, 0][detected], (hands * [W, H])[detected], rtol=1e-6
  )

  back, fps = pose.read(path)
  assert fps == 25.0 and back.dtype == np.float32 and back.shape == (6, 42, 2)
  np.testing.assert_array_equal(np.isnan(back), np.isnan(hands))
  np.testing.assert_allclose(back, hands, rtol=1e-6)


def _component(name, points, fmt="XYZC"):
  return PoseHeaderComponent(name, points, [(0, 1)], [(255, 0, 0)], fmt)


def test_holistic_file_reads_as_normalised_hands(tmp_path):
  """As pose-format's Holistic estimator writes: pixels, XYZC, body and
  face around the hands, a missing hand as zeros with confidence 0."""
  hands = _hands(t=5)
  # The right hand's points stored in another order, found by name.
  right_order = np.random.default_rng(1).permutation(21)
  components = [
      _component("POSE_LANDMARKS", [f"B{i}" for i in range(33)]),
      _component("FACE_LANDMARKS", [str(i) for i in range(12)]),
      _component("LEFT_HAND_LANDMARKS", list(pose.HAND_POINTS)),
      _component(
          "RIGHT_HAND_LANDMARKS", [pose.HAND_POINTS[i] for i in right_order]
      ),
      _component("POSE_WORLD_LANDMARKS", [f"B{i}" for i in range(33)]),
  ]
  header = PoseHeader(0.2, PoseHeaderDimensions(W, H, 1000), components)
  people, points = 2, header.total_points()
  rng = np.random.default_rng(2)
  data = rng.uniform(0, 500, (5, people, points, 3)).astype(np.float32)
  confidence = np.ones((5, people, points), np.float32)
  stored = np.concatenate([hands[:, :21], hands[:, 21:][:, right_order]], 1)
  missing = np.isnan(stored).any(-1)
  first_hand = 33 + 12
  hand = slice(first_hand, first_hand + 42)
  data[:, 0, hand, :2] = np.where(missing[..., None], 0.0, stored * [W, H])
  confidence[:, 0, hand] = ~missing
  path = tmp_path / "holistic.pose"
  with open(path, "wb") as f:
    Pose(header, NumPyPoseBody(30.0, data, confidence)).write(f)

  back, fps = pose.read(path)
  assert fps == 30.0
  np.testing.assert_array_equal(np.isnan(back), np.isnan(hands))
  np.testing.assert_allclose(back, hands, rtol=1e-5)


def test_one_openpose_hand_leaves_the_other_nan(tmp_path):
  header = PoseHeader(
      0.2,
      PoseHeaderDimensions(100, 200, 0),
      [
          _component("pose_keypoints_2d", [f"B{i}" for i in range(25)], "XYC"),
          _component(
              "hand_right_keypoints_2d", [f"R{i}" for i in range(21)], "XYC"
          ),
      ],
  )
  data = np.zeros((3, 1, 46, 2), np.float32)
  data[:, 0, 25:] = np.arange(42, dtype=np.float32).reshape(21, 2)
  path = tmp_path / "openpose.pose"
  with open(path, "wb") as f:
    Pose(header, NumPyPoseBody(24.0, data, np.ones((3, 1, 46)))).write(f)
  back, _ = pose.read(path)
  assert np.isnan(back[:, :21]).all()
  np.testing.assert_allclose(
      back[0, 21:], np.arange(42).reshape(21, 2) / [100, 200]
  )


def _write_header(path, components, width=W):
  header = PoseHeader(0.2, PoseHeaderDimensions(width, H, 0), components)
  points = header.total_points()
  with open(path, "wb") as f:
    Pose(
        header,
        NumPyPoseBody(
            30.0,
            np.zeros((2, 1, points, 2), np.float32),
            np.ones((2, 1, points), np.float32),
        ),
    ).write(f)


def test_a_header_without_hands_is_one_clear_error(tmp_path):
  path = tmp_path / "body.pose"
  _write_header(path, [_component("POSE_LANDMARKS", ["A", "B"], "XYC")])
  with pytest.raises(pose.PoseFileError) as e:
    pose.read(path)
  assert isinstance(e.value, ValueError)
  message = str(e.value)
  assert message.startswith(
      f"{path}: the header has no 21-point left or "
      "right hand component (components: "
      "POSE_LANDMARKS)"
  )
  assert "LEFT_HAND_LANDMARKS and RIGHT_HAND_LANDMARKS" in message


def test_bad_files_are_clear_errors(tmp_path):
  path = tmp_path / "no_size.pose"
  _write_header(
      path,
      [_component("LEFT_HAND_LANDMARKS", pose.HAND_POINTS, "XYC")],
      width=0,
  )
  with pytest.raises(pose.PoseFileError, match="dimensions are 0 x 480"):
    pose.read(path)
  garbage = tmp_path / "garbage.pose"
  garbage.write_bytes(b"not a pose file")
  with pytest.raises(pose.PoseFileError, match="not a readable .pose file"):
    pose.read(garbage)
  with pytest.raises(ValueError, match=r"hands must be \[T, 42, 2\]"):
    pose.write(tmp_path / "x.pose", np.zeros((3, 21, 2)), 30.0)


def test_pose_visualizer_draws_a_written_file(tmp_path):
  pytest.importorskip("cv2")
  path = tmp_path / "a.pose"
  pose.write(path, _hands(), 30.0, width=W, height=H)
  frames = list(PoseVisualizer(_read_with_pose_format(path)).draw())
  assert len(frames) == 6 and frames[0].shape == (H, W, 3)
  assert (frames[0] != 255).any() and (frames[2] == 255).all()
