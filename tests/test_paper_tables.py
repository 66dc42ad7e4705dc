"""Table 2 / Table 5 in one command, on tiny data: every stage runs, the
tables hold every row, and a second call reuses the finished stages."""

import csv
import os

from asl_vq import config_lib
from asl_vq.experiments import paper_tables


def test_tables_are_written_and_stages_resume(tmp_path):
  data = config_lib.load("rvq_ctc", "tiny").data
  data.synthetic.num_sequences = 96
  data.synthetic.num_signers = 16
  data.fractions = dict(train=0.4, validation=0.1, test=0.5)
  rows = ["rvq+ctc"]
  results = paper_tables.run_all(str(tmp_path), "tiny", rows, data)
  text = paper_tables.write_tables(str(tmp_path), results, "synthetic")

  assert "synthetic" in text
  with open(tmp_path / "table2.csv") as f:
    t2 = list(csv.reader(f))
  assert [r[0] for r in t2[1:]] == ["Continuous", "RVQ + CTC"]
  assert all(float(r[1]) <= 1.0 for r in t2[1:])
  with open(tmp_path / "table5.csv") as f:
    t5 = list(csv.reader(f))
  assert t5[0][:3] == ["model", "mean", "a"] and len(t5[0]) == 28
  assert all(0.0 <= float(v) <= 1.0 for r in t5[1:] for v in r[1:])

  # Finished stages are skipped: nothing is trained again.
  stamps = {p: os.stat(p).st_mtime_ns
            for p in tmp_path.glob("*/test_metrics.json")}
  assert len(stamps) == 5   # tokenizer, 2 x seq2seq, 2 x probe.
  assert paper_tables.run_all(str(tmp_path), "tiny", rows, data) == results
  assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}
