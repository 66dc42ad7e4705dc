"""Tests of the MusicGen-style LM: patterns, causality, sampling, training."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asl_vq import config_lib
from asl_vq import vocab
from asl_vq.models import lm as lm_lib
from asl_vq.models.transformer import BOS, EOS, PAD
from asl_vq.tasks import base
from asl_vq.tasks import lm

import train_helpers
import tiny_tokenizer

B, L, Q, K = 3, 6, 3, 8
LENGTHS = (6, 4, 1)
PHRASES = ("ab c", "hello", "x")


def sample_uncached(
    config: lm_lib.LMConfig,
    variables,
    text,
    text_mask,
    key,
    *,
    max_frames: int,
    temperature=0.0,
    top_k: int = 0,
):
  """`sample` re-running the whole causal decoder every step: the reference
  the cached one is tested against."""
  model = lm_lib.LM(config)
  memory = model.apply(variables, text, text_mask, method=lm_lib.LM.encode)

  def next_logits(state, tokens, step):
    logits = model.apply(
        variables,
        memory,
        text_mask,
        tokens[:, :-1],
        method=lm_lib.LM.decode_logits,
    )
    return jax.lax.dynamic_index_in_dim(logits, step, 1, False), state

  return lm_lib.sampling_loop(
      config,
      next_logits,
      (),
      key,
      memory.shape[0],
      max_frames,
      temperature,
      top_k,
  )


def tiny_config(pattern):
  return lm_lib.LMConfig(
      num_quantizers=Q,
      codebook_size=K,
      pattern=pattern,
      dim=16,
      num_heads=2,
      num_layers=2,
      num_text_layers=1,
      text_dim=8,
      mlp_dim=32,
      dropout=0.0,
  )


def codes_and_mask():
  mask = jnp.arange(L)[None] < jnp.array(LENGTHS)[:, None]
  codes = jax.random.randint(jax.random.key(0), (B, L, Q), 0, K)
  return jnp.where(mask[..., None], codes, 0), mask


def text_inputs(phrases=PHRASES, width=8):
  labels = np.full((len(phrases), width), vocab.PAD_ID, np.int32)
  label_mask = np.zeros((len(phrases), width), bool)
  for i, p in enumerate(phrases):
    labels[i, : len(p)] = vocab.encode(p)
    label_mask[i, : len(p)] = True
  return lm_lib.phrase_inputs(jnp.asarray(labels), jnp.asarray(label_mask))


@functools.lru_cache(maxsize=None)
def tiny_model(pattern):
  config = tiny_config(pattern)
  codes, mask = codes_and_mask()
  tokens, _ = lm_lib.build_pattern(codes, mask, K, pattern)
  text, text_mask = text_inputs()
  variables = lm_lib.LM(config).init(
      jax.random.key(1), tokens[:, :-1], text, text_mask, train=False
  )
  return config, variables


@functools.lru_cache(maxsize=None)
def logits_fn(pattern):
  return jax.jit(
      functools.partial(lm_lib.LM(tiny_config(pattern)).apply, train=False)
  )


def test_parallel_pattern_frames_each_stream():
  codes, mask = codes_and_mask()
  tokens, predicted = lm_lib.build_pattern(codes, mask, K, "parallel")
  assert tokens.shape == predicted.shape == (B, L + 2, Q)
  for b, n in enumerate(LENGTHS):
    for q in range(Q):
      expected = [K + BOS, *codes[b, :n, q], K + EOS] + [K + PAD] * (L - n)
      np.testing.assert_array_equal(tokens[b, :, q], expected)
      np.testing.assert_array_equal(
          predicted[b, :, q], [0] + [1] * (n + 1) + [0] * (L - n)
      )


def test_delay_pattern_shifts_stream_k_by_k_and_undoes():
  codes, mask = codes_and_mask()
  framed, framed_predicted = lm_lib.build_pattern(codes, mask, K, "parallel")
  tokens, predicted = lm_lib.build_pattern(codes, mask, K, "delay")
  assert tokens.shape == predicted.shape == (B, L + 2 + Q - 1, Q)
  for q in range(Q):
    # BOS fills the first q steps of stream q, PAD the last Q - 1 - q.
    np.testing.assert_array_equal(tokens[:, : q + 1, q], K + BOS)
    np.testing.assert_array_equal(tokens[:, q : q + L + 2, q], framed[..., q])
    np.testing.assert_array_equal(tokens[:, q + L + 2 :, q], K + PAD)
    np.testing.assert_array_equal(
        predicted[:, q : q + L + 2, q], framed_predicted[..., q]
    )
    assert not predicted[:, : q + 1, q].any()
  # Stream 1's first code sits one step after stream 0's (as in MusicGen).
  np.testing.assert_array_equal(tokens[:, 2, 1], codes[:, 0, 1])
  np.testing.assert_array_equal(lm_lib.undo_pattern(tokens, "delay"), framed)
  np.testing.assert_array_equal(lm_lib.undo_pattern(framed, "parallel"), framed)


@pytest.mark.parametrize("pattern", lm_lib.PATTERNS)
def test_cached_sampling_equals_uncached_greedy(pattern):
  config, variables = tiny_model(pattern)
  text, text_mask = text_inputs()
  key = jax.random.key(2)
  run = functools.partial(
      jax.jit, static_argnums=0, static_argnames=("max_frames", "top_k")
  )
  cached = run(lm_lib.sample)(
      config, variables, text, text_mask, key, max_frames=7
  )
  uncached = run(sample_uncached)(
      config, variables, text, text_mask, key, max_frames=7
  )
  codes, lengths = cached
  assert codes.shape == (B, 7, Q) and codes.dtype == jnp.int32
  np.testing.assert_array_equal(codes, uncached[0])
  np.testing.assert_array_equal(lengths, uncached[1])
  assert ((1 <= lengths) & (lengths <= 7)).all()
  assert (codes >= 0).all() and (codes < K).all()
  for c, n in zip(np.asarray(codes), np.asarray(lengths)):
    assert (c[n:] == 0).all()


def test_top_1_sampling_is_greedy():
  config, variables = tiny_model("delay")
  text, text_mask = text_inputs()
  greedy = lm_lib.sample(
      config, variables, text, text_mask, jax.random.key(0), max_frames=5
  )
  top1 = lm_lib.sample(
      config,
      variables,
      text,
      text_mask,
      jax.random.key(9),
      max_frames=5,
      temperature=1.0,
      top_k=1,
  )
  np.testing.assert_array_equal(greedy[0], top1[0])


def test_sampling_stops_at_stream_0_eos():
  config, variables = tiny_model("delay")
  params = jax.tree.map(lambda a: a, variables["params"])
  bias = params["frame_decoder"]["heads"]["bias"]  # [Q, K + 3]
  params["frame_decoder"]["heads"]["bias"] = bias.at[0, K + EOS].set(1e3)
  text, text_mask = text_inputs()
  codes, lengths = lm_lib.sample(
      config,
      {"params": params},
      text,
      text_mask,
      jax.random.key(0),
      max_frames=6,
  )
  # EOS is forbidden at the first frame only: one frame each.
  np.testing.assert_array_equal(lengths, [1] * B)
  assert (codes[:, 1:] == 0).all()


def test_sampling_temperature_and_top_k():
  logits = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4]] * 4000))
  draws = lm_lib.sample_logits(jax.random.key(0), logits, 1.0, top_k=2)
  assert set(np.unique(draws)) == {2, 3}
  assert abs((draws == 3).mean() - 4 / 7) < 0.03
  np.testing.assert_array_equal(
      lm_lib.sample_logits(jax.random.key(0), logits, 0.0), 3
  )


@pytest.mark.parametrize("pattern", lm_lib.PATTERNS)
def test_decoder_is_causal(pattern):
  _, variables = tiny_model(pattern)
  codes, mask = codes_and_mask()
  tokens, _ = lm_lib.build_pattern(codes, mask, K, pattern)
  tokens = tokens[:, :-1]
  text, text_mask = text_inputs()
  t = 3
  changed = tokens.at[:, t + 1 :].set((tokens[:, t + 1 :] + 1) % K)
  apply = logits_fn(pattern)
  before = apply(variables, tokens, text, text_mask)
  after = apply(variables, changed, text, text_mask)
  np.testing.assert_allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-5)
  assert not np.allclose(before[:, t + 1 :], after[:, t + 1 :])


def test_text_conditions_and_its_padding_does_not():
  _, variables = tiny_model("parallel")
  codes, mask = codes_and_mask()
  tokens = lm_lib.build_pattern(codes, mask, K, "parallel")[0][:, :-1]
  text, text_mask = text_inputs()
  wider, wider_mask = text_inputs(width=14)
  garbage = jnp.where(wider_mask, wider, 33)  # padding holds letters.
  apply = logits_fn("parallel")
  base = apply(variables, tokens, text, text_mask)
  np.testing.assert_allclose(
      base, apply(variables, tokens, garbage, wider_mask), atol=1e-5
  )
  other, other_mask = text_inputs(("zz z", "world", "q"))
  assert not np.allclose(base, apply(variables, tokens, other, other_mask))


def test_stream_accuracy_and_loss_on_a_known_case():
  # One example, 3 steps, 2 streams, codebook 2 (+ 3 specials: EOS = 3).
  targets = jnp.array([[[0, 1], [1, 1], [3, 3]]])
  predicted = jnp.array([[[0, 0], [1, 1], [3, 0]]])
  mask = jnp.array([[[1, 1], [1, 0], [1, 1]]], bool)
  logits = jax.nn.one_hot(predicted, 5) * 2.0
  right, total = lm_lib.stream_hits(logits, targets, mask, codebook_size=2)
  # Stream 0: codes at steps 0, 1, both right; the EOS is not counted.
  # Stream 1: step 0 only (step 1 masked, step 2 EOS): wrong.
  np.testing.assert_array_equal(right, [2, 0])
  np.testing.assert_array_equal(total, [2, 1])
  losses = lm_lib.stream_losses(logits, targets, mask)
  # Cross-entropy over every masked target, EOS included.
  log_z = np.log(np.exp(2.0) + 4)
  np.testing.assert_allclose(losses, [log_z - 2.0, log_z], rtol=1e-5)


def test_lm_loss_falls_on_a_repeated_batch():
  # The delay pattern here; test_generate trains the parallel one.
  config = config_lib.load("lm", "tiny,pattern=delay")
  config.tokens = tiny_tokenizer.tokens_dir()
  config.train.learning_rate = 1e-2
  splits, code_spec = base.load_sign_splits(config)
  # AdamW at a constant rate (the paper's LM optimiser) needs more steps on
  # one batch than schedule-free did: 3.93 -> 2.41 in 30.
  losses = train_helpers.losses_on_a_repeated_batch(
      lm.LMTask(config, code_spec), config, splits["train"], 45
  )
  assert losses[-1] < 0.6 * losses[0], losses


def test_config_from_a_run_config():
  """`LMConfig.from_config`: the model block and the code streams' sizes."""
  from asl_vq.data import tokens  # pylint: disable=g-import-not-at-top

  config = config_lib.load("lm", "tiny")
  c = lm_lib.LMConfig.from_config(config, tokens.CodeSpec(Q, K))
  assert all(getattr(c, k) == v for k, v in config.model.items())
  assert (c.num_quantizers, c.codebook_size) == (Q, K)
  shapes = jax.eval_shape(
      functools.partial(lm_lib.init_variables, lm_lib.LM(c), L, 9),
      jax.random.key(0),
  )
  assert set(shapes) == {"params"}
