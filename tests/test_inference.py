"""`asl_vq.Tokenizer`: batching, reconstruction, text form, input checks."""

import functools
import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import asl_vq
import tiny_tokenizer
from asl_vq import config_lib
from asl_vq import errors
from asl_vq import generate
from asl_vq import inference
from asl_vq import vocab
from asl_vq.data import datasets
from asl_vq.models import tokenizer as tokenizer_lib


@pytest.fixture(scope="module")
def tok():
  return asl_vq.Tokenizer.load(tiny_tokenizer.workdir())


@pytest.fixture(scope="module")
def sequences(tok):
  splits = datasets.load(tok.config)
  return [
      splits[s][i]["hands"]
      for s in ("validation", "test")
      for i in range(len(splits[s]))
  ]


def test_vocab(tok):
  assert (tok.code_spec.num_quantizers, tok.code_spec.codebook_size) == (4, 32)
  assert "<a98><b624><c235><d17>" in asl_vq.inference.TEXT_FORMAT


def test_codes_have_one_row_per_kept_frame(tok, sequences):
  hands = sequences[0].copy()
  hands[::3] = np.nan  # frames with no hand are dropped.
  kept = int((~np.isnan(hands).all(axis=(1, 2))).sum())
  assert kept < len(hands) and kept <= tok.max_len
  codes = tok.encode(hands)
  assert codes.dtype == np.int32 and codes.shape == (kept, 4)
  assert 0 <= codes.min() and codes.max() < 32
  long = np.concatenate(sequences[:3])  # resampled to max_len.
  assert tok.encode(long).shape == (tok.max_len, 4)


def test_a_sequence_encodes_alike_alone_and_in_a_batch(tok, sequences):
  batch = sequences[:6] + [np.concatenate(sequences[:3])]
  assert len({tok.encode(h).shape[0] for h in batch}) > 3
  for alone, batched in zip([tok.encode(h) for h in batch], tok.encode(batch)):
    np.testing.assert_array_equal(alone, batched)


def test_non_finite_input_is_a_missing_detection(tok, sequences):
  """One +inf (or a float64 beyond float32) codes as that value missing;
  it once made every frame's codes [0, 0, 0, 0] (issue 30, 5)."""
  hands = sequences[2].astype(np.float64)
  frame = int(np.argwhere(~np.isnan(hands).any(axis=(1, 2)))[3, 0])
  missing = hands.copy()
  missing[frame, 25, 0] = np.nan
  expected = tok.encode(missing)
  for bad in (np.inf, -np.inf, 1e300):
    poisoned = hands.copy()
    poisoned[frame, 25, 0] = bad
    np.testing.assert_array_equal(tok.encode(poisoned), expected)
  assert len(np.unique(expected[:, 0])) > 1


def test_mask_drops_padding(tok, sequences):
  hands = sequences[1]
  padded = np.concatenate([hands, np.zeros((7, 42, 2), np.float32)])
  mask = np.arange(len(padded)) < len(hands)
  np.testing.assert_array_equal(tok.encode(padded, mask), tok.encode(hands))
  np.testing.assert_array_equal(
      tok.encode([padded], [mask])[0], tok.encode(hands)
  )


def test_reconstruction_improves_with_more_quantizers(tok, sequences):
  codes = tok.encode(sequences)
  targets = np.concatenate([tok.preprocess(h) for h in sequences])
  errors = [
      np.mean((np.concatenate(tok.decode(codes, n_q=k)) - targets) ** 2)
      for k in (1, 2, 3, 4)
  ]
  assert all(a >= b for a, b in zip(errors, errors[1:])), errors
  assert errors[-1] < errors[0], errors
  np.testing.assert_array_equal(
      tok.decode(codes[0][:, :2]), tok.decode(codes[0], n_q=2)
  )
  assert tok.decode(codes[0]).shape == (len(codes[0]), 42, 2)


def test_text_round_trip(tok, sequences):
  codes = tok.encode(sequences[0])
  text = tok.to_text(codes)
  assert text.count(" ") == len(codes) - 1
  assert text.startswith(f"<a{codes[0, 0]}><b{codes[0, 1]}>")
  np.testing.assert_array_equal(tok.from_text(text), codes)
  np.testing.assert_array_equal(
      tok.from_text(tok.to_text(codes[:, :2])), codes[:, :2]
  )
  assert tok.from_text("").shape == (0, 4)


@pytest.mark.parametrize(
    "text, match",
    [
        ("<a1><b2> <a3>", "different numbers"),
        ("<a1><c2>", "in order"),
        ("<a1><b2>  <a1><b2>", "frame 1"),
        ("<a1><b2>,<a1><b2>", "frame 0"),
        ("<a1><b-2>", "frame 0"),
        ("a1 b2", "frame 0"),
        ("<a1><b2><c3><d4><e5>", "exceed"),
        ("<a32>", "exceed"),
        ("<a12345678901234567890>", "exceed"),  # beyond int64 too.
    ],
)
def test_malformed_text(tok, text, match):
  with pytest.raises(ValueError, match=match):
    tok.from_text(text)


@pytest.mark.parametrize(
    "hands, match",
    [
        (np.zeros((5, 21, 2), np.float32), r"\[T, 42, 2\]"),
        (np.zeros((2, 5, 42, 2), np.float32), r"\[T, 42, 2\]"),
        (np.zeros((0, 42, 2), np.float32), "no frames"),
        (np.full((5, 42, 2), np.nan, np.float32), "no hand"),
    ],
)
def test_bad_input(tok, hands, match):
  with pytest.raises(ValueError, match=match):
    tok.encode(hands)
  with pytest.raises(ValueError, match=match):
    tok.encode([np.zeros((3, 42, 2), np.float32), hands])


def test_bad_codes(tok):
  with pytest.raises(ValueError, match="in \\[0, 32\\)"):
    tok.decode(np.full((3, 4), 32))
  with pytest.raises(ValueError, match="integers"):
    tok.decode(np.zeros((3, 5), np.int32))
  with pytest.raises(ValueError, match="n_q"):
    tok.decode(np.zeros((3, 4), np.int32), n_q=0)


def test_transcribe_reads_the_ctc_head_greedily(tok, sequences):
  # Against the model's full forward pass (evaluation mode), decoded here.
  workdir = tiny_tokenizer.workdir()
  config = inference.read_config(workdir, kind="tokenizer")
  model = tokenizer_lib.TokenizerModel(
      tokenizer_lib.TokenizerConfig.from_config(config)
  )
  variables, _ = inference.restore_variables(
      workdir,
      config,
      functools.partial(tokenizer_lib.init_variables, model, 2),
  )
  batch = sequences[:5]
  got = tok.transcribe(batch)
  assert got == [tok.transcribe(h) for h in batch]
  assert any(got)  # the tiny run's head writes something to compare.
  for hands, text in zip(batch, got):
    x = tok.preprocess(hands)
    out = model.apply(
        variables,
        jnp.asarray(x)[None],
        jnp.ones((1, len(x)), bool),
        train=False,
    )
    best = np.asarray(out["ctc_logits"][0]).argmax(-1)
    chars, previous = [], None
    for i in best:
      if i != previous and i < len(vocab.CHARACTERS):
        chars.append(vocab.CHARACTERS[i])
      previous = i
    assert text == "".join(chars)


def test_a_tokenizer_without_ctc_refuses_to_transcribe(tok, sequences):
  config = tok.config.copy_and_resolve_references()
  config.model.use_ctc = False
  no_ctc = asl_vq.Tokenizer(config, {}, batch_size=4)
  with pytest.raises(ValueError, match="without a CTC head"):
    no_ctc.transcribe(sequences[0])


@pytest.mark.parametrize(
    "saved, load, match",
    [
        (
            {"task": "translate", "model": {"encoder": "tokens"}},
            lambda path: asl_vq.Tokenizer.load(path),
            "a translate run, where a tokenizer run is needed",
        ),
        (
            {"task": "translate", "model": {"encoder": "tokens"}},
            lambda path: generate.load_recognizer(path),
            "a tokens translate run, where a continuous translate run is needed",
        ),
        (
            {"task": "tokenizer", "model": {}},
            lambda path: generate.load_lm(path),
            "a tokenizer run, where a lm run is needed",
        ),
    ],
)
def test_a_run_of_another_kind_is_named_before_it_is_built(
    tmp_path, saved, load, match
):
  """It once gave a raw TypeError or AttributeError (issue 30, 8)."""
  (tmp_path / "config.json").write_text(
      json.dumps(dict(saved, data={}, train={}))
  )
  with pytest.raises(errors.UserError, match=match):
    load(str(tmp_path))


def test_window_starts_cover_every_frame_and_end_at_the_end():
  assert inference.window_starts(50, 64, 32) == [0]
  assert inference.window_starts(100, 40, 20) == [0, 20, 40, 60]
  assert inference.window_starts(101, 40, 0) == [0, 40, 61]
  with pytest.raises(errors.UserError, match="overlap"):
    inference.window_starts(100, 40, 40)
  starts = inference.window_starts(100, 40, 20)
  owner = inference.central_window(100, starts, 40)
  # Frame 30 is 9 from the end of [0, 40) and 10 from the start of
  # [20, 60): the second; frame 25, 14 and 5 from them: the first.
  assert owner[25] == 0 and owner[30] == 1 and owner[99] == 3
  assert all(
      s <= f < s + 40 for f, s in zip(range(100), np.asarray(starts)[owner])
  )


def test_a_long_recording_gets_one_code_group_per_frame_with_a_hand(
    tok, sequences
):
  """Issue 28: 5,000 frames, none resampled, each group with its frame."""
  parts, total = [], 0
  while total < 5000:
    for h in sequences:
      parts.append(h)
      total += len(h)
  hands = np.concatenate(parts)[:5000].copy()
  hands[100:130] = np.nan  # the hands leave the picture.
  present = ~np.isnan(hands).all(axis=(1, 2))
  got = tok.encode_frames(hands, fps=25.0)
  assert got.codes.shape == (present.sum(), 4) and got.num_frames == 5000
  np.testing.assert_array_equal(got.frames, np.flatnonzero(present))
  np.testing.assert_array_equal(got.missing, np.flatnonzero(~present))
  np.testing.assert_allclose(got.timestamps, got.frames / 25.0)
  assert len(np.unique(got.codes[:, 0])) > 4
  # A window's frames keep the codes of that window encoded alone.
  window = tok.max_len
  alone = tok.encode(hands[present][:window])
  central = got.frames < window // 2  # most central in the first window.
  np.testing.assert_array_equal(
      got.codes[central], alone[central[:window].nonzero()[0]]
  )


def test_up_to_a_window_encode_frames_is_encode(tok, sequences):
  for hands in sequences[:4]:
    got = tok.encode_frames(hands)
    np.testing.assert_array_equal(got.codes, tok.encode(hands))


def test_to_image_undoes_the_normalisation_of_each_window(tok, sequences):
  hands = np.concatenate(sequences[:6])
  kept = hands[~np.isnan(hands).all(axis=(1, 2))]
  got = tok.encode_frames(hands, window=40, overlap=10)
  starts = inference.window_starts(len(kept), 40, 10)
  owner = inference.central_window(len(kept), starts, 40)
  # The model-space input of each frame, from its own window.
  normalised = np.stack(
      [
          inference.pipeline.normalize(kept[starts[w] : starts[w] + 40])[
              i - starts[w]
          ]
          for i, w in enumerate(owner)
      ]
  )
  back = tok.to_image(normalised, got)
  seen = ~np.isnan(kept)
  np.testing.assert_allclose(back[seen], kept[seen], atol=1e-5)


def test_long_codes_decode_in_windows_like_their_encoding(tok, sequences):
  hands = np.concatenate(sequences * 5)
  got = tok.encode_frames(hands)
  assert len(got.codes) > 2 * tok.max_len
  recon = tok.decode(got.codes)
  assert recon.shape == (len(got.codes), 42, 2)
  # A window's central frames decode as that window alone does.
  first = tok.decode(got.codes[: tok.max_len])
  np.testing.assert_allclose(
      recon[: tok.max_len // 2], first[: tok.max_len // 2], atol=1e-6
  )
  back = tok.to_image(recon, got)
  seen = np.repeat(got.seen, 21, axis=1)  # a hand the input had: placed.
  assert back.shape == recon.shape and not got.seen.all()
  assert np.isfinite(back[seen]).all() and np.isnan(back[~seen]).all()


# The model fields `inference.fingerprint` hashed when fingerprints were
# first taken (with data.max_len and data.resample).
FIRST_FINGERPRINTED_MODEL = (
    "codebook_size",
    "commit_grad",
    "conv_bn_activation",
    "dead_threshold",
    "dim",
    "dropout",
    "dtype",
    "kernel_size",
    "kmeans_iters",
    "num_blocks",
    "num_heads",
    "num_quantizers",
    "revival",
    "use_ctc",
    "vq_decay",
)


@pytest.mark.parametrize("preset", ["", "cpu", "tiny"])
def test_a_field_fingerprinted_since_is_left_out_at_its_old_value(preset):
  """Every field `fingerprint` gained after fingerprints were first taken is
  in `inference.FINGERPRINTED_SINCE`, with its old value in
  `config_lib.ADDED_FIELDS`: otherwise every earlier tokenizer's
  fingerprint changes, and its tokens and downstream runs are refused."""
  fields = inference.fingerprinted_fields(config_lib.load("tokenizer", preset))
  paths = {("model", k) for k in fields["model"]} | {
      (k,) for k in fields if k != "model"
  }
  first = {("model", k) for k in FIRST_FINGERPRINTED_MODEL}
  first |= {("max_len",), ("resample",)}
  assert paths - first == set(inference.FINGERPRINTED_SINCE), (
      "add each new field to inference.FINGERPRINTED_SINCE and "
      "config_lib.ADDED_FIELDS (the value tokenizers had before it)"
  )
  for path, added in inference.FINGERPRINTED_SINCE.items():
    assert added in config_lib.ADDED_FIELDS and path[-1] == added[-1]


def test_a_tokenizer_keeps_its_fingerprint_across_added_config_fields(tok):
  """A tokenizer made before `data.normalization` and
  `model.attention_window` existed has the fingerprint it had then (its
  tokens, saved copies and downstream runs stay valid); setting either to
  anything else changes it."""
  config = tok.config
  model = {k: config.model[k] for k in FIRST_FINGERPRINTED_MODEL}
  before = hashlib.sha256(
      json.dumps(
          dict(
              model=model,
              max_len=int(config.data.max_len),
              resample=str(config.data.resample),
          ),
          sort_keys=True,
          default=str,
      ).encode()
  )
  for path, leaf in jax.tree_util.tree_flatten_with_path(tok._variables)[0]:
    leaf = np.ascontiguousarray(jax.device_get(leaf))
    before.update(
        f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape}".encode()
    )
    before.update(leaf.tobytes())
  assert tok.fingerprint == before.hexdigest()[:16]
  for section, field, value in (
      ("data", "normalization", "hand"),
      ("model", "attention_window", 8),
  ):
    other = config.copy_and_resolve_references()
    other[section][field] = value
    assert inference.fingerprint(other, tok._variables) != tok.fingerprint


def test_run_in_buckets_pads_each_item_into_its_own_bucket():
  """The inference paths' batching (`Tokenizer`, `generate.recognize`):
  each item in the smallest bucket that holds it, `batch_size` rows a call
  (unused rows empty), results back in the items' order."""
  calls = []

  def fn(batch, mask):
    calls.append((batch.shape, mask.sum(1).tolist()))
    return batch * 2 + mask[..., None]

  items = [np.full((n, 1), n, np.float32) for n in (3, 9, 1, 8, 5)]
  counted = []
  out = inference.run_in_buckets(
      fn,
      items,
      (1,),
      np.float32,
      buckets=(16, 4, 8),
      batch_size=2,
      progress=counted.append,
  )
  assert calls == [
      ((2, 4, 1), [3, 1]),
      ((2, 16, 1), [9, 0]),
      ((2, 8, 1), [8, 5]),
  ]
  assert counted == [2, 1, 2]
  for item, got in zip(items, out):
    np.testing.assert_array_equal(got, 2 * item + 1)
  whole = inference.run_in_buckets(
      fn,
      items,
      (1,),
      np.float32,
      buckets=(4, 8, 16),
      batch_size=2,
      per_frame=False,
  )
  assert [len(w) for w in whole] == [4, 16, 4, 8, 8]
  with pytest.raises(errors.UserError, match="no bucket"):
    inference.run_in_buckets(
        fn, [np.zeros((17, 1))], (1,), np.float32, buckets=(16,), batch_size=2
    )
