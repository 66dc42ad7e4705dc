"""Tests of the letter probe."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from asl_vq import vocab
from asl_vq.models.transformer import frame_codes
from asl_vq.models.probe import (
    Probe,
    ProbeConfig,
    init_from_codebooks,
    letter_accuracy,
    letter_targets,
    probe_loss,
)

B, L, Q, K, DIM = 3, 6, 2, 8, 16
LENGTHS = (6, 4, 2)


def tiny_config(encoder):
  return ProbeConfig(
      encoder=encoder,
      num_quantizers=Q,
      codebook_size=K,
      dim=DIM,
      num_heads=2,
      num_layers=1,
      mlp_dim=32,
      dropout=0.0,
      num_blocks=1,
      kernel_size=3,
  )


def inputs(encoder):
  key = jax.random.key(0)
  mask = jnp.arange(L)[None] < jnp.array(LENGTHS)[:, None]
  if encoder == 'tokens':
    x = jax.random.randint(key, (B, L, Q), 0, K)
    return jnp.where(mask[..., None], x, -1), mask
  x = jax.random.normal(key, (B, L, 42, 2))
  return jnp.where(mask[..., None, None], x, 0.0), mask


@functools.lru_cache(maxsize=None)
def tiny_model(encoder):
  config = tiny_config(encoder)
  x, mask = inputs(encoder)
  model = Probe(config)
  return model, model.init(jax.random.key(1), x, mask, train=False)


def test_frame_codes():
  codes = jnp.array([[[3], [4], [5]], [[6], [-1], [-1]]])
  mask = jnp.array([[1, 1, 1], [1, 0, 0]], bool)
  tokens, token_mask = frame_codes(codes, mask, K)
  bos, eos, pad = K, K + 1, K + 2
  np.testing.assert_array_equal(
      tokens[..., 0], [[bos, 3, 4, 5, eos], [bos, 6, eos, pad, pad]]
  )
  np.testing.assert_array_equal(token_mask, [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def test_init_from_codebooks_copies_exactly():
  _, variables = tiny_model('tokens')
  codebooks = jax.random.normal(jax.random.key(2), (Q, K, DIM))
  params = init_from_codebooks(variables['params'], codebooks)
  table = params['encoder']['embed']['embedding']
  np.testing.assert_array_equal(table[:, :K], codebooks)
  old = variables['params']['encoder']['embed']['embedding']
  np.testing.assert_array_equal(table[:, K:], old[:, K:])
  with pytest.raises(ValueError, match='dim must be'):
    init_from_codebooks(variables['params'], codebooks[..., :8])


def test_letter_targets():
  phrases = ['hello world', 'zap-1', '']
  labels = np.full((3, 12), vocab.PAD_ID, np.int32)
  label_mask = np.zeros((3, 12), bool)
  for i, phrase in enumerate(phrases):
    labels[i, : len(phrase)] = vocab.encode(phrase)
    label_mask[i, : len(phrase)] = True
  targets = np.asarray(jax.jit(letter_targets)(labels, label_mask))
  for phrase, row in zip(phrases, targets):
    assert {vocab.LETTERS[j] for j in np.flatnonzero(row)} == (
        set(phrase) & set(vocab.LETTERS)
    )


@pytest.mark.parametrize('encoder', ['tokens', 'continuous'])
def test_padding_invariance(encoder):
  model, variables = tiny_model(encoder)
  x, mask = inputs(encoder)
  fill = 5 if encoder == 'tokens' else 3.0
  longer = jnp.concatenate([x, jnp.full_like(x[:, :3], fill)], axis=1)
  longer_mask = jnp.pad(mask, ((0, 0), (0, 3)))
  apply = jax.jit(functools.partial(model.apply, train=False))
  np.testing.assert_allclose(
      apply(variables, x, mask),
      apply(variables, longer, longer_mask),
      atol=1e-4,
  )


@pytest.mark.parametrize('encoder', ['tokens', 'continuous'])
def test_loss_falls_on_one_batch(encoder):
  model, variables = tiny_model(encoder)
  x, mask = inputs(encoder)
  targets = jax.random.bernoulli(jax.random.key(3), 0.3, (B, 26)).astype(
      jnp.float32
  )
  params = variables['params']
  state = {k: v for k, v in variables.items() if k != 'params'}
  tx = optax.adam(1e-2)

  @jax.jit
  def step(params, state, opt_state):
    def loss_fn(params):
      logits, new_state = model.apply(
          {'params': params, **state}, x, mask, train=True, mutable=list(state)
      )
      return probe_loss(logits, targets), new_state

    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), state, opt_state, loss

  opt_state = tx.init(params)
  losses = []
  for _ in range(25):
    params, state, opt_state, loss = step(params, state, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0], losses
  logits = model.apply({'params': params, **state}, x, mask, train=False)
  accuracy = letter_accuracy(logits, targets)
  assert accuracy.shape == (26,) and float(accuracy.mean()) > 0.9


def test_loss_and_accuracy_skip_padded_examples():
  logits = jnp.array([[5.0] * 26, [-5.0] * 26])
  targets = jnp.array([[1.0] * 26, [1.0] * 26])
  real = jnp.array([True, False])
  np.testing.assert_allclose(letter_accuracy(logits, targets, real), 1.0)
  assert float(probe_loss(logits, targets, real)) < 0.01


def test_probe_baselines_from_counts():
  """Read 0.77 against these (issue 30, 8): 4 phrases; letter a in 3 of
  them, b in 1, the rest in none."""
  from asl_vq.tasks import probe  # pylint: disable=g-import-not-at-top

  present = np.zeros(26)
  present[:2] = (3, 1)
  tp, tn = np.zeros(26), np.full(26, 4.0)
  tp[:2], tn[:2] = (3, 0), (0, 3)  # a: always said; b: never said.
  got = probe.baselines(present, tp, tn, 4)
  # majority: a 3/4, b 3/4, the other 24 letters 1.
  assert got['majority_accuracy'] == pytest.approx((0.75 * 2 + 24) / 26)
  # balanced over a and b only: a (1 + 0) / 2, b (0 + 1) / 2.
  assert got['balanced_accuracy'] == pytest.approx(0.5)
  assert np.isnan(probe.baselines(np.zeros(26), tp, tn, 4)['balanced_accuracy'])


def test_config_from_a_run_config():
  """`ProbeConfig.from_config` and `init_variables` (with the tokenizer's
  codebooks in the stream embeddings)."""
  from asl_vq import config_lib  # pylint: disable=g-import-not-at-top
  from asl_vq.data import tokens  # pylint: disable=g-import-not-at-top
  from asl_vq.models import probe as probe_lib  # pylint: disable=g-import-not-at-top

  config = config_lib.load('probe', 'tiny')
  c = ProbeConfig.from_config(config, tokens.CodeSpec(Q, K))
  assert all(getattr(c, k) == v for k, v in config.model.items())
  assert (c.num_quantizers, c.codebook_size) == (Q, K)
  assert (c.sequences_per_pass, c.batch_devices) == (0, 1)
  books = np.arange(Q * K * c.dim, dtype=np.float32).reshape(Q, K, c.dim)
  variables = probe_lib.init_variables(Probe(c), L, jax.random.key(0), books)
  table = variables['params']['encoder']['embed']['embedding']
  np.testing.assert_array_equal(table[:, :K], books)
