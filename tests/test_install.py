"""The package as a user installs it: a wheel (not the checkout) in a fresh
venv, used from a directory outside the repository. The packaged configs
load by name, the main job runs, and the Colab demo executes end to end at
its tiny size (so neither can rot)."""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import nbformat
import pytest

import xla_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "launch", "colab_demo.ipynb")


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
  """A venv holding the wheel of this checkout; its dependencies come from
  this interpreter's site-packages through a .pth line (no download, and no
  editable install of asl_vq leaks in: .pth files there are not run)."""
  root = tmp_path_factory.mktemp("install")
  # Built from a copy without build outputs, so no stale module of an
  # earlier build (build/lib) can ship in the wheel.
  source = root / "source"

  def skip(directory, names):
    top = (
        (".git", "build", "dist", "runs", "data", ".venv")
        if (os.path.samefile(directory, REPO))
        else ()
    )
    return [
        n
        for n in names
        if n in top or n == "__pycache__" or n.endswith(".egg-info")
    ]

  shutil.copytree(REPO, source, ignore=skip)
  subprocess.run(
      [
          sys.executable,
          "-m",
          "pip",
          "wheel",
          "-q",
          "--no-deps",
          "-w",
          str(root / "dist"),
          str(source),
      ],
      check=True,
      capture_output=True,
  )
  (wheel,) = glob.glob(str(root / "dist" / "asl_vq-*.whl"))
  env_dir = root / "venv"
  subprocess.run(
      [sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True
  )
  python = str(env_dir / "bin" / "python")
  site = subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
      check=True,
      capture_output=True,
      text=True,
  ).stdout.strip()
  with open(os.path.join(site, "deps.pth"), "w") as f:
    f.write(sysconfig.get_path("purelib") + "\n")
  subprocess.run(
      [
          sys.executable,
          "-m",
          "pip",
          "install",
          "-q",
          "--no-deps",
          "--target",
          site,
          wheel,
      ],
      check=True,
      capture_output=True,
  )
  return python, root


def _env(root):
  env = xla_env.env(os.environ, devices=1, ASL_VQ_CACHE=str(root / "cache"))
  env.pop("PYTHONPATH", None)
  return env


@pytest.mark.slow
def test_wheel_runs_main_by_config_name_outside_the_checkout(venv):
  python, root = venv
  where = subprocess.run(
      [python, "-c", "import asl_vq.configs as c; print(c.__file__)"],
      cwd=root,
      env=_env(root),
      check=True,
      capture_output=True,
      text=True,
  ).stdout
  assert where.startswith(str(root / "venv")), where
  run = subprocess.run(
      [
          python,
          "-m",
          "asl_vq.main",
          "--config=tokenizer:tiny",
          f"--workdir={root / 'run'}",
          "--config.train.num_epochs=1",
      ],
      cwd=root,
      env=_env(root),
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  assert (root / "run" / "test_metrics.json").exists()
  bad = subprocess.run(
      [python, "-m", "asl_vq.main", "--config=nope:tiny", "--workdir=x"],
      cwd=root,
      env=_env(root),
      capture_output=True,
      text=True,
  )
  assert bad.returncode != 0
  assert "no packaged config 'nope'; packaged: continuous, lm" in bad.stderr


@pytest.mark.slow
def test_colab_demo_runs_end_to_end_from_the_wheel(venv):
  python, root = venv
  out = root / "executed.ipynb"
  script = textwrap.dedent(f"""
      import nbformat
      from nbclient import NotebookClient
      nb = nbformat.read({NOTEBOOK!r}, as_version=4)
      NotebookClient(nb, timeout=900, kernel_name="python3",
                     resources={{"metadata": {{"path": {str(root)!r}}}}}
                     ).execute()
      nbformat.write(nb, {str(out)!r})
  """)
  env = dict(_env(root), ASL_VQ_DEMO_TINY="1")
  run = subprocess.run(
      [python, "-c", script],
      cwd=root,
      env=env,
      capture_output=True,
      text=True,
      timeout=1800,
  )
  assert run.returncode == 0, run.stderr[-4000:]
  nb = nbformat.read(str(out), as_version=4)
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [
      o
      for o in outputs
      if "image/png" in o.get("data", {}) or "image/gif" in o.get("data", {})
  ]
  # Learning curves, the 1..4-quantizer decodings, heatmap, gallery, the
  # generated signing.
  assert len(images) >= 5, [o.get("data", {}).keys() for o in outputs]
  text = "".join(o.get("text", "") for o in outputs)
  assert "<a" in text and "codes (" in text  # the tokens shown as text.
  assert (root / "asl_vq_demo" / "tokenizer" / "best").is_dir()
