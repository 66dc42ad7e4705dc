"""Tests of the residual vector quantizer (tiny sizes)."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asl_vq.models import rvq
from asl_vq.models.rvq import ResidualVQ, RVQConfig, nearest_code
import xla_env

Q, K, D = 3, 8, 4
B, T = 2, 16
LENGTHS = (16, 11)


def make_vq(dead_threshold=2.0, revival='batch'):
  return ResidualVQ(
      RVQConfig(
          num_quantizers=Q,
          codebook_size=K,
          dead_threshold=dead_threshold,
          revival=revival,
      ),
      dim=D,
  )


def batch(seed=0, pad_value=0.0):
  x = np.asarray(jax.random.normal(jax.random.key(seed), (B, T, D)))
  mask = np.arange(T)[None] < np.array(LENGTHS)[:, None]
  return jnp.asarray(np.where(mask[..., None], x, pad_value)), jnp.asarray(mask)


@functools.lru_cache(maxsize=None)
def train_step(dead_threshold=2.0, revival='batch'):
  vq = make_vq(dead_threshold, revival)

  @jax.jit
  def step(variables, x, mask, n_q, seed):
    (q, codes, aux), state = vq.apply(
        variables,
        x,
        mask,
        n_q=n_q,
        train=True,
        mutable=['vq'],
        rngs={'vq': jax.random.key(seed)},
    )
    return q, codes, aux, state

  return step


@functools.lru_cache(maxsize=None)
def eval_step():
  vq = make_vq()
  return jax.jit(
      lambda v, x, mask, n_q: vq.apply(v, x, mask, n_q=n_q, train=False)
  )


def init_vars():
  x, mask = batch()
  return make_vq().init(jax.random.key(0), x, mask, train=False)


def trained_vars(dead_threshold=2.0, n_q=Q):
  x, mask = batch()
  return train_step(dead_threshold)(init_vars(), x, mask, n_q, 1)[3]


def state(variables):
  return jax.tree_util.tree_map(np.asarray, variables['vq'])


def test_nearest_code_matches_brute_force():
  x, mask = batch(3)
  variables = trained_vars()
  _, codes, _ = eval_step()(variables, x, mask, None)
  codebook = state(variables)['codebook']
  residual = np.asarray(x).reshape(-1, D)
  for q in range(Q):
    dist = ((residual[:, None] - codebook[q][None]) ** 2).sum(-1)
    expected = dist.argmin(1)
    np.testing.assert_array_equal(
        np.asarray(codes).reshape(-1, Q)[:, q], expected
    )
    residual = residual - codebook[q][expected]
  rng = np.random.default_rng(0)
  pts, cb = rng.normal(size=(50, 6)), rng.normal(size=(9, 6))
  np.testing.assert_array_equal(
      nearest_code(jnp.asarray(pts, jnp.float32), jnp.asarray(cb, jnp.float32)),
      ((pts[:, None] - cb[None]) ** 2).sum(-1).argmin(1),
  )


def test_nearest_code_two_stage_argmin_is_argmin_with_ties_and_nan():
  rng = np.random.default_rng(1)
  codebook = rng.normal(size=(1024, 8)).astype(np.float32)
  codebook[700] = codebook[5]  # a tie across groups: the first (5) wins
  codebook[6] = codebook[5]  # and within a group
  codebook[40] = codebook[33]  # a tie within a later group
  x = rng.normal(size=(300, 8)).astype(np.float32)
  x[:4] = codebook[5]
  x[4:8] = codebook[33]
  x[8, 0] = np.nan
  highest = jax.lax.Precision.HIGHEST
  dist = jnp.sum(jnp.square(codebook), -1) - 2.0 * jnp.dot(
      x, codebook.T, precision=highest
  )
  got = np.asarray(nearest_code(jnp.asarray(x), jnp.asarray(codebook)))
  np.testing.assert_array_equal(got, np.asarray(jnp.argmin(dist, axis=-1)))
  assert list(got[:8]) == [5] * 4 + [33] * 4
  assert got[8] == 0  # a NaN row: argmin's first NaN
  codebook[100] = np.nan  # a NaN code in a later group wins every row
  got = np.asarray(nearest_code(jnp.asarray(x), jnp.asarray(codebook)))
  np.testing.assert_array_equal(got[9:], 100)


def test_straight_through_gradient_is_identity():
  x, mask = batch()
  variables, vq = trained_vars(), make_vq()
  w = jax.random.normal(jax.random.key(7), x.shape)

  def loss(x):
    return jnp.sum(vq.apply(variables, x, mask, train=False)[0] * w)

  np.testing.assert_allclose(jax.grad(loss)(x), w, rtol=1e-6)


def test_more_quantizers_smaller_residual():
  # No revival: k-means alone guarantees each stage lowers the error.
  x, mask = batch()
  variables = trained_vars(dead_threshold=0.0)
  errors = []
  for k in range(1, Q + 1):
    q, _, _ = eval_step()(variables, x, mask, k)
    errors.append(float(jnp.sum(jnp.square(x - q) * mask[..., None])))
  assert errors[0] < float(jnp.sum(jnp.square(x))), errors
  assert all(a > b for a, b in zip(errors, errors[1:])), errors


@pytest.mark.parametrize('k', [1, 2])
def test_dropout_depth_uses_first_k(k):
  x, mask = batch()
  variables = trained_vars()
  q, codes, aux = eval_step()(variables, x, mask, k)
  codes = np.asarray(codes)
  assert (codes[..., k:] == -1).all() and (codes[..., :k] >= 0).all()
  codebook = state(variables)['codebook']
  expected = sum(codebook[i][codes[..., i]] for i in range(k))
  np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-5)
  assert np.asarray(aux['used'])[k:].sum() == 0


def test_padded_frames_enter_no_statistic():
  clean, mask = batch()
  dirty, _ = batch(pad_value=1e6)
  step = train_step()
  v_clean = v_dirty = init_vars()
  for seed in (1, 2):  # k-means init, then an EMA step with revival.
    _, _, aux_c, v_clean = step(v_clean, clean, mask, Q, seed)
    _, _, aux_d, v_dirty = step(v_dirty, dirty, mask, Q, seed)
    for a, b in zip(
        jax.tree_util.tree_leaves((aux_c, v_clean)),
        jax.tree_util.tree_leaves((aux_d, v_dirty)),
    ):
      np.testing.assert_allclose(
          np.asarray(a, float), np.asarray(b, float), rtol=1e-6, atol=1e-6
      )
  assert np.abs(state(v_dirty)['codebook']).max() < 100


def test_dead_code_is_revived_and_reset():
  x, mask = batch(pad_value=1e6)
  variables = trained_vars()
  s = state(variables)
  cluster_size = s['cluster_size'].copy()
  cluster_size[0] = 100.0
  cluster_size[0, 5] = 0.0  # Code 5 of quantizer 0 is dead.
  variables = {'vq': dict(s, cluster_size=jnp.asarray(cluster_size))}
  _, _, aux, new = train_step()(variables, x, mask, Q, 3)
  new = state(new)
  revived = new['codebook'][0, 5]
  frames = np.asarray(x)[np.asarray(mask)]  # Quantizer 0's input: x itself.
  assert np.abs(frames - revived).sum(-1).min() < 1e-6
  assert new['cluster_size'][0, 5] == 2.0
  np.testing.assert_allclose(new['embed_sum'][0, 5], 2.0 * revived, rtol=1e-6)
  assert int(aux['replaced'][0]) == 1  # Only the dead one.
  assert new['cluster_size'][0].sum() > 100 * (K - 1) * 0.99


def test_reference_revival_leaves_a_dead_code_to_the_ema():
  # The reference's revival is overwritten by the same step's EMA: the dead
  # code ends as embed_sum / smoothed size, not as a frame of the batch.
  x, mask = batch()
  s = state(trained_vars())
  cluster_size = s['cluster_size'].copy()
  cluster_size[0] = 100.0
  cluster_size[0, 5] = 0.0
  variables = {'vq': dict(s, cluster_size=jnp.asarray(cluster_size))}
  _, _, aux, new = train_step(2.0, 'reference')(variables, x, mask, Q, 3)
  new = state(new)
  assert np.asarray(aux['replaced']).tolist() == [0] * Q
  size = new['cluster_size'][0]
  total = size.sum()
  smoothed = (size + 1e-5) / (total + K * 1e-5) * total
  np.testing.assert_allclose(
      new['codebook'][0, 5], new['embed_sum'][0, 5] / smoothed[5], rtol=1e-5
  )
  frames = np.asarray(x)[np.asarray(mask)]
  assert np.abs(frames - new['codebook'][0, 5]).sum(-1).min() > 1e-3


def test_reference_revival_starts_the_ema_at_the_centroids():
  # With decay 1 the EMA keeps its k-means start: cluster sizes n, sums
  # centroid x n ('batch': codes keep their scale) or the centroids
  # ('reference': every code divided by about n).
  x, mask = batch()
  books = {}
  for revival in ('batch', 'reference'):
    vq = ResidualVQ(
        RVQConfig(
            num_quantizers=Q,
            codebook_size=K,
            vq_decay=1.0,
            dead_threshold=0.0,
            revival=revival,
        ),
        dim=D,
    )
    _, new = vq.apply(
        init_vars(),
        x,
        mask,
        train=True,
        mutable=['vq'],
        rngs={'vq': jax.random.key(1)},
    )
    books[revival] = state(new)
  n = books['batch']['cluster_size'][0]
  np.testing.assert_array_equal(n, books['reference']['cluster_size'][0])
  assert n.max() > 1
  np.testing.assert_allclose(
      books['batch']['codebook'][0],
      books['reference']['codebook'][0] * n[:, None],
      rtol=1e-4,
      atol=1e-6,
  )


@pytest.mark.parametrize('ema_sums', ['counts', 'reference'])
def test_kmeans_start_sets_the_ema_sums(ema_sums):
  # 'reference': embed_avg = the centroids (qt.py init_embed_); 'counts':
  # centroid x count, so the first EMA step keeps the codes' scale.
  x, mask = batch()
  empty = rvq.CodebookState(jnp.zeros((K, D)), jnp.zeros(K), jnp.zeros((K, D)))
  got = rvq.kmeans_start(
      jax.random.key(0),
      empty,
      x.reshape(-1, D),
      mask.reshape(-1),
      3,
      jnp.array(False),
      ema_sums,
  )
  weight = got.cluster_size[:, None] if ema_sums == 'counts' else 1.0
  np.testing.assert_allclose(got.embed_sum, got.codebook * weight, rtol=1e-6)
  assert float(got.cluster_size.sum()) == sum(LENGTHS)


def test_no_update_outside_training():
  x, mask = batch()
  vq, variables = make_vq(), trained_vars()
  _, new = vq.apply(variables, x, mask, train=False, mutable=['vq'])
  _ = vq.apply(variables, x, mask, train=True)  # 'vq' immutable: no update.
  for a, b in zip(
      jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(new)
  ):
    np.testing.assert_array_equal(a, b)
  fresh = init_vars()
  assert not state(fresh)['initialized']
  assert state(variables)['initialized']


def test_per_example_depth():
  x, mask = batch()
  variables = trained_vars(dead_threshold=0.0)
  n_q = jnp.array([1, 3], jnp.int32)
  q, codes, aux, new = train_step(0.0)(variables, x, mask, n_q, 4)
  codes = np.asarray(codes)
  assert (codes[0, :, 1:] == -1).all() and (codes[1] >= 0).all()
  codebook = state(variables)['codebook']
  np.testing.assert_allclose(
      q[0], codebook[0][codes[0, :, 0]], rtol=1e-5, atol=1e-5
  )
  # Quantizers 1 and 2 only counted example 1's valid frames.
  old, new = state(variables)['cluster_size'], state(new)['cluster_size']
  for i, frames in ((0, sum(LENGTHS)), (1, LENGTHS[1]), (2, LENGTHS[1])):
    np.testing.assert_allclose(
        new[i].sum(), 0.99 * old[i].sum() + 0.01 * frames, rtol=1e-5
    )


def test_sharded_step_matches_single_device():
  script = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from asl_vq.models.rvq import ResidualVQ, RVQConfig
    vq = ResidualVQ(RVQConfig(num_quantizers=3, codebook_size=16), dim=8)
    x = jax.random.normal(jax.random.key(1), (8, 12, 8))
    mask = jnp.arange(12)[None] < jnp.arange(5, 13)[:, None]
    n_q = jnp.array([1, 2, 3, 3, 2, 1, 3, 3])
    init = vq.init(jax.random.key(0), x, mask, train=False)
    @jax.jit
    def step(v, x, mask, n_q, seed):
      out, new = vq.apply(v, x, mask, n_q=n_q, train=True, mutable=['vq'],
                          rngs={'vq': jax.random.key(seed)})
      return out, new
    def run(x, mask, n_q):
      v = init
      for seed in (1, 2):
        out, v = step(v, x * seed, mask, n_q, seed)
      return out, v
    sh = NamedSharding(Mesh(np.array(jax.devices()), ('data',)), P('data'))
    a = run(x, mask, n_q)
    b = run(*(jax.device_put(t, sh) for t in (x, mask, n_q)))
    for u, w in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      np.testing.assert_allclose(np.asarray(u, float), np.asarray(w, float),
                                 rtol=1e-5, atol=1e-5)
    print(len(jax.devices()), 'ok')
  """)
  env = xla_env.env(os.environ, devices=4, JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-c', script],
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['4', 'ok']


def test_cluster_stats_match_one_hot_matmul():
  from asl_vq.models import rvq  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  n, k, d = 500, 64, 8
  x = jnp.asarray(rng.standard_normal((n, d)), jnp.float32)
  codes = jnp.asarray(rng.integers(0, k, n), jnp.int32)
  weights = jnp.asarray(rng.random(n) > 0.3, jnp.float32)
  counts, sums = rvq.cluster_statistics(x, codes, weights, k)
  onehot = jax.nn.one_hot(codes, k) * weights[:, None]
  np.testing.assert_array_equal(counts, onehot.sum(0))
  np.testing.assert_allclose(
      sums,
      jnp.dot(onehot.T, x, precision=jax.lax.Precision.HIGHEST),
      rtol=1e-5,
      atol=1e-5,
  )


@pytest.mark.parametrize('commit_grad', ['first', 'all'])
def test_commitment_gradient_reaches_input_through_chosen_terms(commit_grad):
  # commit_loss = mean over the Q quantizers of sum_valid |r_q - c_q|^2 / n,
  # r_0 = x, r_q = x - c_0 - ... - c_{q-1}. 'first' (the reference): only
  # quantizer 0's term has a gradient, 2 (x - c_0) / (n Q); 'all': every
  # term's, 2 sum_q (r_q - c_q) / (n Q).
  x, mask = batch()
  variables = trained_vars()
  vq = ResidualVQ(
      RVQConfig(num_quantizers=Q, codebook_size=K, commit_grad=commit_grad),
      dim=D,
  )
  commit = lambda x: vq.apply(variables, x, mask, train=False)[2]['commit_loss']
  grad = np.asarray(jax.grad(commit)(x))
  codes = np.asarray(vq.apply(variables, x, mask, train=False)[1])
  chosen = np.asarray(variables['vq']['codebook'])[np.arange(Q), codes]
  r = np.asarray(x)[..., None, :] - np.cumsum(chosen, -2) + chosen
  terms = 2 * (r - chosen) / (sum(LENGTHS) * Q)  # [B, T, Q, D]
  expected = terms[..., 0, :] if commit_grad == 'first' else terms.sum(-2)
  expected = np.where(np.asarray(mask)[..., None], expected, 0.0)
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
  reference = ResidualVQ(RVQConfig(num_quantizers=Q, codebook_size=K), dim=D)
  np.testing.assert_allclose(
      commit(x),
      reference.apply(variables, x, mask, train=False)[2]['commit_loss'],
      rtol=1e-6,
  )
