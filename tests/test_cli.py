"""Every entry point on bad input: exit status 1 and one line `error: ...`
that names the file or setting and the fix; never a traceback."""

import os
import subprocess
import sys

import pytest

import xla_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "/nonexistent/asl_vq"

# (module, arguments, a part of the expected line).
CASES = [
    (
        "asl_vq.main",
        [
            "--config=tokenizer:tiny",
            "--workdir={w}/out",
            f"--config.data.dir={MISSING}",
        ],
        f"error: {MISSING}: data directory does not exist",
    ),
    (
        "asl_vq.main",
        ["--config=tokenize", "--workdir={w}/out"],
        "error: config.checkpoint is required: the tokenizer's training workdir "
        "(--config.checkpoint=RUN)",
    ),
    (
        "asl_vq.main",
        [
            "--config=tokenizer:tiny",
            "--workdir={w}/out",
            "--config.train.nope=1",
        ],
        "error: --config.train.nope=1: the config has no field 'nope'",
    ),
    (
        "asl_vq.main",
        [
            "--config=tokenizer:tiny",
            "--workdir={w}/out",
            "--config.train.num_epoch=1",
        ],
        "error: --config.train.num_epoch=1: the config has no field 'num_epoch'"
        '; Did you mean "num_epochs" instead of "num_epoch"?',
    ),
    (
        "asl_vq.main",
        ["--config=nope", "--workdir={w}/out"],
        "error: --config=nope: no such file and no packaged config",
    ),
    (
        "asl_vq.experiments.paper_tables",
        ["--workdir={w}/out", "--preset=tiny", f"--data_dir={MISSING}"],
        f"error: {MISSING}: data directory does not exist",
    ),
    (
        "asl_vq.generate",
        [f"--lm={MISSING}", "--out={w}/out", "--text=hi"],
        f"error: {MISSING}: no config.json; is it a training workdir?",
    ),
    (
        "asl_vq.analysis",
        [f"--tokens={MISSING}", "--out={w}/out"],
        f"error: {MISSING}/test.parquet does not exist; is '{MISSING}' a "
        "directory written by `python -m asl_vq.main --config=tokenize",
    ),
    (
        "asl_vq.report",
        [f"--workdir={MISSING}"],
        f"error: {MISSING}: no such directory",
    ),
    (
        "asl_vq.data.inspect",
        [f"--data_dir={MISSING}"],
        f"error: {MISSING}: data directory does not exist",
    ),
    (
        "asl_vq.data.synthetic",
        ["--out={w}/out", "--num_sequences=0"],
        "error: --num_sequences=0: give at least 1 sequence",
    ),
    (
        "asl_vq.bench",
        ["--shapes=22by196"],
        "error: --shapes: '22by196' is not BATCHxFRAMES (e.g. 22x196)",
    ),
    (
        "asl_vq.export_vocab",
        [f"--tokenizer={MISSING}", "--out={w}/out"],
        f"error: {MISSING}: no config.json; is it a training workdir?",
    ),
    (
        "asl_vq.import_reference",
        [f"--checkpoint={MISSING}.npz", "--workdir={w}/out"],
        f"error: [Errno 2] No such file or directory: '{MISSING}.npz'",
    ),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """All cases at once (each is mostly interpreter and JAX start-up)."""
  procs = []
  for i, (module, args, _) in enumerate(CASES):
    w = tmp_path_factory.mktemp(f"case{i}")
    procs.append(
        (
            w,
            subprocess.Popen(
                [sys.executable, "-m", module, *(a.format(w=w) for a in args)],
                cwd=w,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=xla_env.env(os.environ, devices=1),
            ),
        )
    )
  return [
      (p.returncode, out, err, w)
      for w, p in procs
      for out, err in [p.communicate(timeout=600)]
  ]


@pytest.mark.parametrize(
    "case",
    range(len(CASES)),
    ids=[f"{m.split('.')[-1]}-{i}" for i, (m, _, _) in enumerate(CASES)],
)
def test_bad_input_gives_one_line(runs, case):
  """... and leaves no output folder holding only command.txt (issue 30,
  8): every case's outputs go under its own empty case folder."""
  code, _, err, w = runs[case]
  expected = CASES[case][2]
  lines = [l for l in err.strip().splitlines() if l.startswith("error: ")]
  assert code == 1 and "Traceback" not in err, err[-3000:]
  assert len(lines) == 1 and lines[0].startswith(expected), err[-3000:]
  out = w / "out"
  assert not out.exists() or os.listdir(out) != [
      "command.txt"
  ], f"{out} holds only command.txt"


@pytest.mark.parametrize(
    "raised, one_line",
    [
        ("errors.UserError('x.parquet: bad; fix it')", True),
        ("errors.MissingExtra('needs scikit-learn: pip install ...')", True),
        ("FileNotFoundError('no such file: x')", True),
        ("ValueError('shapes (3, 4) and (5,) do not align')", False),
        ("ImportError('cannot import name frobnicate')", False),
        ("TypeError('unsupported operand')", False),
    ],
)
def test_a_bug_keeps_its_traceback_and_bad_input_is_one_line(raised, one_line):
  """Only the project's input errors become one line (issue 30, 9)."""
  program = (
      "from asl_vq import cli, errors\n"
      f"def main(argv):\n  raise {raised}\n"
      "cli.run(main)\n"
  )
  run = subprocess.run(
      [sys.executable, "-c", program],
      capture_output=True,
      text=True,
      timeout=300,
      env=xla_env.env(os.environ, devices=1),
  )
  assert run.returncode == 1
  assert ("Traceback" not in run.stderr) == one_line, run.stderr[-2000:]
  assert run.stderr.strip().startswith("error: ") == one_line
