"""Style in CI (.ci/run runs this file before the suite, and the suite runs
it again): ruff's lint rules and pyink's formatting, both as configured in
pyproject.toml, over the package, configs, launch scripts and tests."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = ("asl_vq", "configs", "launch", "tests", "setup.py")


def _tool(name: str) -> str:
  return os.path.join(os.path.dirname(sys.executable), name)


def test_ruff_finds_nothing():
  run = subprocess.run(
      [
          _tool("ruff"),
          "check",
          "--no-cache",
          "--output-format",
          "concise",
          *PATHS,
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert run.returncode == 0, run.stdout + run.stderr


def test_the_tree_is_formatted():
  """`pyink .` from the repository root writes what this checks."""
  run = subprocess.run(
      [_tool("pyink"), "--check", "--quiet", *PATHS],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert run.returncode == 0, (
      "run `pyink asl_vq configs launch tests setup.py` from the repository "
      "root; it would reformat:\n" + run.stdout + run.stderr
  )


def test_pyink_reads_the_projects_settings():
  """pyproject.toml's settings, not pyink's defaults (4-space indents, 88
  columns): a 2-space body passes."""
  run = subprocess.run(
      [_tool("pyink"), "--check", "--stdin-filename", "t.py", "-"],
      cwd=REPO,
      input="def f(x):\n  return x\n",
      capture_output=True,
      text=True,
      timeout=60,
  )
  assert run.returncode == 0, run.stdout + run.stderr
