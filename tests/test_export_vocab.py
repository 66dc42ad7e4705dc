"""`python -m asl_vq.export_vocab`: the codes as Hugging Face tokens and
their starting embeddings (issue 29)."""

import json

import numpy as np
import pytest
import safetensors.numpy
import tokenizers

import asl_vq
import tiny_tokenizer
from asl_vq import export_vocab
from asl_vq.data import datasets


@pytest.fixture(scope="module")
def tok():
  return asl_vq.Tokenizer.load(tiny_tokenizer.workdir())


@pytest.fixture(scope="module")
def codes(tok):
  test = datasets.load(tok.config)["test"]
  return [tok.encode(test[i]["hands"]) for i in range(3)]


def test_the_code_layout_reads_to_text_and_gives_it_back(tok, codes, tmp_path):
  info = export_vocab.export(tok, str(tmp_path))
  hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
  k = tok.code_spec.codebook_size
  assert info["first_id"] == 4 and info["num_tokens"] == 4 * k
  assert hf.get_vocab_size() == 4 + 4 * k
  assert (hf.token_to_id("<a5>"), hf.token_to_id(f"<b{k - 1}>")) == (
      9,
      4 + 2 * k - 1,
  )
  for c in codes:
    text = tok.to_text(c)
    ids = hf.encode(text).ids
    assert ids[0] == hf.token_to_id("<sign>") and ids[-1] == hf.token_to_id(
        "</sign>"
    )
    assert len(ids) == 2 + c.size + len(c) - 1  # codes, separators.
    decoded = hf.decode(ids)
    assert decoded == text
    np.testing.assert_array_equal(tok.from_text(decoded), c)
    np.testing.assert_array_equal(
        export_vocab.codes_from_tokens([hf.id_to_token(i) for i in ids]), c
    )
  saved = json.loads((tmp_path / "sign_vocab.json").read_text())
  assert saved["tokenizer"] == tok.fingerprint


def test_a_base_keeps_its_ids_and_the_codes_follow(tok, codes, tmp_path):
  # A small byte-pair-encoding tokenizer, trained here.
  base = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
  base.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  base.train_from_iterator(
      ["hello world", "sign language as tokens", "hello tokens"] * 20,
      tokenizers.trainers.BpeTrainer(special_tokens=["[UNK]"], vocab_size=60),
  )
  base.save(str(tmp_path / "base.json"))
  sentence = "hello sign language world"
  before = base.encode(sentence).ids
  size = base.get_vocab_size()
  info = export_vocab.export(
      tok, str(tmp_path / "out"), base=str(tmp_path / "base.json")
  )
  hf = tokenizers.Tokenizer.from_file(str(tmp_path / "out/tokenizer.json"))
  assert info["first_id"] == size and hf.token_to_id("<a0>") == size
  assert hf.encode(sentence).ids == before  # its own ids unchanged.
  assert {
      t: i for t, i in hf.get_vocab(with_added_tokens=False).items()
  } == base.get_vocab(with_added_tokens=False)
  text = (
      "hello <sign>"
      + tok.to_text(codes[0]).replace(" ", "<frame>")
      + "</sign> world"
  )
  tokens = hf.encode(text).tokens
  assert tokens[:2] == ["hello", "<sign>"] and tokens[-2:] == [
      "</sign>",
      "world",
  ]
  np.testing.assert_array_equal(
      export_vocab.codes_from_tokens(tokens), codes[0]
  )
  with pytest.raises(ValueError, match="already holds '<a0>'"):
    export_vocab.build(tok, base=str(tmp_path / "out/tokenizer.json"))


def test_the_frame_layout_and_its_embeddings(tok, codes, tmp_path):
  export_vocab.export(
      tok,
      str(tmp_path),
      layout="frame",
      frame_quantizers=2,
      width=48,
      projection="pca",
  )
  hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
  k = tok.code_spec.codebook_size
  assert hf.get_vocab_size() == 4 + k * k
  text = export_vocab.frame_text(codes[1], 2)
  got = export_vocab.codes_from_tokens(hf.encode(text).tokens)
  np.testing.assert_array_equal(got, codes[1][:, :2])
  arrays = safetensors.numpy.load_file(str(tmp_path / "embeddings.safetensors"))
  books = tok.codebooks
  # A frame token's row is the sum of its quantizers' code vectors.
  i, j = 5, 7
  row = hf.token_to_id(f"<f{i}_{j}>") - 4
  np.testing.assert_allclose(
      arrays["tokens"][row], books[0, i] + books[1, j], rtol=1e-6
  )
  assert arrays["tokens_projected"].shape == (k * k, 48)
  np.testing.assert_allclose(
      np.linalg.norm(arrays["tokens_projected"], axis=1).mean(), 1.0, rtol=1e-5
  )
  with pytest.raises(ValueError, match="frame_quantizers=4"):
    export_vocab.code_tokens(4, 1024, "frame", 4)


def test_an_orthogonal_projection_keeps_distances_up_to_scale(tok):
  arrays = export_vocab.embeddings(tok, width=96, seed=3)
  rows, projected = arrays["tokens"], arrays["tokens_projected"]
  d0 = np.linalg.norm(rows[:40, None] - rows[None, :40], axis=-1)
  d1 = np.linalg.norm(projected[:40, None] - projected[None, :40], axis=-1)
  off = ~np.eye(40, dtype=bool)
  ratio = d1[off] / d0[off]
  np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-4)
  np.testing.assert_array_equal(arrays["codebooks"], tok.codebooks)


def test_the_corpus_interleaves_phrases_and_signing_by_split(tok, tmp_path):
  from asl_vq.data import tokens  # pylint: disable=g-import-not-at-top

  tokens_dir = tiny_tokenizer.tokens_dir()
  counts = export_vocab.write_corpus(tokens_dir, str(tmp_path))
  export_vocab.export(tok, str(tmp_path / "vocab"))
  hf = tokenizers.Tokenizer.from_file(str(tmp_path / "vocab/tokenizer.json"))
  for split, n in counts.items():
    source = tokens.TokenSource(f"{tokens_dir}/{split}.parquet")
    records = [
        json.loads(line)
        for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()
    ]
    assert len(records) == n == len(source)
    for i in range(n):  # every record of every split.
      r, item = records[i], source[i]
      assert (
          r["id"] == int(item["sequence_id"]) and r["phrase"] == item["phrase"]
      )
      assert r["text_to_sign"] == item["phrase"] + "\n" + r["signing"]
      assert r["sign_to_text"] == r["signing"] + "\n" + item["phrase"]
      # The signing reads back to the codes through the exported file.
      got = export_vocab.codes_from_tokens(hf.encode(r["signing"]).tokens)
      np.testing.assert_array_equal(got, item["codes"])
  # The tokenizer's signer split is kept: no signer in two splits.
  signers = {
      s: {
          json.loads(l)["participant_id"]
          for l in (tmp_path / f"{s}.jsonl").read_text().splitlines()
      }
      for s in counts
  }
  assert not signers["train"] & (signers["validation"] | signers["test"])
