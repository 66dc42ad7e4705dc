"""Tokenizing the splits: the files, resuming, and reading them back."""

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import asl_vq
import tiny_tokenizer
from asl_vq.data import datasets
from asl_vq.data import pipeline
from asl_vq.data import tokens
from asl_vq.tasks import tokenize


def _config(checkpoint, **overrides):
  config = tiny_tokenizer.load_config("tokenize")
  config.checkpoint = checkpoint
  config.batch_size = 8
  config.part_batches = 1
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def run_dir():
  return tiny_tokenizer.workdir()


@pytest.fixture(scope="module")
def tok(run_dir):
  return asl_vq.Tokenizer.load(run_dir, batch_size=8)


@pytest.fixture(scope="module")
def splits(tok):
  return datasets.load(tok.config)


@pytest.fixture(scope="module")
def tokenized(run_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("tokens")
  report = tokenize.run(_config(run_dir, verify=True), str(out))
  return out, report


def test_files_hold_the_splits_and_the_codes_of_encode(tokenized, splits, tok):
  out, report = tokenized
  assert sorted(os.listdir(out)) == [
      f"{s}.parquet" for s in ("test", "train", "validation")
  ]
  for name, split in splits.items():
    src = tokens.TokenSource(out / f"{name}.parquet")
    assert report[name]["max_abs_diff"] == 0.0
    np.testing.assert_array_equal(src.sequence_ids, split.sequence_ids)
    np.testing.assert_array_equal(src.participant_ids, split.participant_ids)
    assert src.phrases == split.phrases
    np.testing.assert_array_equal(
        src.hand_frames, np.minimum(split.hand_frames, tok.max_len)
    )
    assert src.metadata["num_quantizers"] == 4
  src = tokens.TokenSource(out / "test.parquet")
  codes = tok.encode([splits["test"][i]["hands"] for i in range(len(src))])
  for i, expected in enumerate(codes):
    item = src[i]
    assert item["codes"].dtype == np.int32
    assert len(item["codes"]) == src.hand_frames[i]
    np.testing.assert_array_equal(item["codes"], expected)
  # Each code row names its input frame (issue 28).
  frames = pq.read_table(out / "test.parquet")["frames"].to_pylist()
  for i, f in enumerate(frames):
    hands = splits["test"][i]["hands"]
    assert f == pipeline.kept_frames(hands, tok.max_len).tolist()
    assert len(f) == len(codes[i]) and not np.isnan(hands[f]).all((1, 2)).any()


def test_a_killed_run_resumes_without_duplicates_or_gaps(
    run_dir, tokenized, tmp_path, monkeypatch
):
  write, calls = tokenize._write_part, []

  def write_two_then_die(path, table):
    if len(calls) == 2:
      open(f"{path}.tmp", "w").close()  # killed while writing.
      raise KeyboardInterrupt
    calls.append(path)
    write(path, table)

  monkeypatch.setattr(tokenize, "_write_part", write_two_then_die)
  with pytest.raises(KeyboardInterrupt):
    tokenize.run(_config(run_dir), str(tmp_path))
  assert not (tmp_path / "train.parquet").exists()
  monkeypatch.setattr(tokenize, "_write_part", write)
  tokenize.run(_config(run_dir), str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(tokenized[0]))
  for name in ("train", "validation", "test"):
    a = tokens.TokenSource(tmp_path / f"{name}.parquet")
    b = tokens.TokenSource(tokenized[0] / f"{name}.parquet")
    np.testing.assert_array_equal(a.sequence_ids, b.sequence_ids)
    for i in range(len(a)):
      np.testing.assert_array_equal(a[i]["codes"], b[i]["codes"])
  # A finished split is not redone.
  mtime = os.stat(tmp_path / "train.parquet").st_mtime_ns
  tokenize.run(_config(run_dir), str(tmp_path))
  assert os.stat(tmp_path / "train.parquet").st_mtime_ns == mtime


def test_a_split_made_from_another_tokenizer_is_made_again(
    run_dir, tokenized, tok, splits, tmp_path, capsys
):
  """Issue 12, case 1: tokens of step 8 kept after the tokenizer moved on to
  step 16 (141 of 145 frames differed). Here the stored split was made by
  other weights (another fingerprint) and holds other codes: the rerun makes
  it again. Issue 30, 2: decided by the weights' content, not the step."""
  for name in ("train", "validation", "test"):
    shutil.copy(tokenized[0] / f"{name}.parquet", tmp_path)
  path = tmp_path / "validation.parquet"
  table = pq.read_table(path)
  meta = dict(tokens.TokenSource(path).metadata, tokenizer="0" * 16)
  zeros = pa.array(
      [[[0] * 4] * n for n in table["n_frames"].to_pylist()],
      tokens.codes_type(4),
  )
  table = table.set_column(
      table.schema.get_field_index("codes"), "codes", zeros
  ).replace_schema_metadata({tokens.METADATA_KEY: json.dumps(meta)})
  pq.write_table(table, path)
  mtime = os.stat(tmp_path / "train.parquet").st_mtime_ns

  tokenize.run(_config(run_dir), str(tmp_path))
  assert (
      f"tokenizer {'0' * 16!r} -> {tok.fingerprint!r}"
      in capsys.readouterr().out
  )
  src = tokens.TokenSource(path)
  assert src.metadata["tokenizer"] == tok.fingerprint
  codes = tok.encode(
      [splits["validation"][i]["hands"] for i in range(len(src))]
  )
  for i, expected in enumerate(codes):
    np.testing.assert_array_equal(src[i]["codes"], expected)
  # The splits made from the same inputs are kept.
  assert os.stat(tmp_path / "train.parquet").st_mtime_ns == mtime
  # Tokens record their raw split's origin, which a downstream run checks.
  assert src.origin["data"] == splits["validation"].origin["data"]
  assert src.origin["tokenizer"] == tok.fingerprint


def test_a_copy_of_the_tokenizer_elsewhere_keeps_the_tokens(
    run_dir, tokenized, tok, tmp_path
):
  """Moved or copied, the same weights make the same tokens: nothing is
  made again (the path and step are provenance, not identity)."""
  copy = tmp_path / "moved_run"
  shutil.copytree(run_dir, copy)
  assert asl_vq.Tokenizer.load(str(copy)).fingerprint == tok.fingerprint
  out = tmp_path / "tokens"
  shutil.copytree(tokenized[0], out)
  mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
  tokenize.run(_config(str(copy)), str(out))
  assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == mtimes


def test_checkpoint_is_required(tmp_path):
  with pytest.raises(ValueError, match="config.checkpoint"):
    tokenize.run(_config(""), str(tmp_path))


def test_pipeline_batches_codes(tokenized, tok):
  src = tokens.TokenSource(tokenized[0] / "validation.parquet")
  kwargs = dict(
      global_batch_size=8,
      max_len=tok.max_len,
      max_label_len=tok.config.data.max_label_len,
      buckets=tok.buckets,
  )
  batches = list(pipeline.make_dataset(src, train=False, **kwargs))
  seen = 0
  for batch in batches:
    assert "inputs" not in batch
    assert batch["codes"].dtype == np.int32
    assert batch["codes"].shape[::2] == (8, 4)
    for row in range(8):
      if not batch["example_mask"][row]:
        assert batch["sequence_id"][row] == -1
        continue
      item = src[seen]
      n = len(item["codes"])
      assert batch["sequence_id"][row] == item["sequence_id"]
      np.testing.assert_array_equal(
          batch["input_mask"][row], np.arange(batch["codes"].shape[1]) < n
      )
      np.testing.assert_array_equal(batch["codes"][row, :n], item["codes"])
      assert not batch["codes"][row, n:].any()
      assert batch["label_mask"][row].sum() == len(item["phrase"])
      seen += 1
  assert seen == len(src)
  # Training never flips codes.
  train = next(
      iter(pipeline.make_dataset(src, train=True, flip_prob=1.0, **kwargs))
  )
  for row, sid in enumerate(train["sequence_id"]):
    item = src[list(src.sequence_ids).index(sid)]
    np.testing.assert_array_equal(
        train["codes"][row, : len(item["codes"])], item["codes"]
    )


def test_subset_keeps_the_source_protocol(tokenized, splits):
  for source in (
      tokens.TokenSource(tokenized[0] / "train.parquet"),
      splits["train"],
  ):
    idx = np.array([5, 0, 3])
    sub = tokens.subset(source, idx)
    assert len(sub) == 3 and sub.phrases == [source.phrases[i] for i in idx]
    for name in ("sequence_ids", "participant_ids", "hand_frames"):
      np.testing.assert_array_equal(
          getattr(sub, name), getattr(source, name)[idx]
      )
    assert sub[1]["sequence_id"] == source[0]["sequence_id"]
    batch = next(
        iter(
            pipeline.make_dataset(
                sub,
                global_batch_size=4,
                max_len=64,
                max_label_len=32,
                buckets=(32, 64),
                train=False,
            )
        )
    )
    np.testing.assert_array_equal(
        batch["sequence_id"][:3], source.sequence_ids[idx]
    )
  with pytest.raises(IndexError):
    tokens.subset(splits["train"], [len(splits["train"])])
