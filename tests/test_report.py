"""The report gathers what the commands wrote: numbers, tables, figures with
their commands as captions, and the real / synthetic label."""

import json
import os

import numpy as np
import pytest

from asl_vq import config_lib
from asl_vq import plotting
from asl_vq import provenance
from asl_vq import report
from asl_vq import tables
from asl_vq.tasks import tokenizer as tokenizer_task


def _png(path, size=(3, 2)):
  plt = plotting.pyplot()
  fig = plt.figure(figsize=size, dpi=50)
  fig.gca().plot(np.arange(5))
  fig.savefig(path)
  plt.close(fig)


def _run(root, name, config, test=None, metrics=(), command=None):
  d = root / name
  d.mkdir(parents=True)
  (d / "config.json").write_text(json.dumps(config))
  if test is not None:
    (d / "test_metrics.json").write_text(json.dumps(test))
  with open(d / "metrics.jsonl", "w") as f:
    for row in metrics:
      f.write(json.dumps(row) + "\n")
  if command:  # a failed first start, then the one that made the run.
    (d / "command.txt").write_text(
        "python -m asl_vq.main --config=nope\n" + command + "\n"
    )
  return d


@pytest.fixture()
def workdir(tmp_path):
  root = tmp_path / "runs"
  tok = _run(
      root,
      "tok",
      {
          "task": "tokenizer",
          "row": "rvq+ctc",
          "data": {"dir": ""},
          "model": {"use_ctc": True},
      },
      test={
          "score": 0.6125,
          "recon": 3.5,
          "usage_q0": 0.5,
          "usage_q1": 0.25,
          "perplexity_q0": 200.0,
          "perplexity_q1": 50.0,
      },
      metrics=[{"step": 10, "split": "validation", "score": 0.7375}],
      command="python -m asl_vq.main --config=configs/tokenizer.py:cpu",
  )
  _png(tok / "learning_curves.png")
  _run(
      root,
      "plain",
      {
          "task": "tokenizer",
          "row": "rvq",
          "data": {"dir": "/data/kaggle"},
          "model": {"use_ctc": False},
      },
      test={"score": 0.0, "recon": 2.25},
  )
  _run(
      root,
      "lm",
      {"task": "lm", "data": {"dir": ""}, "model": {"pattern": "delay"}},
      test={"accuracy_q0": 0.4321, "accuracy_q1": 0.2109},
      metrics=[
          {
              "step": 5,
              "split": "validation",
              "accuracy_q0": 0.4444,
              "accuracy_q1": 0.2222,
          }
      ],
  )
  gen = root / "gen"
  gen.mkdir()
  (gen / "generation.json").write_text(
      json.dumps({"score": 0.2781, "num_phrases": 7, "data": "synthetic"})
  )
  tables = root / "table2"
  tables.mkdir()
  (tables / "table2.md").write_text(
      "Table 2 equivalent (synthetic data): sign-to-text translation.\n\n"
      "| model | score |\n|---|---|\n| Continuous | 0.5555 |\n"
  )
  ana = root / "analysis"
  ana.mkdir()
  (ana / "analysis.json").write_text(json.dumps({"data": "synthetic"}))
  (ana / "mi_table.md").write_text("| letter | token |\n|---|---|\n| q | 7 |")
  (ana / "command.txt").write_text("python -m asl_vq.analysis --out=x\n")
  _png(ana / "heatmap.png", size=(4, 4))
  return root


def test_report_gathers_numbers_tables_and_figures(workdir):
  path = report.write_report(str(workdir))
  assert path == str(workdir / "report" / "report.md")
  text = open(path).read()
  # Tokenizers: scores, reconstruction, usage/perplexity per quantizer.
  assert (
      "| tok | rvq+ctc | synthetic | 10 | 0.738 | 0.613 | 3.500 | "
      "0.50 / 0.25 | 200 / 50 |" in text
  )
  # No CTC head: no score, and a real-data run is labelled real.
  assert "| plain | rvq | real | — | — | — | 2.250 |" in text
  assert "Data: real, synthetic." in text and "never as real-data" in text
  # The LM's accuracies per quantizer, and the generation score.
  assert "| lm | delay | synthetic | 0.444 / 0.222 | 0.432 / 0.211 |" in text
  assert "| gen | synthetic | 7 | 0.278 |" in text
  assert "| Continuous | 0.5555 |" in text and "| q | 7 |" in text
  # Figures are copied, and captioned with the last start's command.
  figures = sorted(os.listdir(workdir / "report" / "figures"))
  assert figures == ["analysis__heatmap.png", "tok__learning_curves.png"]
  assert "(figures/tok__learning_curves.png)" in text
  assert (
      "made by `python -m asl_vq.main --config=configs/tokenizer.py:cpu`"
      in text
  )
  assert "made by `python -m asl_vq.analysis --out=x`" in text
  assert "--config=nope" not in text
  # A second report replaces the first, and does not report itself.
  assert report.write_report(str(workdir)) == path
  assert sorted(os.listdir(workdir / "report" / "figures")) == figures


def test_empty_or_missing_workdir_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no runs found"):
    report.write_report(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no such directory"):
    report.write_report(str(tmp_path / "absent"))


def test_command_line_names_the_module(tmp_path, monkeypatch):
  main = os.path.join(os.path.dirname(report.__file__), "main.py")
  assert (
      provenance.command_line([main, "--workdir=a b"])
      == "python -m asl_vq.main '--workdir=a b'"
  )
  monkeypatch.setattr("sys.argv", [main, "--x=1"])
  provenance.record_command(str(tmp_path))
  provenance.record_command(str(tmp_path))
  monkeypatch.setattr("sys.argv", [main, "--x=2"])
  provenance.record_command(str(tmp_path))
  assert (tmp_path / "command.txt").read_text().splitlines() == [
      "python -m asl_vq.main --x=1"
  ] * 2 + ["python -m asl_vq.main --x=2"]
  assert provenance.last_command(str(tmp_path)) == "python -m asl_vq.main --x=2"
  assert provenance.last_command(str(tmp_path / "absent")) is None


def test_values_not_computed_are_absent_not_nan(tmp_path):
  """A tokenizer without the CTC head has no 'ctc' or 'score': its lines,
  tables and report show "—" (CSV: empty), never nan."""
  task = tokenizer_task.TokenizerTask(config_lib.load("tokenizer", "tiny"))
  line = task.format_eval(
      {"loss": 2.5, "recon": 2.5, "usage_q0": 0.5, "perplexity_q0": 9.0}
  )
  assert line.startswith("loss 2.5000 recon 2.5000 ctc — score — usage")
  assert "nan" not in line
  text = tables.write_table(
      str(tmp_path),
      "t",
      ["model", "score"],
      [["RVQ", float("nan")], ["CTC", 0.25], ["none", None]],
      "note",
  )
  assert "| RVQ | — |" in text and "| CTC | 0.250 |" in text
  assert "| none | — |" in text
  assert (tmp_path / "t.csv").read_text().splitlines() == [
      "model,score",
      "RVQ,",
      "CTC,0.250",
      "none,",
  ]
  assert (
      report.format_cell(float("nan")) == "—"
      and report.format_cell(None) == "—"
  )
