"""The token analyses: AMI, the per-letter selections, angles and figures."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score

import asl_vq
from asl_vq import report
import tiny_tokenizer
from asl_vq.analysis import analyze
from asl_vq.analysis import angles
from asl_vq.analysis import figures
from asl_vq.analysis import mutual_info
from asl_vq.data import datasets
from asl_vq.data import hand_model as hm


def _png_size(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n"
  return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("n", [1, 2, 5, 60])
def test_binary_ami_is_sklearns(n):
  rng = np.random.default_rng(n)
  x = rng.random((n, 24)) < rng.random(24)
  y = rng.random((n, 6)) < rng.random(6)
  x[:, 0], x[:, 1], y[:, 0] = False, True, True  # constant columns.
  y[:, 1] = x[:, 5]
  expected = np.array(
      [
          [
              adjusted_mutual_info_score(x[:, i], y[:, j])
              for j in range(y.shape[1])
          ]
          for i in range(x.shape[1])
      ]
  )
  np.testing.assert_allclose(mutual_info.binary_ami(x, y), expected, atol=1e-10)


def test_binary_ami_hand_computed():
  x = np.array([1, 1, 0, 0, 1, 0], bool)[:, None]
  np.testing.assert_allclose(mutual_info.binary_ami(x, x), 1.0)
  np.testing.assert_allclose(mutual_info.binary_ami(x, ~x), 1.0)
  # n = 4, independent 2x2: MI = 0; the cell count k ~ Hypergeometric(4, 2, 2)
  # has P(k = 2) = 1/6 and adds (2/4) log 2 per cell, so EMI = (1/3) log 2,
  # and AMI = (0 - EMI) / (log 2 - EMI) = -1/2.
  a = np.array([[1], [1], [0], [0]], bool)
  b = np.array([[1], [0], [1], [0]], bool)
  np.testing.assert_allclose(mutual_info.binary_ami(a, b), -0.5)
  # Independent in a big sample: about 0.
  big_a, big_b = np.tile(a, (100, 1)), np.tile(b, (100, 1))
  assert abs(mutual_info.binary_ami(big_a, big_b)[0, 0]) < 1e-2
  with pytest.raises(ValueError, match="same N"):
    mutual_info.binary_ami(a, b[:3])


def test_occurrence_counts_sequences_and_filters_rare_and_constant_ids():
  ids = [np.array([3, 3, 5]), np.array([5, 9]), np.array([3]), np.array([5])]
  occurs, values = mutual_info.occurrence(ids)
  np.testing.assert_array_equal(values, [3, 5, 9])
  np.testing.assert_array_equal(
      occurs, [[1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 1, 0]]
  )
  # 9 is in 1 sequence, 5 is missing from 1: both dropped at min_count 2.
  occurs, values = mutual_info.occurrence(ids, min_count=2)
  np.testing.assert_array_equal(values, [3])
  np.testing.assert_array_equal(occurs[:, 0], [1, 0, 1, 0])


def _phrases(rng, n, letter):
  """n phrases, `letter` in every other one, other letters at random."""
  others = [c for c in "abcdefghijklmnop" if c != letter]
  return [
      "".join(rng.choice(others, 6)) + (letter if i % 2 else "")
      for i in range(n)
  ]


def test_best_token_of_a_letter_is_the_token_that_occurs_with_it():
  rng = np.random.default_rng(0)
  phrases = _phrases(rng, 40, "q")
  first = [np.r_[rng.integers(0, 7, 5), [7] * ("q" in p)] for p in phrases]
  tokens, ami = mutual_info.table3(
      first, [p.upper() for p in phrases], codebook_size=8, min_count=3
  )["single"]
  q = ord("q") - ord("a")
  assert tokens[q] == 7 and ami[q] == pytest.approx(1.0)
  # Letters in no phrase have no best token.
  z = ord("z") - ord("a")
  assert tokens[z] == -1 and np.isnan(ami[z])
  assert (ami[np.isfinite(ami)] <= ami[q]).all()


def test_a_bigram_carries_what_no_single_token_does():
  np.testing.assert_array_equal(
      mutual_info.bigrams([1, 1, 2, 2, 1], 10), [12, 21]
  )
  rng = np.random.default_rng(1)
  phrases = _phrases(rng, 40, "x")
  # Tokens 1 and 2 occur in every sequence, "1 then 2" only with an x.
  first = [
      np.r_[
          rng.integers(3, 9, 3),
          [1, 1, 2] if "x" in p else [2, 2, 1],
          rng.integers(3, 9, 3),
      ]
      for p in phrases
  ]
  table = mutual_info.table3(first, phrases, codebook_size=10, min_count=3)
  x = ord("x") - ord("a")
  tokens, ami = table["single"]
  bigram, bigram_ami = table["bigram"]
  assert bigram[x] == 12 and bigram_ami[x] == pytest.approx(1.0)
  assert tokens[x] not in (1, 2) and ami[x] < 0.3


def test_flexion_of_hand_made_fingers():
  hand = np.zeros((3, 21, 2))
  mcp, pip, dip = (hm.landmark(hm.RING, j) for j in range(3))
  hand[:, mcp], hand[:, pip] = (0.0, 0.0), (0.0, 1.0)
  hand[0, dip] = (0.0, 2.5)  # straight.
  hand[1, dip] = (1.0, 1.0)  # a right angle.
  hand[2, dip] = (1.0, 2.0)  # 45 degrees.
  np.testing.assert_allclose(
      angles.flexion(hand, hm.RING, angles.PIP), [0.0, 90.0, 45.0], atol=1e-9
  )
  assert np.isnan(angles.flexion(np.zeros((21, 2)), hm.RING, angles.PIP))
  # The MCP joint's bone in starts at the wrist (landmark 0).
  hand[:, 0] = (0.0, -3.0)
  np.testing.assert_allclose(
      angles.flexion(hand[:1], hm.RING, angles.MCP), [0.0], atol=1e-9
  )
  assert angles.summary(np.array([10.0, 20.0, np.nan])) == "15.0 ± 5.0"


def test_dominant_hand_and_mean_hands():
  frames = np.zeros((4, 42, 2))
  frames[:, 21:] = np.arange(21)[:, None] * [1.0, 2.0]  # right: always.
  frames[:3, 21:] += np.array([[0.0], [2.0], [4.0]])[:, :, None]  # moving.
  frames[0, :21] = 5.0  # left: once.
  np.testing.assert_array_equal(angles.dominant_hand(frames), frames[:, 21:])
  mean = figures.mean_hands(frames)
  assert not mean[:21].any()  # seen in under half the frames.
  np.testing.assert_allclose(mean[21:], frames[:, 21:].mean(0))


def test_code_tree_splits_by_the_second_then_third_code():
  codes = np.array(
      [[4, 1, 7], [4, 1, 7], [4, 1, 8], [4, 2, 9], [4, 1, 7], [4, 3, 0]]
  )
  nodes = figures.code_tree(codes, branches=2, leaves=1)
  assert [p for p, _ in nodes] == [(4,), (4, 1), (4, 1, 7), (4, 2), (4, 2, 9)]
  np.testing.assert_array_equal(nodes[2][1], [0, 1, 4])
  with pytest.raises(ValueError, match="one first-quantizer token"):
    figures.code_tree(np.array([[4, 1, 7], [5, 1, 7]]))


def test_figures_write_pngs_of_the_expected_size(tmp_path):
  rng = np.random.default_rng(0)
  frames = rng.normal(size=(6, 42, 2))
  sim = figures.cosine_similarity(rng.normal(size=(3, 5)))
  np.testing.assert_allclose(np.diag(sim), 1.0)
  paths = [
      figures.plot_heatmap(
          str(tmp_path / "h.png"), sim, list("abc"), frames[:3], "heatmap"
      ),
      figures.plot_gallery(
          str(tmp_path / "g.png"), frames, range(6), "gallery"
      ),
      figures.plot_tree(
          str(tmp_path / "t.png"),
          frames,
          figures.code_tree(
              np.array(
                  [
                      [4, 1, 7],
                      [4, 1, 8],
                      [4, 2, 9],
                      [4, 1, 7],
                      [4, 2, 9],
                      [4, 1, 8],
                  ]
              ),
              branches=2,
              leaves=2,
          ),
          "tree",
      ),
  ]
  sizes = [(1200, 1200), (1200, 240), (400, 960)]  # 100 dpi.
  for path, size in zip(paths, sizes):
    assert os.path.getsize(path) > 5000 and _png_size(path) == size
  picks = figures.gallery_picks(
      np.array([1, 1, 2, 3, 3, 3]), 5, np.random.default_rng(0)
  )
  assert sorted(np.array([1, 1, 2, 3, 3, 3])[picks]) == [1, 2, 3]


@pytest.fixture(scope="module")
def tokens_dir():
  return tiny_tokenizer.tokens_dir()


def test_frames_are_checked_against_the_code_rows(tokens_dir):
  source = analyze.load_tokens(tokens_dir, "test")
  tok = analyze.load_tokenizer(tiny_tokenizer.workdir(), source)
  split = datasets.load(tok.config)["test"]
  frames = analyze.load_frames(tok, split, source, [0, 2])
  assert sorted(frames) == [0, 2] and len(frames[2]) == source.lengths[2]
  source.lengths = source.lengths + 1
  with pytest.raises(ValueError, match=f"sequence {source.sequence_ids[0]}"):
    analyze.load_frames(tok, split, source, [0])
  with pytest.raises(FileNotFoundError, match="--config=tokenize"):
    analyze.load_tokens(tokens_dir, "nope")
  assert isinstance(tok, asl_vq.Tokenizer)


def test_cli_writes_tables_figures_and_summary(tokens_dir, tmp_path):
  out = tmp_path / "analysis"
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "asl_vq.analysis",
          f"--tokens={tokens_dir},{tokens_dir}",
          "--names=one,two",
          f"--tokenizer={tiny_tokenizer.workdir()},",
          f"--out={out}",
          "--min_count=2",
          "--letter=a",
          "--gallery_size=4",
      ],
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((out / "analysis.json").read_text())
  assert summary["data"] == "synthetic"
  assert set(summary["tokenizers"]) == {"one", "two"}
  # The same tokens, the tokenizer named or found from their record: the
  # same figures.
  one, two = (summary["tokenizers"][n] for n in ("one", "two"))
  for key in ("mean_ami", "mean_ami_bigram"):
    assert np.isfinite(one[key]) and one[key] == pytest.approx(two[key])
  for f in summary["files"]:
    assert (out / f).stat().st_size > 0, f
    if f.endswith(".png"):
      assert min(_png_size(out / f)) >= 240
  table = (out / "mi_table.md").read_text()
  assert "synthetic data" in table and "| one AMI |" in table
  assert len([l for l in table.splitlines() if l.startswith("| ")]) == 28
  assert (
      "Table 4 equivalent (synthetic data"
      in (out / "angles_table.md").read_text()
  )
  assert "Table 3 equivalent" in result.stdout

  # The report collects every figure, captioned with this command.
  text = open(report.write_report(str(tmp_path))).read()
  pngs = [f for f in summary["files"] if f.endswith(".png")]
  assert pngs and all(f"figures/analysis__{f})" in text for f in pngs)
  assert "made by `python -m asl_vq.analysis --tokens=" in text
  assert "| one AMI |" in text
