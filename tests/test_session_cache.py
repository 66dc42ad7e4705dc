"""The tests' compile cache (tests/session_cache.py): a session sees the
store's programs, and its own join the store only if it passed."""

import json
import os
import subprocess
import sys

import session_cache


def _entries(path):
  return sorted(n for n in os.listdir(path) if n.endswith("-cache"))


def test_a_session_sees_the_store_and_adds_to_it_only_if_it_passed(
    tmp_path, monkeypatch
):
  monkeypatch.setattr(session_cache, "ROOT", str(tmp_path))
  monkeypatch.setattr(session_cache, "STORE", str(tmp_path / "jax"))
  (tmp_path / "jax").mkdir()
  (tmp_path / "jax" / "a-cache").write_bytes(b"a")

  failed = session_cache.open_session()
  assert _entries(failed) == ["a-cache"]
  (tmp_path / failed / "b-cache").write_bytes(b"trunc")  # e.g. killed.
  session_cache.close_session(failed, passed=False)
  assert not os.path.exists(failed)
  assert _entries(tmp_path / "jax") == ["a-cache"]

  passed = session_cache.open_session()
  (tmp_path / passed / "c-cache").write_bytes(b"c")
  session_cache.close_session(passed, passed=True)
  assert not os.path.exists(passed)
  assert _entries(tmp_path / "jax") == ["a-cache", "c-cache"]
  assert (tmp_path / "jax" / "c-cache").read_bytes() == b"c"


def test_trim_keeps_the_programs_read_last(tmp_path):
  for i, name in enumerate(("old-cache", "mid-cache", "new-cache")):
    path = tmp_path / name
    path.write_bytes(b"x" * 100)
    os.utime(path, (1000 + i, 1000 + i))
  (tmp_path / "notes.txt").write_bytes(b"y" * 1000)  # not an entry.
  session_cache.trim(str(tmp_path), keep=250)
  assert _entries(tmp_path) == ["mid-cache", "new-cache"]
  assert (tmp_path / "notes.txt").exists()


def test_the_sessions_data_folder_is_removed_when_the_session_ends(tmp_path):
  """conftest's private `$ASL_VQ_CACHE` (a test session's synthetic data and
  tiny runs) goes with the process that made it; a subprocess that imports
  conftest too uses it and leaves it in place."""
  env = {k: v for k, v in os.environ.items() if k != "ASL_VQ_CACHE"}
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax")  # no store copy.
  env["HOME"] = str(tmp_path)  # session_cache.ROOT under it.
  child = "import os, conftest; print(os.environ['ASL_VQ_CACHE'])"
  code = (
      "import json, os, subprocess, sys, conftest\n"
      "data = os.environ['ASL_VQ_CACHE']\n"
      "open(os.path.join(data, 'made'), 'w').close()\n"
      f"seen = subprocess.run([sys.executable, '-c', {child!r}],\n"
      "                      capture_output=True, text=True).stdout\n"
      "kept = os.path.exists(os.path.join(data, 'made'))\n"
      "print(json.dumps([data, seen.strip(), kept]))\n"
  )
  run = subprocess.run(
      [sys.executable, "-c", code],
      cwd=os.path.dirname(__file__),
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert run.returncode == 0, run.stderr
  data, seen, kept = json.loads(run.stdout.splitlines()[-1])
  assert data.startswith(str(tmp_path)) and seen == data and kept
  assert not os.path.exists(data)
