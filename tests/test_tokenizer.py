"""Tests of the feature extractor, Squeezeformer and the full tokenizer."""

import dataclasses
import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xla_env
from asl_vq import losses, vocab
from asl_vq.models import squeezeformer
from asl_vq.models.features import MaskedBatchNorm
from asl_vq.models.tokenizer import (
    TokenizerConfig,
    TokenizerModel,
    model_summary,
)

# The reference's state_dict (tests/test_reference.py's fixture): encoder =
# feature extractor + 6 blocks, decoder = 6 blocks + transposed extractor.
REFERENCE_ENCODER_PARAMS = 1_329_536
REFERENCE_DECODER_PARAMS = 1_336_532
REFERENCE_CTC_HEAD_PARAMS = 8_064
TINY = TokenizerConfig(
    dim=32, num_blocks=1, kernel_size=5, codebook_size=16, num_quantizers=2
)
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
  variables = jax.jit(
      lambda: model.init(jax.random.key(0), x, mask, train=False)
  )()
  return model, variables


@functools.lru_cache(maxsize=None)
def apply_fn(train):
  model, _ = tiny_model()
  if train:
    return jax.jit(
        lambda v, x, mask: model.apply(
            v,
            x,
            mask,
            n_q=None,
            train=True,
            mutable=['batch_stats', 'vq'],
            rngs={'dropout': jax.random.key(1), 'vq': jax.random.key(2)},
        )
    )
  return jax.jit(lambda v, x, mask: model.apply(v, x, mask, train=False))


def test_parameter_counts_match_reference():
  counts = model_summary(TokenizerConfig())
  print('parameter counts:', counts)
  assert counts['encoder'] == REFERENCE_ENCODER_PARAMS
  assert counts['decoder'] == REFERENCE_DECODER_PARAMS
  assert counts['ctc_head'] == REFERENCE_CTC_HEAD_PARAMS
  assert counts['codebooks'] == 4 * 1024 * 128
  assert counts['total_params'] == (
      counts['encoder'] + counts['ctc_head'] + counts['decoder']
  )


# The reference's relative shift (Transformer-XL), which the attention's
# sin/cos identity replaces; kept here as the reference it is tested on.
def relative_shift(x):
  """[..., T, 2T-1] scores per relative position -> [..., T, T] per key.

  Out[i, j] = x[i, (T-1) - i + j], the score of relative position i - j when
  the last axis runs over positions T-1 ... -(T-1). Pad-and-reshape instead of
  a gather: it is a pure relayout.
  """
  *lead, t, p = x.shape
  x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])
  x = x.reshape(*lead, p + 1, t)[..., 1:, :]
  return x.reshape(*lead, t, p)[..., :t]


def test_relative_shift_picks_relative_positions():
  t = 5
  x = np.random.default_rng(0).normal(size=(2, t, 2 * t - 1))
  out = np.asarray(relative_shift(jnp.asarray(x)))
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
  np.testing.assert_allclose(
      state['batch_stats']['mean'], 0.75 * valid.mean(0), rtol=1e-5
  )
  np.testing.assert_allclose(
      state['batch_stats']['var'], 0.25 + 0.75 * valid.var(0), rtol=1e-5
  )
  np.testing.assert_allclose(
      np.asarray(y)[mask],
      (x[mask] - valid.mean(0)) / np.sqrt(valid.var(0) + 1e-5),
      atol=1e-4,
  )


def test_batch_norm_momentum_per_layer_as_reference():
  # Train-mode outputs do not depend on the running statistics, so two
  # updates from running means A and B differ by exactly momentum * (A - B).
  model, variables = tiny_model()
  x, mask = batch()
  stats = variables['batch_stats']
  shifted = jax.tree.map(lambda v: v + 10.0, stats)
  _, new = apply_fn(True)(variables, x, mask)
  _, new_shifted = apply_fn(True)(dict(variables, batch_stats=shifted), x, mask)
  momenta = {}
  for (path, a), b in zip(
      jax.tree_util.tree_flatten_with_path(new['batch_stats'])[0],
      jax.tree.leaves(new_shifted['batch_stats']),
  ):
    m = np.unique(np.round((np.float64(b) - np.float64(a)) / 10.0, 4))
    assert len(m) == 1, path
    layer = '/'.join(k.key for k in path[:-1])
    momenta.setdefault(layer, set()).add(float(m[0]))
  stem = {'features/proj_bn', 'output_head/bn'}
  conv = {
      'features/conv_bn',
      'output_head/conv_bn',
      'encoder/block_0/conv/bn',
      'decoder/block_0/conv/bn',
  }
  assert set(momenta) == stem | conv
  assert all(momenta[k] == {0.05} for k in stem)
  assert all(momenta[k] == {0.9} for k in conv)


def test_squeezeformer_padded_frames_do_not_leak():
  # The feature extractor zeroes padded inputs; here the hidden states
  # themselves differ there, which attention, conv and BN must all ignore.
  stack = squeezeformer.Squeezeformer(num_blocks=1, num_heads=2, kernel_size=5)
  mask = jnp.asarray(np.arange(7)[None] < np.array([[7], [4], [0]]))
  x = jax.random.normal(jax.random.key(4), (3, 7, 16))
  dirty = jnp.where(mask[..., None], x, 30.0)
  variables = stack.init(jax.random.key(0), x, mask, train=False)
  run = jax.jit(
      lambda x: stack.apply(
          variables,
          x,
          mask,
          train=True,
          mutable=['batch_stats'],
          rngs={'dropout': jax.random.key(5)},
      )
  )
  (a, stats_a), (b, stats_b) = run(x), run(dirty)
  valid = np.asarray(mask)
  np.testing.assert_allclose(
      np.asarray(a)[valid], np.asarray(b)[valid], rtol=1e-4, atol=1e-4
  )
  for u, w in zip(
      jax.tree_util.tree_leaves(stats_a), jax.tree_util.tree_leaves(stats_b)
  ):
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
  shapes = jax.eval_shape(
      lambda: no_ctc.init_with_output(jax.random.key(0), x, mask, train=False)
  )[0]
  assert 'ctc_logits' not in shapes and shapes['recon'].shape == x.shape


def test_padded_frames_do_not_affect_valid_outputs():
  _, variables = tiny_model()
  clean, mask = batch()
  dirty, _ = batch(pad_value=50.0)
  valid = np.asarray(mask)
  for train in (False, True):  # Train mode also checks the masked BN stats.
    a, b = apply_fn(train)(variables, clean, mask), apply_fn(train)(
        variables, dirty, mask
    )
    out_a, out_b = (a[0], b[0]) if train else (a, b)
    for key in ('recon', 'ctc_logits', 'codes'):
      np.testing.assert_allclose(
          np.asarray(out_a[key])[valid],
          np.asarray(out_b[key])[valid],
          rtol=1e-4,
          atol=1e-4,
      )
    if train:
      for u, w in zip(
          jax.tree_util.tree_leaves(a[1]), jax.tree_util.tree_leaves(b[1])
      ):
        np.testing.assert_allclose(
            np.asarray(u, float), np.asarray(w, float), rtol=1e-4, atol=1e-4
        )


@pytest.mark.slow
def test_a_frames_codes_depend_only_on_its_receptive_field():
  """attention_window=w: a frame's codes read at most 1 (the stem's conv)
  + blocks x (w + kernel // 2) frames each side, so a sign's codes do not
  change when another follows it (README, "Any length")."""
  config = dataclasses.replace(TINY, attention_window=2)
  reach = 1 + config.num_blocks * (2 + config.kernel_size // 2)
  model = TokenizerModel(config)
  x = jax.random.normal(jax.random.key(0), (2, 30, 42, 2))
  mask = jnp.ones((2, 30), bool)
  variables = model.init(jax.random.key(0), x, mask, train=False)
  _, state = model.apply(
      variables,
      x,
      mask,
      train=True,
      mutable=['batch_stats', 'vq'],
      rngs={'dropout': jax.random.key(1), 'vq': jax.random.key(2)},
  )
  variables = {**variables, **state}
  followed = x.at[:, 20:].set(
      jax.random.normal(jax.random.key(3), (2, 10, 42, 2))
  )
  encode = jax.jit(functools.partial(model.apply, method=TokenizerModel.encode))
  alone = encode(variables, x[:, :20], mask[:, :20])
  np.testing.assert_array_equal(
      encode(variables, x, mask)[:, : 20 - reach], alone[:, : 20 - reach]
  )
  np.testing.assert_array_equal(
      encode(variables, followed, mask)[:, : 20 - reach], alone[:, : 20 - reach]
  )


def test_encode_decode_round_trip_matches_forward():
  model, variables = tiny_model()
  _, state = apply_fn(True)(variables, *batch())  # k-means init the codebooks.
  variables = {**variables, **state}
  x, mask = batch()
  out = apply_fn(False)(variables, x, mask)
  codes = jax.jit(functools.partial(model.apply, method=TokenizerModel.encode))(
      variables, x, mask
  )
  np.testing.assert_array_equal(codes, out['codes'])
  recon = jax.jit(
      functools.partial(model.apply, method=TokenizerModel.decode_codes)
  )(variables, codes, mask)
  valid = np.asarray(mask)
  np.testing.assert_allclose(
      np.asarray(recon)[valid],
      np.asarray(out['recon'])[valid],
      rtol=1e-4,
      atol=1e-4,
  )
  coarse = model.apply(variables, codes, 1, method=TokenizerModel.embed_codes)
  codebook = variables['vq']['rvq']['codebook']
  np.testing.assert_allclose(coarse, codebook[0][codes[..., 0]], rtol=1e-6)


def test_greedy_ctc_decode():
  blank = vocab.BLANK_ID
  frames = [
      [33, 33, blank, 33, 34, 34, blank, blank],  # a a _ a b b _ _
      [blank, 40, 40, 41, 40, 7, 7, 7],
  ]  # The last 3 frames are padding.
  logits = np.full((2, 8, vocab.VOCAB_SIZE), -5.0)
  for b, row in enumerate(frames):
    logits[b, np.arange(8), row] = 5.0
  mask = np.array([[True] * 8, [True] * 5 + [False] * 3])
  assert losses.ctc_greedy_decode(logits, mask) == [[33, 33, 34], [40, 41, 40]]


@pytest.mark.parametrize(
    'special', [vocab.START_ID, vocab.END_ID, vocab.VOCAB_SIZE - 1]
)
def test_greedy_ctc_decode_treats_special_ids_as_blanks(special):
  # h, i, <special>, y, o, u: the special id neither stops the hypothesis
  # nor enters it; between two equal letters it separates them as a blank.
  ids = (
      [vocab.CHAR_TO_ID[c] for c in 'hi']
      + [special]
      + [vocab.CHAR_TO_ID[c] for c in 'you']
  )
  logits = np.full((1, 6, vocab.VOCAB_SIZE), -5.0)
  logits[0, np.arange(6), ids] = 5.0
  decoded = losses.ctc_greedy_decode(logits, np.ones((1, 6), bool))
  assert vocab.decode(decoded[0]) == 'hiyou'
  ids = [vocab.CHAR_TO_ID['a'], special, vocab.CHAR_TO_ID['a']]
  logits = np.full((1, 3, vocab.VOCAB_SIZE), -5.0)
  logits[0, np.arange(3), ids] = 5.0
  assert (
      vocab.decode(losses.ctc_greedy_decode(logits, np.ones((1, 3), bool))[0])
      == 'aa'
  )


# Equivalence of the fast formulations with the plain ones they replace.


def _reference_attention(params, x, mask):
  """Transformer-XL attention as written in the paper's code: scores over the
  2T-1 relative positions, then `relative_shift`."""
  _, t, d = x.shape
  h, dh = params['u_bias'].shape
  proj = lambda name, y: (
      jnp.einsum('...d,dhe->...he', y, params[name]['kernel'])
      + params[name].get('bias', 0.0)
  )
  q, k, v = proj('query', x), proj('key', x), proj('value', x)
  pos = proj('pos', jnp.asarray(squeezeformer.relative_sinusoids(t, d)))
  content = jnp.einsum('bqhd,bkhd->bhqk', q + params['u_bias'], k)
  position = relative_shift(
      jnp.einsum('bqhd,phd->bhqp', q + params['v_bias'], pos)
  )
  scores = (content + position) / np.sqrt(dh)
  pair = mask[:, None, :, None] & mask[:, None, None, :]
  scores = jnp.where(pair, scores, jnp.finfo(scores.dtype).min)
  weights = jax.nn.softmax(scores, axis=-1) * pair
  out = jnp.einsum('bhqk,bkhd->bqhd', weights, v)
  return (
      jnp.einsum('bqhd,hde->bqe', out, params['out']['kernel'])
      + params['out']['bias']
  )


@pytest.mark.slow
def test_relative_attention_matches_shifted_formulation():
  b, t, d = 3, 37, 64
  x = jax.random.normal(jax.random.key(0), (b, t, d))
  mask = jnp.arange(t)[None] < jnp.array([37, 20, 0])[:, None]
  module = squeezeformer.RelativeSelfAttention(num_heads=4)
  params = module.init(jax.random.key(1), x, mask, train=False)['params']
  # Larger than init so that the position term matters.
  params = jax.tree.map(lambda p: 3 * p, params)
  assert params['pos']['kernel'].shape == (d, 4, d // 4)
  fast = lambda p, x: module.apply({'params': p}, x, mask, train=False)
  ref = lambda p, x: _reference_attention(p, x, mask)
  np.testing.assert_allclose(
      fast(params, x), ref(params, x), rtol=1e-4, atol=1e-4
  )
  loss = lambda f: jax.grad(
      lambda p, x: jnp.sum(jnp.sin(f(p, x))), argnums=(0, 1)
  )
  grads_fast, grads_ref = loss(fast)(params, x), loss(ref)(params, x)
  for path, g in jax.tree_util.tree_leaves_with_path(grads_ref):
    if 'key' in jax.tree_util.keystr(path) and 'bias' in jax.tree_util.keystr(
        path
    ):
      continue  # Softmax-invariant: zero up to rounding either way.
    g_fast = functools.reduce(
        lambda a, k: a[k.key if hasattr(k, 'key') else k.idx], path, grads_fast
    )
    np.testing.assert_allclose(
        g_fast,
        g,
        rtol=1e-3,
        atol=1e-4 * float(jnp.max(jnp.abs(g))),
        err_msg=jax.tree_util.keystr(path),
    )


@pytest.mark.parametrize('per_pass', [0, 1])
def test_attention_window_ignores_frames_beyond_it(per_pass):
  """window=w: a frame's output is the same whatever the frames more than
  w away hold; with every frame (0) it is not."""
  b, t, d, w = 2, 30, 32, 3
  x = jax.random.normal(jax.random.key(0), (b, t, d))
  far = x.at[:, 20:].set(jax.random.normal(jax.random.key(2), (b, 10, d)))
  mask = jnp.arange(t)[None] < jnp.array([30, 25])[:, None]
  outs = {}
  for window in (0, w):
    module = squeezeformer.RelativeSelfAttention(
        num_heads=4, window=window, sequences_per_pass=per_pass
    )
    params = module.init(jax.random.key(1), x, mask, train=False)
    outs[window] = [
        module.apply(params, z, mask, train=False) for z in (x, far)
    ]
  near, changed = outs[w]
  np.testing.assert_allclose(
      near[:, : 20 - w], changed[:, : 20 - w], rtol=1e-6, atol=1e-6
  )
  assert not np.allclose(
      near[:, 20 - w : 20], changed[:, 20 - w : 20], atol=1e-3
  )
  every, every_changed = outs[0]
  assert not np.allclose(
      every[:, : 20 - w], every_changed[:, : 20 - w], atol=1e-3
  )


@pytest.mark.slow
def test_attention_in_passes_equals_one_pass():
  b, t, d = 4, 37, 64
  x = jax.random.normal(jax.random.key(0), (b, t, d))
  mask = jnp.arange(t)[None] < jnp.array([37, 20, 0, 5])[:, None]
  one_pass = squeezeformer.RelativeSelfAttention(
      num_heads=4, sequences_per_pass=0
  )
  params = one_pass.init(jax.random.key(1), x, mask, train=False)['params']
  params = jax.tree.map(lambda p: 3 * p, params)

  def value_and_grads(module):
    f = lambda p, x: jnp.sum(
        jnp.sin(module.apply({'params': p}, x, mask, train=True))
    )
    return module.apply({'params': params}, x, mask, train=True), jax.grad(
        f, argnums=(0, 1)
    )(params, x)

  want_out, want_grads = value_and_grads(one_pass)
  for per_pass in (1, 2):
    module = squeezeformer.RelativeSelfAttention(
        num_heads=4, sequences_per_pass=per_pass
    )
    out, grads = value_and_grads(module)
    np.testing.assert_allclose(
        out, want_out, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want_out)))
    )
    assert np.all(np.asarray(out[2]) == 0)  # the fully padded sequence
    for (path, g), want in zip(
        jax.tree_util.tree_leaves_with_path(grads),
        jax.tree_util.tree_leaves(want_grads),
    ):
      if jax.tree_util.keystr(path) == "[0]['key']['bias']":
        continue  # Softmax-invariant: zero up to rounding either way.
      np.testing.assert_allclose(
          g,
          want,
          rtol=1e-5,
          atol=1e-5 * float(jnp.max(jnp.abs(want))),
          err_msg=f'{per_pass} per pass: {jax.tree_util.keystr(path)}',
      )


@pytest.mark.parametrize('per_pass', [0, 1])
def test_bfloat16_attention_multiplies_in_bfloat16(per_pass):
  """dtype=bfloat16: every matmul of the attention (projections, scores,
  weights . v) takes bf16 operands, in one pass or in passes; a float64
  constant in the score scale once promoted the scores' dots to float32."""
  x = jnp.ones((2, 9, 16), jnp.bfloat16)
  mask = jnp.ones((2, 9), bool)
  module = squeezeformer.RelativeSelfAttention(
      num_heads=2, dtype=jnp.bfloat16, sequences_per_pass=per_pass
  )
  params = module.init(jax.random.key(0), x, mask, train=False)
  jaxpr = jax.make_jaxpr(lambda p, x: module.apply(p, x, mask, train=False))(
      params, x
  )

  def eqns(jaxpr):  # with those of nested jaxprs (jnp.einsum is a jit)
    for e in jaxpr.eqns:
      yield e
      for param in e.params.values():
        for sub in param if isinstance(param, (tuple, list)) else (param,):
          sub = getattr(sub, 'jaxpr', sub)
          if hasattr(sub, 'eqns'):
            yield from eqns(sub)

  dots = [e for e in eqns(jaxpr.jaxpr) if e.primitive.name == 'dot_general']
  # q, k, v, pos, the position coefficients, content, position, weights . v,
  # out.
  assert len(dots) == 9
  for e in dots:
    assert {v.aval.dtype for v in e.invars} == {jnp.dtype(jnp.bfloat16)}, e


def test_attention_passes_are_the_callers_choice():
  """The model asks JAX nothing about devices: its passes are its
  attributes, and `sharding.attention_layout` chooses them for a mesh (2
  sequences a pass only on a lone CPU device; the tests' 8 devices, and a
  mesh of one of them, keep one pass)."""
  from asl_vq import sharding  # pylint: disable=g-import-not-at-top

  assert (
      squeezeformer.RelativeSelfAttention(num_heads=2).sequences_per_pass == 0
  )
  assert sharding.attention_layout(sharding.make_mesh()) == dict(
      sequences_per_pass=0, batch_devices=jax.device_count()
  )
  assert sharding.attention_layout(
      sharding.make_mesh(jax.local_devices()[:1])
  ) == dict(sequences_per_pass=0, batch_devices=1)
  _, variables = tiny_model()
  x, mask = batch()

  def loops(per_pass):
    model = TokenizerModel(
        dataclasses.replace(TINY, sequences_per_pass=per_pass)
    )
    apply = lambda v: model.apply(v, x, mask, train=False)
    return str(jax.make_jaxpr(apply)(variables)).count('scan[')

  # 3 sequences, 2 a pass: one a pass, in a loop (encoder and decoder).
  assert loops(2) == loops(0) + 2


def test_attention_on_a_lone_cpu_device_takes_two_sequences_a_pass():
  script = textwrap.dedent("""
    from asl_vq import sharding
    print(sharding.attention_layout(sharding.make_mesh()))
  """)
  result = subprocess.run(
      [sys.executable, '-c', script],
      env=xla_env.env(os.environ, devices=1, JAX_PLATFORMS='cpu'),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == (
      "{'sequences_per_pass': 2, 'batch_devices': 1}"
  )


def test_tokenizer_config_from_a_run_config():
  """`TokenizerConfig.from_config`: the run config's model block field for
  field (the saved names: the RVQ's too, which this config hands to the
  RVQ), and the caller's attention passes."""
  from asl_vq import config_lib  # pylint: disable=g-import-not-at-top
  from asl_vq.models import rvq  # pylint: disable=g-import-not-at-top

  config = config_lib.load('tokenizer', 'cpu')
  model = TokenizerConfig.from_config(
      config, sequences_per_pass=2, batch_devices=1
  )
  assert {k: getattr(model, k) for k in config.model} == config.model.to_dict()
  assert (model.sequences_per_pass, model.batch_devices) == (2, 1)
  assert isinstance(model, rvq.RVQConfig)
  fields = {f.name for f in dataclasses.fields(rvq.RVQConfig)}
  # Declared once, by the names runs save (vq_eps: at its default).
  assert fields - {'vq_eps'} <= set(config.model)
  assert model.vq_decay == config.model.vq_decay


def test_attention_passes_per_device_share():
  passes = squeezeformer.attention_passes
  assert passes(22, 2, 1) == 11
  assert passes(22, 0, 1) == 1  # one pass
  assert passes(16, 2, 8) == 1  # 2 sequences per device: one pass
  assert passes(64, 2, 8) == 4  # 8 per device, 2 at a time
  assert passes(22, 2, 8) == 11  # unsharded (22 % 8): the whole batch
  assert passes(21, 2, 1) == 21  # odd: one sequence per pass
  assert passes(0, 2, 1) == 1  # an empty batch


@pytest.mark.slow
def test_depthwise_conv_matches_grouped_conv():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  for t, k in [(196, 51), (10, 5), (7, 51), (33, 4)]:
    d = 16
    x = jax.random.normal(jax.random.key(t), (2, t, d))
    fast = squeezeformer.DepthwiseConv1D(k)
    params = fast.init(jax.random.key(0), x)['params']
    left = (k - 1) // 2
    conv = nn.Conv(
        d,
        (k,),
        padding=[(left, k - 1 - left)],
        feature_group_count=d,
        use_bias=False,
    )
    run_fast = lambda p, x: fast.apply({'params': p}, x)
    run_ref = lambda p, x: conv.apply({'params': p}, x)
    np.testing.assert_allclose(
        run_fast(params, x), run_ref(params, x), rtol=1e-4, atol=1e-5
    )
    loss = lambda f: jax.grad(
        lambda p, x: jnp.sum(jnp.sin(f(p, x))), argnums=(0, 1)
    )
    for a, b in zip(
        jax.tree.leaves(loss(run_fast)(params, x)),
        jax.tree.leaves(loss(run_ref)(params, x)),
    ):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_output_head_conv_matches_conv_transpose():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from asl_vq.models import features  # pylint: disable=g-import-not-at-top

  x = jax.random.normal(jax.random.key(0), (2, 9, 21, 32))
  conv_t = nn.ConvTranspose(
      2,
      (3, 3),
      strides=(1, 2),
      padding=features._CONV_T_PADDING,
      use_bias=False,
  )
  params = conv_t.init(jax.random.key(1), x)['params']
  fast = lambda p, x: features.landmark_conv_transpose(x, p['kernel'])
  ref = lambda p, x: conv_t.apply({'params': p}, x)
  np.testing.assert_allclose(
      fast(params, x), ref(params, x), rtol=1e-5, atol=1e-5
  )
  loss = lambda f: jax.grad(
      lambda p, x: jnp.sum(jnp.sin(f(p, x))), argnums=(0, 1)
  )
  for a, b in zip(
      jax.tree.leaves(loss(fast)(params, x)),
      jax.tree.leaves(loss(ref)(params, x)),
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_output_head_keeps_conv_transpose_variables():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from asl_vq.models import features  # pylint: disable=g-import-not-at-top

  x = jnp.ones((1, 2, 128))
  params = features.OutputHead().init(
      jax.random.key(0), x, jnp.ones((1, 2), bool), train=False
  )['params']
  ref = nn.ConvTranspose(2, (3, 3), use_bias=False).init(
      jax.random.key(0), jnp.ones((1, 2, 21, 32))
  )['params']
  assert jax.tree.map(jnp.shape, params['conv_t']) == jax.tree.map(
      jnp.shape, ref
  )


@pytest.mark.slow
def test_bfloat16_compute_agrees_with_float32():
  """config.model.dtype='bfloat16': the same training step and decoding to
  bf16 rounding, with every parameter, optimizer, BN and codebook leaf kept
  float32. Measured on this tiny model (jax 0.10.2, CPU): loss,
  reconstruction and CTC within 0.06%, the gradient norm within 0.13%, 97%
  of codes equal (a near tie may flip), decoding the same codes within 1.2%
  of the landmarks' scale. Asserted at about twice those margins: bf16's
  rounding of a step is not the same on every backend."""
  from asl_vq import bench, config_lib, optimizers, train  # pylint: disable=g-import-not-at-top
  from asl_vq.tasks import tokenizer as tokenizer_task  # pylint: disable=g-import-not-at-top

  def task_and_step(dtype):
    config = config_lib.load('tokenizer', 'tiny')
    config.model.dtype = dtype
    task = tokenizer_task.TokenizerTask(config)
    tx = optimizers.make_optimizer(config, config.train.batch_size)
    step = jax.jit(
        functools.partial(
            train.train_step,
            loss_fn=task.loss,
            tx=tx,
            base_rng=jax.random.key(1),
        )
    )
    return task, tx, step

  batch = {k: jnp.asarray(v) for k, v in bench.random_batch(4, 64).items()}
  task32, tx, step32 = task_and_step('float32')
  task16, _, step16 = task_and_step('bfloat16')
  abstract = jax.eval_shape(
      functools.partial(train.init_state, task16.init_variables, tx),
      jax.random.key(0),
  )
  state = jax.jit(
      functools.partial(train.init_state, task32.init_variables, tx)
  )(jax.random.key(0))
  state, _ = step32(state, batch)  # Both continue from the same codebooks.
  new32, metrics32 = step32(state, batch)
  new16, metrics16 = step16(state, batch)
  for tree in (abstract, new16):
    assert {l.dtype for l in jax.tree.leaves(tree)} <= {
        jnp.dtype(jnp.float32),
        jnp.dtype(jnp.int32),
        jnp.dtype(bool),
    }
  assert new16.collections['vq']['rvq']['codebook'].dtype == jnp.float32
  for name in ('loss', 'recon', 'ctc', 'grad_norm'):
    np.testing.assert_allclose(
        metrics16[name], metrics32[name], rtol=3e-3, err_msg=name
    )

  x, mask = batch['inputs'], batch['input_mask']
  variables = new32.variables()
  encode = lambda task: jax.jit(
      functools.partial(task.model.apply, method=TokenizerModel.encode)
  )(variables, x, mask)
  codes = encode(task32)
  assert np.mean(np.asarray(codes) == np.asarray(encode(task16))) > 0.94
  decode = lambda task: jax.jit(
      functools.partial(task.model.apply, method=TokenizerModel.decode_codes)
  )(variables, codes, mask)
  recon32, recon16 = decode(task32), decode(task16)
  assert recon16.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(recon32)))
  np.testing.assert_allclose(recon16, recon32, rtol=0, atol=2.5e-2 * scale)
