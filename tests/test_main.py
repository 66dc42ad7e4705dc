"""The entry point on bad input: one line naming the setting and the fix."""

import os
import subprocess
import sys

import xla_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, **env):
  return subprocess.run(
      [sys.executable, "-m", "asl_vq.main", *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=600,
      env=xla_env.env(os.environ, devices=1, **env),
  )


def test_a_dataset_smaller_than_one_batch(tmp_path):
  run = _main(
      "--config=tokenizer:tiny",
      f"--workdir={tmp_path}",
      "--config.train.batch_size=64",
  )
  assert run.returncode == 1
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith("error: the training split has "), run.stderr
  assert (
      "fewer than one global batch of 64: lower "
      "--config.train.batch_size" in last
  )
  assert "Traceback" not in run.stderr


def test_an_unknown_config_option():
  run = _main("--config=tokenizer:tiny,row=nope", "--workdir=unused")
  assert run.returncode != 0
  assert run.stderr.startswith(
      "error: ValueError: unknown row 'nope': rvq+ctc+qdrop, rvq, rvq+qdrop, "
      "rvq+ctc\n"
  ), run.stderr
  assert "Traceback" not in run.stderr
  run = _main("--config=tokenizer:tiny,pattern=delay", "--workdir=unused")
  assert (
      "unknown config option 'pattern=delay': a size preset (paper, "
      "cpu, tiny) or one of row=" in run.stderr
  )


def _saved_run(tmp_path):
  """A workdir as a tiny run leaves it: its config and checkpoints."""
  from asl_vq import config_lib  # pylint: disable=g-import-not-at-top

  (tmp_path / "checkpoints").mkdir()
  text = config_lib.load("tokenizer", "tiny").to_json_best_effort(indent=2)
  (tmp_path / "config.json").write_text(text)
  return text


def test_resume_refuses_another_configuration(tmp_path):
  saved = _saved_run(tmp_path)
  run = _main(
      "--config=tokenizer:tiny",
      f"--workdir={tmp_path}",
      "--config.train.batch_size=4",
      "--config.train.num_epochs=3",
  )
  assert run.returncode == 1
  assert run.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path} holds a run of another configuration "
      "(train.batch_size 8 -> 4); run the same config to resume it, or give "
      "a new --workdir"
  ), run.stderr
  assert (tmp_path / "config.json").read_text() == saved  # not overwritten
  # Refused before any data is made (the cpu preset's 3,000 sequences).
  cache = tmp_path.parent / f"{tmp_path.name}_cache"
  run = _main(
      "--config=tokenizer:cpu", f"--workdir={tmp_path}", ASL_VQ_CACHE=str(cache)
  )
  assert "data.max_len 64 -> 192" in run.stderr
  assert "model.dim 16 -> 128" in run.stderr
  assert not cache.exists()


def test_resume_allows_more_epochs_and_says_so(tmp_path, capsys):
  from asl_vq import config_lib  # pylint: disable=g-import-not-at-top
  from asl_vq import workdir  # pylint: disable=g-import-not-at-top

  _saved_run(tmp_path)
  config = config_lib.load("tokenizer", "tiny")
  config.train.num_epochs = 5
  config.train.log_every_steps = 1
  workdir.check_resume(config, str(tmp_path))
  assert capsys.readouterr().out.strip() == (
      "resuming with train.log_every_steps 2 -> 1, train.num_epochs 2 -> 5"
  )


def test_resume_refuses_other_inputs(tmp_path, capsys):
  """A run on tokens of one tokenizer does not resume on tokens remade by
  another (weights by content, issue 30, 2), nor on another data split: it
  names what changed. An inputs.json of the earlier version (inputs by name
  and time) resumes on the same sequences and is keyed on content after."""
  import json  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from asl_vq import config_lib  # pylint: disable=g-import-not-at-top
  from asl_vq import workdir  # pylint: disable=g-import-not-at-top

  _saved_run(tmp_path)
  config = config_lib.load("tokenizer", "tiny")
  origin = {"tokenizer": "a" * 16, "data": "ab", "sequences": "cd"}
  inputs = {"train": origin, "validation": dict(origin, sequences="ef")}
  (tmp_path / "inputs.json").write_text(
      json.dumps(dict(inputs, keyed_on="content"))
  )
  workdir.check_resume(config, str(tmp_path), inputs)  # the same: resumes.
  later = {k: dict(v, tokenizer="b" * 16) for k, v in inputs.items()}
  with pytest.raises(workdir.StaleInputs) as e:
    workdir.check_resume(config, str(tmp_path), later)
  assert str(e.value) == (
      f"{tmp_path} was trained on other inputs (train.tokenizer "
      f"{'a' * 16!r} -> {'b' * 16!r}, validation.tokenizer {'a' * 16!r} -> "
      f"{'b' * 16!r}); its results would not be this data's: give a new "
      "--workdir, or delete this one to train again"
  )
  # The earlier version's inputs.json: a tokenizer by path and step.
  legacy = {
      k: {
          "tokenizer": "/runs/r",
          "step": 8,
          "data": "xy",
          "sequences": v["sequences"],
      }
      for k, v in inputs.items()
  }
  (tmp_path / "inputs.json").write_text(json.dumps(legacy))
  capsys.readouterr()
  workdir.check_resume(config, str(tmp_path), inputs)
  assert "inputs.json from an earlier version" in capsys.readouterr().out
  other = {k: dict(v, sequences="gh") for k, v in inputs.items()}
  with pytest.raises(workdir.StaleInputs, match="train.sequences 'cd' -> 'gh'"):
    workdir.check_resume(config, str(tmp_path), other)


def test_a_run_saved_before_added_fields_resumes_as_it_was_trained(tmp_path):
  """A config.json without the fields added since (conv_bn_activation,
  revival, ctc_weight, warmup_epochs, resample, min_hand_frames) stands for
  the values those runs had: it resumes with them, and is refused, by name,
  under today's defaults."""
  import json  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from asl_vq import config_lib  # pylint: disable=g-import-not-at-top
  from asl_vq import workdir  # pylint: disable=g-import-not-at-top

  (tmp_path / "checkpoints").mkdir()
  old = json.loads(config_lib.load("tokenizer", "tiny").to_json_best_effort())
  for section, name in (
      ("model", "conv_bn_activation"),
      ("model", "revival"),
      ("train", "ctc_weight"),
      ("train", "warmup_epochs"),
      ("data", "resample"),
      ("data", "min_hand_frames"),
  ):
    del old[section][name]
  (tmp_path / "config.json").write_text(json.dumps(old))
  config = config_lib.load("tokenizer", "tiny")
  with pytest.raises(ValueError) as e:
    workdir.check_config(config, str(tmp_path))
  assert "model.conv_bn_activation 'silu' -> 'none'" in str(e.value)
  assert "data.resample 'linear' -> 'nearest'" in str(e.value)
  config.model.conv_bn_activation, config.data.resample = "silu", "linear"
  assert workdir.check_config(config, str(tmp_path)) == {}
  upgraded = config_lib.saved_config(old)
  assert "conv_bn_activation" not in old["model"]  # not changed in place
  assert upgraded["model"]["conv_bn_activation"] == "silu"
  assert (
      "conv_bn_activation"
      not in config_lib.saved_config(dict(old, task="translate"))["model"]
  )


def test_a_run_saved_under_a_tasks_earlier_name_resumes(tmp_path):
  """A translation run saved before the task was renamed (task "seq2seq")
  resumes under configs/translate.py, and its config loads as today's."""
  import json  # pylint: disable=g-import-not-at-top
  from asl_vq import config_lib  # pylint: disable=g-import-not-at-top
  from asl_vq import workdir  # pylint: disable=g-import-not-at-top

  (tmp_path / "checkpoints").mkdir()
  config = config_lib.load("translate", "tiny,input=continuous")
  old = dict(json.loads(config.to_json_best_effort()), task="seq2seq")
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert workdir.check_config(config, str(tmp_path)) == {}
  assert config_lib.saved_config(old)["task"] == "translate"
  assert config_lib.task_name("seq2seq") == "translate"  # as main maps it.
  assert config_lib.task_name("probe") == "probe"
  assert config_lib.load("seq2seq", "tiny") == config_lib.load(
      "translate", "tiny"
  )
  assert config_lib.load("rvq_ctc", "tiny") == config_lib.load(
      "tokenizer", "tiny"
  )
