"""Hand skeletons: which hands a frame shows."""

import numpy as np
import pytest

from asl_vq import plotting


def test_draw_hands_skips_absent_and_blob_hands():
  plt = plotting.pyplot()
  rng = np.random.default_rng(0)
  right = rng.normal(size=(21, 2)) * 2.0
  for left, drawn in (
      (np.zeros((21, 2)), 1),
      (np.full((21, 2), np.nan), 1),
      (rng.normal(size=(21, 2)) * 0.05, 1),  # a decoder blob.
      (rng.normal(size=(21, 2)) * 2.0 + 5, 2),
  ):
    fig, ax = plt.subplots()
    plotting.draw_hands(ax, np.concatenate([left, right]))
    assert len(ax.lines) == drawn * len(plotting.hm.BONES)
    plt.close(fig)
  with pytest.raises(ValueError, match=r"\[42, 2\]"):
    plotting.draw_hands(None, np.zeros((21, 2)))
