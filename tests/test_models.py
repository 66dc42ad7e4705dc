"""Tests of the feature extractor, Squeezeformer and the full tokenizer."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from asl_vq import losses, vocab
from asl_vq.models import squeezeformer
from asl_vq.models.features import MaskedBatchNorm
from asl_vq.models.tokenizer import (TokenizerConfig, TokenizerModel,
                                     model_summary)

REFERENCE_ENCODER_PARAMS = 1_329_536
TINY = TokenizerConfig(dim=32, num_blocks=1, kernel_size=5, codebook_size=16,
                       num_quantizers=2)
B, T = 3, 10
LENGTHS = (10, 6, 0)  # The last example is all padding.


def batch(pad_value=0.0):
  x = np.asarray(jax.random.normal(jax.random.key(0), (B, T, 42, 2)))
  mask = np.arange(T)[None] < np.array(LENGTHS)[:, None]
  x = np.where(mask[..., None, None], x, pad_value)
  return jnp.asarray(x, jnp.float32), jnp.asarray(mask)


@functools.lru_cache(maxsize=None)
def tiny_model():
  model = TokenizerModel(TINY)
  x, mask = batch()
  variables = jax.jit(lambda: model.init(jax.random.key(0), x, mask,
                                         train=False))()
  return model, variables


@functools.lru_cache(maxsize=None)
def apply_fn(train):
  model, _ = tiny_model()
  if train:
    return jax.jit(lambda v, x, mask: model.apply(
        v, x, mask, n_q=None, train=True, mutable=['batch_stats', 'vq'],
        rngs={'dropout': jax.random.key(1), 'vq': jax.random.key(2)}))
  return jax.jit(lambda v, x, mask: model.apply(v, x, mask, train=False))


def test_encoder_parameter_count():
  counts = model_summary(TokenizerConfig())
  print('parameter counts:', counts)
  assert abs(counts['encoder'] / REFERENCE_ENCODER_PARAMS - 1) < 0.03
  assert counts['codebooks'] == 4 * 1024 * 128
  assert counts['ctc_head'] == 128 * vocab.VOCAB_SIZE
  assert counts['total_params'] == (counts['encoder'] + counts['ctc_head']
                                    + counts['decoder'])


def test_relative_shift_picks_relative_positions():
  t = 5
  x = np.random.default_rng(0).normal(size=(2, t, 2 * t - 1))
  out = np.asarray(squeezeformer.relative_shift(jnp.asarray(x)))
  i, j = np.meshgrid(np.arange(t), np.arange(t), indexing='ij')
  # Column p holds relative position (t - 1) - p; out[i, j] wants i - j.
  np.testing.assert_allclose(out, x[:, i, (t - 1) - (i - j)])


def test_masked_batch_norm_uses_valid_frames_only():
  x = np.asarray(jax.random.normal(jax.random.key(3), (2, 5, 3, 4))) + 2.0
  mask = np.array([[True] * 5, [True] * 2 + [False] * 3])
  x[~mask] = 1e4
  bn = MaskedBatchNorm(momentum=0.25)
  variables = bn.init(jax.random.key(0), x, mask, train=False)
  y, state = bn.apply(variables, x, mask, train=True, mutable=['batch_stats'])
  valid = x[mask].reshape(-1, 4)
  np.testing.assert_allclose(state['batch_stats']['mean'],
                             0.75 * valid.mean(0), rtol=1e-5)
  np.testing.assert_allclose(state['batch_stats']['var'],
                             0.25 + 0.75 * valid.var(0), rtol=1e-5)
  np.testing.assert_allclose(
      np.asarray(y)[mask],
      (x[mask] - valid.mean(0)) / np.sqrt(valid.var(0) + 1e-5), atol=1e-4)


def test_squeezeformer_padded_frames_do_not_leak():
  # The feature extractor zeroes padded inputs; here the hidden states
  # themselves differ there, which attention, conv and BN must all ignore.
  stack = squeezeformer.Squeezeformer(num_blocks=1, num_heads=2, kernel_size=5)
  mask = jnp.asarray(np.arange(7)[None] < np.array([[7], [4], [0]]))
  x = jax.random.normal(jax.random.key(4), (3, 7, 16))
  dirty = jnp.where(mask[..., None], x, 30.0)
  variables = stack.init(jax.random.key(0), x, mask, train=False)
  run = jax.jit(lambda x: stack.apply(
      variables, x, mask, train=True, mutable=['batch_stats'],
      rngs={'dropout': jax.random.key(5)}))
  (a, stats_a), (b, stats_b) = run(x), run(dirty)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(a)[valid], np.asarray(b)[valid],
                             rtol=1e-4, atol=1e-4)
  for u, w in zip(jax.tree_util.tree_leaves(stats_a),
                  jax.tree_util.tree_leaves(stats_b)):
    np.testing.assert_allclose(u, w, rtol=1e-4, atol=1e-4)
  assert np.isfinite(np.asarray(a)).all()


def test_forward_shapes_and_finite():
  model, variables = tiny_model()
  x, mask = batch()
  out, state = apply_fn(True)(variables, x, mask)
  assert out['recon'].shape == (B, T, 42, 2)
  assert out['ctc_logits'].shape == (B, T, vocab.VOCAB_SIZE)
  assert out['codes'].shape == (B, T, 2) and out['codes'].dtype == jnp.int32
  assert out['perplexity'].shape == out['used'].shape == (2,)
  assert set(state) == {'batch_stats', 'vq'}
  for leaf in jax.tree_util.tree_leaves((out, state)):
    assert np.isfinite(np.asarray(leaf, float)).all()
  no_ctc = TokenizerModel(dataclasses.replace(TINY, use_ctc=False))
  shapes = jax.eval_shape(lambda: no_ctc.init_with_output(
      jax.random.key(0), x, mask, train=False))[0]
  assert 'ctc_logits' not in shapes and shapes['recon'].shape == x.shape


def test_padded_frames_do_not_affect_valid_outputs():
  _, variables = tiny_model()
  clean, mask = batch()
  dirty, _ = batch(pad_value=50.0)
  valid = np.asarray(mask)
  for train in (False, True):  # Train mode also checks the masked BN stats.
    a, b = apply_fn(train)(variables, clean, mask), apply_fn(train)(
        variables, dirty, mask)
    out_a, out_b = (a[0], b[0]) if train else (a, b)
    for key in ('recon', 'ctc_logits', 'codes'):
      np.testing.assert_allclose(np.asarray(out_a[key])[valid],
                                 np.asarray(out_b[key])[valid],
                                 rtol=1e-4, atol=1e-4)
    if train:
      for u, w in zip(jax.tree_util.tree_leaves(a[1]),
                      jax.tree_util.tree_leaves(b[1])):
        np.testing.assert_allclose(np.asarray(u, float), np.asarray(w, float),
                                   rtol=1e-4, atol=1e-4)


def test_encode_decode_round_trip_matches_forward():
  model, variables = tiny_model()
  _, state = apply_fn(True)(variables, *batch())  # k-means init the codebooks.
  variables = {**variables, **state}
  x, mask = batch()
  out = apply_fn(False)(variables, x, mask)
  codes = jax.jit(functools.partial(model.apply, method=TokenizerModel.encode))(
      variables, x, mask)
  np.testing.assert_array_equal(codes, out['codes'])
  recon = jax.jit(functools.partial(
      model.apply, method=TokenizerModel.decode_codes))(variables, codes, mask)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(recon)[valid],
                             np.asarray(out['recon'])[valid],
                             rtol=1e-4, atol=1e-4)
  coarse = model.apply(variables, codes, 1, method=TokenizerModel.embed_codes)
  codebook = variables['vq']['rvq']['codebook']
  np.testing.assert_allclose(coarse, codebook[0][codes[..., 0]], rtol=1e-6)


def test_greedy_ctc_decode():
  blank = vocab.BLANK_ID
  frames = [[33, 33, blank, 33, 34, 34, blank, blank],  # a a _ a b b _ _
            [blank, 40, 40, 41, 40, 7, 7, 7]]  # The last 3 frames are padding.
  logits = np.full((2, 8, vocab.VOCAB_SIZE), -5.0)
  for b, row in enumerate(frames):
    logits[b, np.arange(8), row] = 5.0
  mask = np.array([[True] * 8, [True] * 5 + [False] * 3])
  assert losses.ctc_greedy_decode(logits, mask) == [[33, 33, 34],
                                                    [40, 41, 40]]
