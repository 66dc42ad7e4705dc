"""Lint in CI: pyflakes' checks (unused or undefined names, imports, ...)
and syntax errors over the package, configs, launch scripts and tests."""

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = "F,E9"


def test_ruff_finds_nothing():
  ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable),
                                              "ruff")
  run = subprocess.run(
      [ruff, "check", f"--select={RULES}", "--no-cache", "--output-format",
       "concise", "asl_vq", "configs", "launch", "tests"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stdout + run.stderr
