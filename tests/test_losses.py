"""Tests of the tokenizer losses."""

import itertools

import jax.numpy as jnp
import numpy as np
import optax

from asl_vq import losses, vocab

BLANK = vocab.BLANK_ID


def collapse(path, blank):
  out = [s for i, s in enumerate(path) if i == 0 or s != path[i - 1]]
  return [s for s in out if s != blank]


def brute_force_nll(log_probs, label, blank):
  """-log of the summed probability of every alignment collapsing to label.

  Paths through other symbols never collapse to the label, so enumerating the
  label's symbols and the blank is exact.
  """
  symbols = sorted(set(label) | {blank})
  total = 0.0
  for path in itertools.product(symbols, repeat=len(log_probs)):
    if collapse(list(path), blank) == list(label):
      total += np.exp(sum(log_probs[t, s] for t, s in enumerate(path)))
  return -np.log(total)


def test_optax_ctc_matches_brute_force():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(1, 4, 3)).astype(np.float32)
  log_probs = logits[0] - np.log(np.exp(logits[0]).sum(-1, keepdims=True))
  for label in ([1, 2], [1, 1], [2]):
    got = optax.ctc_loss(
        jnp.asarray(logits),
        jnp.zeros((1, 4)),
        jnp.asarray([label]),
        jnp.zeros((1, len(label))),
        blank_id=0,
    )
    np.testing.assert_allclose(
        got[0], brute_force_nll(log_probs, label, 0), rtol=1e-5
    )


def test_ctc_loss_masks_frames_examples_and_infeasible_labels():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(4, 4, vocab.VOCAB_SIZE)).astype(np.float32)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  a, b = vocab.CHAR_TO_ID['a'], vocab.CHAR_TO_ID['b']
  labels = np.array(
      [[a, b, BLANK], [a, a, BLANK], [a, a, b], [b, BLANK, BLANK]]
  )
  lengths = np.array([4, 3, 3, 4])  # Example 2 ("aab") needs 4 frames.
  mask = np.arange(4)[None] < lengths[:, None]
  expected = [
      brute_force_nll(log_probs[0], [a, b], BLANK),
      brute_force_nll(log_probs[1, :3], [a, a], BLANK),
  ]
  example_mask = np.array([True, True, True, False])  # 3 is eval padding.
  got = losses.ctc_loss(
      jnp.asarray(logits),
      jnp.asarray(mask),
      jnp.asarray(labels),
      example_mask=jnp.asarray(example_mask),
      reduction='sum',
  )
  # The infeasible example 2 counts as 0 (zero_infinity); 3 not at all.
  np.testing.assert_allclose(got, np.sum(expected) / 3, rtol=1e-5)


def test_ctc_loss_divides_by_target_length_by_default():
  # Example 0: 1 frame, label "a": the only path is "a".
  # Example 1: 2 frames, label "ab": the only path is "a", "b".
  # Example 2: label "b" on 0 frames: infeasible, left out.
  a, b = vocab.CHAR_TO_ID['a'], vocab.CHAR_TO_ID['b']
  logits = np.zeros((3, 2, vocab.VOCAB_SIZE), np.float32)
  logits[0, 0, a] = 2.0
  logits[1, 0, a] = 1.0
  logits[1, 1, b] = 3.0
  labels = np.array([[a, BLANK], [a, b], [b, BLANK]])
  mask = np.array([[True, False], [True, True], [False, False]])
  v = vocab.VOCAB_SIZE
  nll_a = -(2.0 - np.log(np.exp(2.0) + v - 1))
  nll_ab = -(1.0 - np.log(np.exp(1.0) + v - 1)) - (
      3.0 - np.log(np.exp(3.0) + v - 1)
  )
  args = (jnp.asarray(logits), jnp.asarray(mask), jnp.asarray(labels))
  np.testing.assert_allclose(
      losses.ctc_loss(*args), (nll_a / 1 + nll_ab / 2) / 2, rtol=1e-5
  )
  np.testing.assert_allclose(
      losses.ctc_loss(*args, reduction='sum'), (nll_a + nll_ab) / 2, rtol=1e-5
  )
  outputs = dict(
      recon=jnp.zeros((3, 2, 42, 2)),
      commit_loss=jnp.float32(0),
      ctc_logits=args[0],
  )
  _, per_char = losses.tokenizer_loss(outputs, outputs['recon'], *args[1:])
  _, summed = losses.tokenizer_loss(
      outputs, outputs['recon'], *args[1:], ctc_reduction='sum'
  )
  np.testing.assert_allclose(
      per_char['ctc'], (nll_a + nll_ab / 2) / 2, rtol=1e-5
  )
  np.testing.assert_allclose(summed['ctc'], (nll_a + nll_ab) / 2, rtol=1e-5)


def test_smooth_l1_sums_coordinates_and_averages_valid_frames():
  target = np.zeros((2, 3, 42, 2), np.float32)
  recon = target.copy()
  recon[0, 0, 0, 0] = 0.5  # 0.125
  recon[0, 1, 3, 1] = -3.0  # 2.5
  recon[1, 0, 5, 0] = 2.0  # 1.5
  recon[1, 2] = 1e3  # Padding: ignored.
  mask = np.array([[True, True, False], [True, True, False]])
  got = losses.smooth_l1(
      jnp.asarray(recon), jnp.asarray(target), jnp.asarray(mask)
  )
  np.testing.assert_allclose(got, (0.125 + 2.5 + 1.5) / 4, rtol=1e-6)


def test_tokenizer_loss_weights_the_parts():
  rng = np.random.default_rng(2)
  inputs = rng.normal(size=(2, 5, 42, 2)).astype(np.float32)
  mask = np.array([[True] * 5, [True] * 3 + [False] * 2])
  outputs = dict(
      recon=jnp.asarray(inputs + 0.1),
      commit_loss=jnp.float32(3.2),
      ctc_logits=jnp.asarray(
          rng.normal(size=(2, 5, vocab.VOCAB_SIZE)).astype(np.float32)
      ),
  )
  labels = jnp.array([[33, 34], [35, BLANK]])
  total, parts = losses.tokenizer_loss(outputs, inputs, mask, labels)
  np.testing.assert_allclose(parts['recon'], 84 * 0.005, rtol=1e-4)
  np.testing.assert_allclose(
      total, parts['recon'] + parts['ctc'] + 3.2 / 16, rtol=1e-6
  )
  np.testing.assert_allclose(
      parts['eval_loss'], parts['recon'] + parts['ctc'], rtol=1e-6
  )
  weighted, w_parts = losses.tokenizer_loss(
      outputs, inputs, mask, labels, ctc_weight=4.0
  )
  np.testing.assert_allclose(w_parts['ctc'], parts['ctc'], rtol=1e-6)
  np.testing.assert_allclose(
      weighted, parts['recon'] + 4.0 * parts['ctc'] + 3.2 / 16, rtol=1e-6
  )
  np.testing.assert_allclose(
      w_parts['eval_loss'], parts['recon'] + 4.0 * parts['ctc'], rtol=1e-6
  )
  del outputs['ctc_logits']
  total, parts = losses.tokenizer_loss(outputs, inputs, mask)
  assert 'ctc' not in parts
  np.testing.assert_allclose(total, parts['recon'] + 0.2, rtol=1e-6)
  np.testing.assert_allclose(parts['eval_loss'], parts['recon'], rtol=1e-6)
