"""`python -m asl_vq.encode` and `asl_vq.decode`: files in, files out."""

import os
import sys
import types

import numpy as np
import pytest
from pose_format import Pose

import asl_vq.data
import asl_vq
import kaggle_fixture
import tiny_tokenizer
from asl_vq import code_records
from asl_vq import decode
from asl_vq import encode
from asl_vq.data import datasets
from asl_vq.data import pose
from asl_vq.data import reader
import xla_env


@pytest.fixture(scope="module")
def tok():
  return asl_vq.Tokenizer.load(tiny_tokenizer.workdir())


@pytest.fixture(scope="module")
def sequences(tok):
  split = datasets.load(tok.config)["test"]
  return [split[i]["hands"] for i in range(4)]


def _encode(tok, paths, out):
  items, count = encode.sequences([str(p) for p in paths])
  return encode.encode(tok, items, str(out), total=count, progress=False)


def test_pose_files_encode_as_their_landmarks(tok, sequences, tmp_path):
  (tmp_path / "sub").mkdir()
  for i, hands in enumerate(sequences[:3]):
    pose.write(
        tmp_path / ("sub" if i == 2 else "") / f"s{i}.pose",
        hands,
        30.0,
        width=640,
        height=480,
    )
  pose.write(tmp_path / "empty.pose", np.full((4, 42, 2), np.nan), 30.0)
  out = tmp_path / "codes.jsonl"
  assert _encode(tok, [tmp_path], out) == 4
  records = code_records.read(out)
  assert [r["id"] for r in records] == ["empty", "s0", "s1", "sub/s2"]
  hands = [pose.read(tmp_path / f"{r['id']}.pose")[0] for r in records[1:]]
  np.testing.assert_allclose(hands[0], sequences[0], rtol=1e-6)
  for r, h, codes in zip(records[1:], hands, tok.encode(hands)):
    np.testing.assert_array_equal(r["codes"], codes)
    assert r["text"] == tok.to_text(codes)
    assert r["num_frames"] == len(h)
    assert r["source"] == str(tmp_path / f"{r['id']}.pose")
  assert records[0]["codes"] == [] and records[0]["text"] == ""
  assert records[0]["num_frames"] == 4
  # Each code group names its input frame, and the record the frame rate.
  for r, h in zip(records[1:], hands):
    assert r["fps"] == 30.0
    assert r["frames"] == np.flatnonzero(~np.isnan(h).all(axis=(1, 2))).tolist()


def test_a_long_pose_file_gets_a_code_group_per_frame_with_a_hand(
    tok, sequences, tmp_path
):
  """Issue 28: longer than the model's length, nothing resampled."""
  hands = np.concatenate(sequences * 6)
  assert len(hands) > 3 * tok.max_len
  pose.write(tmp_path / "long.pose", hands, 25.0, width=640, height=480)
  out = tmp_path / "codes.parquet"
  _encode(tok, [tmp_path / "long.pose"], out)
  (r,) = code_records.read(out)
  read, _ = pose.read(tmp_path / "long.pose")
  expected = tok.encode_frames(read, 25.0)
  assert r["fps"] == 25.0 and r["num_frames"] == len(hands)
  assert r["frames"] == expected.frames.tolist()
  np.testing.assert_array_equal(r["codes"], expected.codes)
  assert len(r["codes"]) > tok.max_len


@pytest.mark.parametrize("ext", code_records.FORMATS)
def test_transcribe_adds_each_records_transcript(tok, sequences, tmp_path, ext):
  for i, hands in enumerate(sequences[:3]):
    pose.write(tmp_path / f"s{i}.pose", hands, 30.0)
  pose.write(tmp_path / "empty.pose", np.full((4, 42, 2), np.nan), 30.0)
  out = tmp_path / f"codes{ext}"
  items, count = encode.sequences([str(tmp_path)])
  assert (
      encode.encode(
          tok, items, str(out), total=count, progress=False, transcribe=True
      )
      == 4
  )
  records = code_records.read(out)
  assert [r["transcript"] for r in records] == [""] + tok.transcribe(
      [pose.read(tmp_path / f"s{i}.pose")[0] for i in range(3)]
  )
  plain = tmp_path / f"plain{ext}"
  items, count = encode.sequences([str(tmp_path)])
  encode.encode(tok, items, str(plain), total=count, progress=False)
  assert "transcript" not in code_records.read(plain)[0]


def test_transcribe_needs_a_ctc_head(tok, sequences, tmp_path):
  config = tok.config.copy_and_resolve_references()
  config.model.use_ctc = False
  no_ctc = asl_vq.Tokenizer(config, {}, batch_size=4)
  pose.write(tmp_path / "s.pose", sequences[0], 30.0)
  items, count = encode.sequences([str(tmp_path)])
  with pytest.raises(
      ValueError,
      match="--transcribe: this tokenizer was " "trained without a CTC head",
  ):
    encode.encode(
        no_ctc,
        items,
        str(tmp_path / "c.jsonl"),
        total=count,
        progress=False,
        transcribe=True,
    )
  assert not (tmp_path / "c.jsonl").exists()


def test_a_kaggle_directory_in_every_format(tok, tmp_path, capsys):
  data = kaggle_fixture.write_dataset(tmp_path / "kaggle")
  listed = (
      kaggle_fixture.LISTED["train"] + kaggle_fixture.LISTED["supplemental"]
  )
  kept = [s for s in listed if s in data.hands]  # 204 is not in its file.
  by_format = {}
  for ext in code_records.FORMATS:
    out = tmp_path / f"codes{ext}"
    assert _encode(tok, [data.root], out) == len(kept)
    by_format[ext] = code_records.read(out)
  assert by_format[".csv"] == by_format[".jsonl"] == by_format[".parquet"]
  records = by_format[".jsonl"]
  assert [r["id"] for r in records] == [str(s) for s in kept]
  assert "left out 1 sequences listed in a metadata CSV" in (
      capsys.readouterr().err
  )
  with_hand = [s for s in kept if not np.isnan(data.hands[s]).all()]
  expected = dict(
      zip(with_hand, tok.encode([data.hands[s] for s in with_hand]))
  )
  for r in records:
    sid = int(r["id"])
    assert r["num_frames"] == len(data.hands[sid])
    assert r["source"].endswith(".parquet")
    assert sid in reader.read_hands(r["source"])
    np.testing.assert_array_equal(
        np.reshape(r["codes"], (-1, 4)), expected.get(sid, np.zeros((0, 4)))
    )
  assert records[kept.index(103)]["text"] == ""  # No hand in any frame.


def test_videos_go_through_the_video_module(
    tok, sequences, tmp_path, monkeypatch
):
  video = tmp_path / "clip.mp4"
  video.write_bytes(b"")
  fake = types.ModuleType("asl_vq.data.video")
  fake.hands = lambda path: (sequences[0], 30.0)
  fake.info = lambda path: types.SimpleNamespace(width=640, height=480)
  monkeypatch.setitem(sys.modules, "asl_vq.data.video", fake)
  # `from asl_vq.data import video` reads the package's attribute first,
  # which an earlier import of the real module set.
  monkeypatch.delattr(asl_vq.data, "video", raising=False)
  out = tmp_path / "codes.csv"
  _encode(tok, [video], out)
  [r] = code_records.read(out)
  assert r["id"] == "clip" and (r["width"], r["height"]) == (640, 480)
  np.testing.assert_array_equal(r["codes"], tok.encode(sequences[0]))
  monkeypatch.setitem(sys.modules, "asl_vq.data.video", None)
  with pytest.raises(
      ImportError,
      match="clip.mp4: reading videos needs "
      "asl_vq.data.video, which failed to import",
  ):
    _encode(tok, [video], out)


def test_bad_inputs(tok, tmp_path):
  with pytest.raises(ValueError, match="no such file or directory"):
    encode.sequences([str(tmp_path / "nope")])
  with pytest.raises(ValueError, match="holds no .pose file, video or"):
    encode.sequences([str(tmp_path)])
  with pytest.raises(ValueError, match="must end in .jsonl, .csv, .parquet"):
    _encode(tok, [], tmp_path / "codes.txt")
  pose.write(tmp_path / "a.pose", np.zeros((2, 42, 2)), 30.0)
  with pytest.raises(ValueError, match="two sequences have the id 'a'"):
    _encode(
        tok,
        [tmp_path / "a.pose", tmp_path / "a.pose"],
        tmp_path / "codes.jsonl",
    )
  assert not os.path.exists(tmp_path / "codes.jsonl")
  assert not os.path.exists(tmp_path / "codes.jsonl.tmp")


def test_an_unreadable_file_is_named_and_the_others_are_kept(
    tok, sequences, tmp_path
):
  """One bad file among good ones once discarded every record (issue 30,
  6): the good ones are written, the bad named, the command fails."""
  for i in range(2):
    pose.write(
        tmp_path / f"s{i}.pose", sequences[i], 30.0, width=640, height=480
    )
  (tmp_path / "bad.pose").write_bytes(b"not a pose file")
  out = tmp_path / "codes.jsonl"
  with pytest.raises(
      encode.UnreadableInputs,
      match=r"wrote the 2 sequences read; 1 input file\(s\) "
      r"could not be read.*bad\.pose",
  ):
    _encode(tok, [tmp_path], out)
  records = code_records.read(out)
  assert [r["id"] for r in records] == ["s0", "s1"]
  np.testing.assert_array_equal(
      records[1]["codes"], tok.encode(pose.read(tmp_path / "s1.pose")[0])
  )
  run = xla_env.run_module(
      "asl_vq.encode",
      f"--tokenizer={tiny_tokenizer.workdir()}",
      f"--input={tmp_path}",
      f"--out={tmp_path / 'again.jsonl'}",
  )
  assert run.returncode == 1 and "bad.pose" in run.stderr
  assert len(code_records.read(tmp_path / "again.jsonl")) == 2


def test_input_paths_keep_a_comma_in_an_existing_name(tmp_path):
  odd = tmp_path / "take 1, final.pose"
  odd.write_bytes(b"")
  assert encode.input_paths([str(odd), "a.pose, b.pose,"]) == [
      str(odd),
      "a.pose",
      "b.pose",
  ]


def test_decode_outputs(tok, sequences, tmp_path):
  codes = tok.encode(sequences[1])
  npy = tmp_path / "a.npy"
  landmarks = decode.decode(tok, codes, str(npy), n_q=2)
  np.testing.assert_array_equal(np.load(npy), tok.decode(codes, n_q=2))
  np.testing.assert_array_equal(landmarks, tok.decode(codes, n_q=2))

  path = tmp_path / "a.pose"
  decode.decode(tok, codes, str(path), fps=25.0)
  with open(path, "rb") as f:
    p = Pose.read(f.read())
  assert p.body.fps == 25.0 and p.body.data.shape == (len(codes), 1, 42, 2)
  canvas = decode.to_canvas(tok.drawable(tok.decode(codes)))
  np.testing.assert_allclose(
      p.body.data.data[:, 0], canvas * decode.CANVAS_PIXELS, rtol=1e-5
  )
  np.testing.assert_allclose(pose.read(path)[0], canvas, rtol=1e-5)

  gif = tmp_path / "a.gif"
  decode.decode(tok, codes[:3], str(gif))
  assert gif.read_bytes()[:6] == b"GIF89a"

  with pytest.raises(ValueError, match="n_q=3, but the codes hold 2"):
    decode.decode(tok, codes[:, :2], str(npy), n_q=3)
  with pytest.raises(ValueError, match="no frames to decode"):
    decode.decode(tok, codes[:0], str(npy))


@pytest.mark.parametrize(
    "ext, normalization",
    [(ext, "sequence") for ext in code_records.FORMATS] + [(".jsonl", "hand")],
)
def test_a_record_decodes_back_into_its_inputs_picture(
    sequences, tmp_path, monkeypatch, ext, normalization
):
  """Issue 28, 3: a record's frames go back to the input's frames, image
  coordinates, size and frame rate, a hand it did not have NaN (confidence
  0). With a perfect decoder (the normalised inputs themselves) that is the
  input, whichever the normalisation (each hand its own statistics with
  "hand"); the error of a trained one is `asl_vq.analysis.stability`'s."""
  tok = asl_vq.Tokenizer.load(tiny_tokenizer.workdir())
  tok.config.data.normalization = normalization  # the weights do not matter.
  hands = np.concatenate([sequences[0], sequences[1]])[: tok.max_len]
  hands[3] = np.nan  # no hand: no code group.
  hands[5:9, :21] = np.nan  # the left hand missing.
  hands[10:12, 21:] = np.nan  # the right hand missing.
  pose.write(tmp_path / "sign.pose", hands, 25.0, width=640, height=480)
  records = tmp_path / f"codes{ext}"
  _encode(tok, [tmp_path / "sign.pose"], records)
  codes, record = decode.read_codes(tok, str(records))
  assert (record["width"], record["height"], record["fps"]) == (640, 480, 25.0)
  read = pose.read(tmp_path / "sign.pose")[0]
  kept = read[~np.isnan(read).all(axis=(1, 2))]
  perfect = tok.preprocess(kept)  # under max_len: one window, unresampled.
  assert len(perfect) == len(codes)
  monkeypatch.setattr(tok, "decode", lambda c, n_q=None: perfect)
  out = decode.decode(tok, codes, str(tmp_path / "back.npy"), record=record)
  assert out.shape == hands.shape
  np.testing.assert_allclose(out, read, atol=1e-6)  # NaN where read's are.
  decode.decode(tok, codes, str(tmp_path / "back.pose"), record=record)
  back, fps, size = pose.read_sized(tmp_path / "back.pose")
  assert fps == 25.0 and size == (640, 480)
  np.testing.assert_allclose(back, read, atol=1e-5)
  gif = tmp_path / "back.gif"
  decode.decode(tok, codes, str(gif), record=record)  # over the input.
  assert gif.read_bytes()[:6] == b"GIF89a"


def test_decode_reads_text_and_records(tok, sequences, tmp_path):
  codes = tok.encode(sequences[2])
  text = tok.to_text(codes)
  np.testing.assert_array_equal(decode.read_codes(tok, text)[0], codes)
  (tmp_path / "codes.txt").write_text(text + "\n")
  np.testing.assert_array_equal(
      decode.read_codes(tok, str(tmp_path / "codes.txt"))[0], codes
  )
  out = tmp_path / "codes.parquet"
  with code_records.Writer(out) as w:
    w.write(
        [
            code_records.record(
                "first", "x", 9, codes[:2], tok.to_text(codes[:2])
            ),
            code_records.record("second", "y", 9, codes, tok.to_text(codes)),
        ]
    )
  read, record = decode.read_codes(tok, str(out), "second")
  assert record["id"] == "second"
  np.testing.assert_array_equal(read, codes)
  assert decode.read_codes(tok, str(out))[1]["id"] == "first"
  assert decode.read_codes(tok, text)[1] is None
  with pytest.raises(ValueError, match="no record has the id 'third'"):
    decode.read_codes(tok, str(out), "third")
  with pytest.raises(
      ValueError, match="--codes: frame 1: 'junk' is not a " "group"
  ):
    decode.read_codes(tok, "<a1><b2> junk")
  with pytest.raises(ValueError, match="neither a file nor codes text"):
    decode.read_codes(tok, str(tmp_path / "missing.jsonl"))


def test_encode_command_line(tok, sequences, tmp_path):
  pose.write(tmp_path / "sign.pose", sequences[3], 30.0)
  codes = tmp_path / "codes.jsonl"
  run = xla_env.run_module(
      "asl_vq.encode",
      f"--tokenizer={tiny_tokenizer.workdir()}",
      f"--input={tmp_path / 'sign.pose'}",
      f"--out={codes}",
  )
  assert run.returncode == 0, run.stderr
  assert run.stdout.strip() == f"{codes}: 1 sequences"
  [record] = code_records.read(codes)
  assert record["id"] == "sign"
  np.testing.assert_array_equal(
      record["codes"], tok.encode(pose.read(tmp_path / "sign.pose")[0])
  )


def test_decode_command_line_on_malformed_codes(tmp_path):
  run = xla_env.run_module(
      "asl_vq.decode",
      f"--tokenizer={tiny_tokenizer.workdir()}",
      "--codes=<a1><b2> <a3>",
      f"--out={tmp_path / 'x.npy'}",
  )
  assert run.returncode == 1
  assert run.stderr.strip() == (
      "error: --codes: frames hold different numbers of quantizers {1, 2}"
  ), run.stderr
  assert not (tmp_path / "x.npy").exists()


def test_a_records_csv_saved_again_by_excel_reads(tmp_path):
  path = tmp_path / "codes.csv"
  with code_records.Writer(path) as writer:
    writer.write(
        [
            code_records.record(
                "s", "s.pose", 2, [[1, 2], [3, 4]], "<a1><b2> <a3><b4>"
            )
        ]
    )
  expected = code_records.read(path)
  path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
  assert code_records.read(path) == expected


def test_records_written_before_frames_and_fps_read_with_none(tmp_path):
  path = tmp_path / "old.jsonl"
  path.write_text(
      '{"id": "a", "source": "a.pose", "num_frames": 2, '
      '"codes": [[1, 2]], "text": "<a1><b2>"}\n'
  )
  (r,) = code_records.read(path)
  assert r["fps"] is None and r["frames"] is None and r["codes"] == [[1, 2]]
  path.write_text('{"id": "a", "codes": [[1, 2]]}\n')
  with pytest.raises(ValueError, match="does not have the fields"):
    code_records.read(path)
