"""Table 2 / Table 5 in one command at the tiny preset: the data is checked
first, every stage runs, the tables hold every row, a second call reuses the
finished stages, and a tokenizer trained further remakes what depends on it."""

import csv
import json
import os

import pytest

from asl_vq import config_lib
from asl_vq.data import tokens
from asl_vq.experiments import paper_tables


def test_too_few_test_signers_for_the_probe_fail_before_training(tmp_path):
  """Issue 12, case 5: the tiny preset crashed in the probe stage after 90 s
  of training (`cannot split 1 signers into 3 non-empty splits`)."""
  data = config_lib.load("tokenizer", "tiny").data  # 8 signers, 1 in test.
  with pytest.raises(
      ValueError,
      match=r"^the test split holds 1 signer\(s\), "
      r"but the probing study splits it by signer into 3 ",
  ):
    paper_tables.run_all(str(tmp_path), "tiny", ["rvq"], data)
  assert not os.listdir(tmp_path)  # nothing trained.


def test_budget_names_every_stage_and_overrides_apply():
  """The cpu budget trains each tokenizer its preset's full schedule (7
  epochs; at 3 the CTC heads were barely trained), and the tables' budget
  line names the epochs of every stage."""
  assert paper_tables.budget("cpu") == {
      "tokenizer": 7,
      "translate": 10,
      "probe": 10,
  }
  assert paper_tables.budget("paper") == {
      "tokenizer": 100,
      "translate": 60,
      "probe": 40,
  }
  assert paper_tables.budget("tiny") == {
      "tokenizer": 2,
      "translate": 2,
      "probe": 2,
  }
  # What `run_all` loads: a row or an input never changes a stage's epochs.
  for row in ("rvq", "rvq+ctc+qdrop"):
    assert config_lib.load("tokenizer", f"cpu,row={row}").train.num_epochs == 7
  for model in ("translate", "probe"):
    assert config_lib.load(model, "cpu,input=continuous").train.num_epochs == (
        config_lib.load(model, "cpu").train.num_epochs
    )
  assert paper_tables.budget("cpu", {"tokenizer": 3, "probe": None}) == {
      "tokenizer": 3,
      "translate": 10,
      "probe": 10,
  }


def test_budget_refuses_epochs_for_a_stage_it_does_not_have():
  with pytest.raises(ValueError, match=r"unknown stage\(s\) \['seq2seq'\]"):
    paper_tables.budget("tiny", {"seq2seq": 3})


def test_stages_saved_under_the_earlier_name_are_taken_over(tmp_path):
  """Tables begun when the translation stage was `seq2seq_<row>` resume it
  as `translate_<row>`, with its wall seconds; a `translate_<row>` already
  there is kept, and the older folder left alone."""
  for name in ("seq2seq_rvq_ctc", "seq2seq_continuous", "translate_continuous"):
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(name)
  timings = {"seq2seq_rvq_ctc": 12.5, "tokenizer_rvq_ctc": 3.0}
  paper_tables.adopt_renamed_stages(str(tmp_path), timings)
  assert not (tmp_path / "seq2seq_rvq_ctc").exists()
  assert (tmp_path / "translate_rvq_ctc" / "config.json").read_text() == (
      "seq2seq_rvq_ctc"
  )
  assert (tmp_path / "translate_continuous" / "config.json").read_text() == (
      "translate_continuous"
  )
  assert (tmp_path / "seq2seq_continuous").exists()
  assert timings == {"translate_rvq_ctc": 12.5, "tokenizer_rvq_ctc": 3.0}


@pytest.mark.slow
def test_tables_are_written_and_stages_resume(tmp_path, capsys):
  rows = ["rvq+ctc"]
  results = paper_tables.run_all(str(tmp_path), "tiny", rows)
  text = paper_tables.write_tables(str(tmp_path), results, "synthetic")
  out = capsys.readouterr().out
  assert "[stage 1/6] tokenizer_rvq_ctc" in out
  assert "[stage 6/6] probe_continuous" in out

  assert "synthetic" in text
  with open(tmp_path / "table2.csv") as f:
    t2 = list(csv.reader(f))
  assert [r[0] for r in t2[1:]] == ["Continuous", "RVQ + CTC"]
  scores = {r[0]: float(r[1]) for r in t2[1:]}
  for row, name in (("Continuous", "continuous"), ("RVQ + CTC", "rvq_ctc")):
    with open(tmp_path / f"translate_{name}" / "test_metrics.json") as f:
      assert scores[row] == pytest.approx(json.load(f)["score"], abs=5e-4)
  with open(tmp_path / "table5.csv") as f:
    t5 = list(csv.reader(f))
  assert (
      t5[0][:5] == ["model", "mean", "majority baseline", "balanced", "a"]
      and len(t5[0]) == 30
  )
  assert all(
      0.0 <= float(v) <= 1.0 for r in t5[1:] for v in r[1:] if v
  )  # an empty cell: NaN (no letter both present and absent).

  # Finished stages are reused: nothing is trained or scored again, and the
  # stages' wall times add up over the calls (they were overwritten by the
  # seconds a reused stage takes to read back).
  stamps = {
      p: os.stat(p).st_mtime_ns for p in tmp_path.glob("*/test_metrics.json")
  }
  assert len(stamps) == 5  # tokenizer, 2 x translate, 2 x probe.
  timings = json.loads((tmp_path / "timings.json").read_text())
  assert len(timings) == 6 and min(timings.values()) > 0
  assert paper_tables.run_all(str(tmp_path), "tiny", rows) == results
  assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}
  again = json.loads((tmp_path / "timings.json").read_text())
  assert all(again[k] >= timings[k] for k in timings), (timings, again)

  # The tokenizer trained further: its tokens are made again, and the
  # stages trained on the old tokens are set aside and run again; the
  # continuous stages are kept.
  step = tokens.read_metadata(tmp_path / "tokens_rvq_ctc")["step"]
  epochs = config_lib.load("tokenizer", "tiny").train.num_epochs
  paper_tables.run_all(
      str(tmp_path), "tiny", rows, epochs={"tokenizer": 2 * epochs}
  )
  best = tokens.read_metadata(tmp_path / "tokens_rvq_ctc")["step"]
  assert best > step  # precondition: the best checkpoint moved on.
  for name in ("translate_rvq_ctc", "probe_rvq_ctc"):
    assert (tmp_path / f"{name}.stale-1" / "test_metrics.json").exists()
    inputs = json.loads((tmp_path / name / "inputs.json").read_text())
    assert (
        inputs["train"]["tokenizer"]
        == tokens.read_metadata(tmp_path / "tokens_rvq_ctc")["tokenizer"]
    )
  for name in ("translate_continuous", "probe_continuous"):
    path = tmp_path / name / "test_metrics.json"
    assert os.stat(path).st_mtime_ns == stamps[path]
