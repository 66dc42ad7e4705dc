"""Tests of the sign-to-text translator."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from asl_vq import vocab
from asl_vq.models.translate import (
    Translator,
    TranslatorConfig,
    greedy_decode,
    sequence_loss,
)
from asl_vq.models import translate as translate_lib
from asl_vq.models.transformer import shift_targets

B, L, S = 3, 8, 5
LENGTHS = (8, 5, 3)


def greedy_decode_uncached(
    config: translate_lib.TranslatorConfig,
    variables,
    encoder_inputs,
    input_mask,
    max_len: int | None = None,
):
  """`greedy_decode` re-running the whole causal decoder every step.

  max_len times the decoder's work; the reference the cached one is tested
  against.
  """
  max_len = max_len or config.max_target_len + 1
  model = translate_lib.Translator(config)
  memory = model.apply(
      variables,
      encoder_inputs,
      input_mask,
      method=translate_lib.Translator.encode,
  )

  def next_logits(state, tokens, step):
    logits = model.apply(
        variables,
        memory,
        input_mask,
        tokens[:, :-1],
        method=translate_lib.Translator.decode_logits,
    )
    return jax.lax.dynamic_index_in_dim(logits, step, 1, False), state

  return translate_lib.greedy_loop(next_logits, (), memory.shape[0], max_len)


def tiny_config(encoder):
  return TranslatorConfig(
      encoder=encoder,
      num_quantizers=2,
      codebook_size=16,
      dim=16,
      num_heads=2,
      num_encoder_layers=1,
      num_decoder_layers=2,
      mlp_dim=32,
      dropout=0.0,
      max_target_len=6,
      num_blocks=1,
      kernel_size=3,
  )


def inputs(encoder):
  key = jax.random.key(0)
  mask = jnp.arange(L)[None] < jnp.array(LENGTHS)[:, None]
  if encoder == 'tokens':
    x = jax.random.randint(key, (B, L, 2), 0, 16)
    return jnp.where(mask[..., None], x, -1), mask
  x = jax.random.normal(key, (B, L, 42, 2))
  return jnp.where(mask[..., None, None], x, 0.0), mask


def decoder_inputs():
  chars = jax.random.randint(jax.random.key(1), (B, S), 0, 59)
  return chars.at[:, 0].set(vocab.START_ID)


@functools.lru_cache(maxsize=None)
def tiny_model(encoder):
  config = tiny_config(encoder)
  x, mask = inputs(encoder)
  variables = Translator(config).init(
      jax.random.key(2), x, mask, decoder_inputs(), train=False
  )
  return config, variables


@functools.lru_cache(maxsize=None)
def logits_fn(encoder):
  model = Translator(tiny_config(encoder))
  return jax.jit(functools.partial(model.apply, train=False))


@pytest.mark.parametrize('encoder', ['tokens', 'continuous'])
def test_cached_greedy_decoding_equals_uncached(encoder):
  config, variables = tiny_model(encoder)
  x, mask = inputs(encoder)
  decode = functools.partial(jax.jit, static_argnums=(0, 4))
  cached = decode(greedy_decode)(config, variables, x, mask, 7)
  uncached = decode(greedy_decode_uncached)(config, variables, x, mask, 7)
  assert cached.shape == (B, 7) and cached.dtype == jnp.int32
  np.testing.assert_array_equal(cached, uncached)
  # PAD after END.
  for row in np.asarray(cached):
    ends = np.flatnonzero(row == vocab.END_ID)
    if ends.size:
      assert (row[ends[0] + 1 :] == vocab.PAD_ID).all()


def test_greedy_decoding_stops_at_end():
  config, variables = tiny_model('tokens')
  # Make END the argmax everywhere: the output is END then PAD.
  bias = variables['params']['char_decoder']['logits']['bias']
  params = jax.tree.map(lambda a: a, variables['params'])
  params['char_decoder']['logits']['bias'] = bias.at[vocab.END_ID].set(1e3)
  x, mask = inputs('tokens')
  out = greedy_decode(config, {'params': params}, x, mask)
  expected = [vocab.END_ID] + [vocab.PAD_ID] * config.max_target_len
  np.testing.assert_array_equal(out, [expected] * B)


def test_decoder_is_causal():
  _, variables = tiny_model('tokens')
  x, mask = inputs('tokens')
  y = decoder_inputs()
  t = 2
  changed = y.at[:, t + 1 :].set(vocab.END_ID)
  apply = logits_fn('tokens')
  before, after = apply(variables, x, mask, y), apply(
      variables, x, mask, changed
  )
  np.testing.assert_allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-5)
  assert not np.allclose(before[:, t + 1 :], after[:, t + 1 :])


@pytest.mark.parametrize('encoder', ['tokens', 'continuous'])
def test_encoder_padding_invariance(encoder):
  _, variables = tiny_model(encoder)
  x, mask = inputs(encoder)
  fill = 7 if encoder == 'tokens' else 3.0
  longer = jnp.concatenate([x, jnp.full_like(x[:, :4], fill)], axis=1)
  longer_mask = jnp.pad(mask, ((0, 0), (0, 4)))
  apply = logits_fn(encoder)
  y = decoder_inputs()
  np.testing.assert_allclose(
      apply(variables, x, mask, y),
      apply(variables, longer, longer_mask, y),
      atol=1e-4,
  )


def test_shift_targets():
  a, b, c = (vocab.CHAR_TO_ID[ch] for ch in 'abc')
  p = vocab.PAD_ID
  labels = jnp.array([[a, b, c], [c, p, p], [p, p, p]])
  label_mask = jnp.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]], bool)
  inputs_, targets, target_mask = jax.jit(shift_targets)(labels, label_mask)
  s, e = vocab.START_ID, vocab.END_ID
  np.testing.assert_array_equal(
      inputs_, [[s, a, b, c], [s, c, p, p], [s, p, p, p]]
  )
  np.testing.assert_array_equal(
      targets, [[a, b, c, e], [c, e, p, p], [e, p, p, p]]
  )
  np.testing.assert_array_equal(
      target_mask, [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]
  )


@pytest.mark.parametrize('encoder', ['tokens', 'continuous'])
def test_overfits_one_batch(encoder):
  config, variables = tiny_model(encoder)
  x, mask = inputs(encoder)
  labels = jax.random.randint(jax.random.key(3), (B, S - 1), 33, 59)
  label_mask = jnp.arange(S - 1)[None] < jnp.array([[4], [2], [3]])
  y, targets, target_mask = shift_targets(labels, label_mask)
  model = Translator(config)
  params, state = variables['params'], {
      k: v for k, v in variables.items() if k != 'params'
  }
  tx = optax.adam(1e-2)

  @jax.jit
  def step(params, state, opt_state):
    def loss_fn(params):
      logits, new_state = model.apply(
          {'params': params, **state},
          x,
          mask,
          y,
          train=True,
          mutable=list(state),
      )
      return sequence_loss(logits, targets, target_mask, 0.1), new_state

    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), state, opt_state, loss

  opt_state = tx.init(params)
  losses = []
  for _ in range(30):
    params, state, opt_state, loss = step(params, state, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize('inputs', ['tokens', 'continuous'])
def test_config_from_a_run_config(inputs):
  """`TranslatorConfig.from_config`: the run config's model block, the code
  streams' sizes (tokens), the phrase length and the caller's attention
  passes; `init_variables` starts the model's variables (the task's)."""
  from asl_vq import config_lib  # pylint: disable=g-import-not-at-top
  from asl_vq.data import tokens  # pylint: disable=g-import-not-at-top

  config = config_lib.load('translate', f'tiny,input={inputs}')
  spec = tokens.CodeSpec(3, 32) if inputs == 'tokens' else None
  c = TranslatorConfig.from_config(
      config, spec, sequences_per_pass=2, batch_devices=1
  )
  assert all(getattr(c, k) == v for k, v in config.model.items())
  assert c.max_target_len == config.data.max_label_len
  assert (c.sequences_per_pass, c.batch_devices) == (2, 1)
  if spec:
    assert (c.num_quantizers, c.codebook_size) == (3, 32)
  shapes = jax.eval_shape(
      functools.partial(translate_lib.init_variables, Translator(c), 7),
      jax.random.key(0),
  )
  assert ('batch_stats' in shapes) == (inputs == 'continuous')
