"""The Colab demo runs end to end (tiny sizes), so it cannot rot."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "launch",
                        "colab_demo.ipynb")


@pytest.fixture()
def executed(tmp_path, monkeypatch):
  # The kernel inherits this environment: tiny sizes, a private cache.
  monkeypatch.setenv("ASL_VQ_DEMO_TINY", "1")
  monkeypatch.setenv("ASL_VQ_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  return nb, tmp_path


def test_colab_demo_runs_end_to_end(executed):
  nb, cwd = executed
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})
            or "image/gif" in o.get("data", {})]
  # Learning curves, the 1..4-quantizer decodings, heatmap, gallery, the
  # generated signing.
  assert len(images) >= 5, [o.get("data", {}).keys() for o in outputs]
  text = "".join(o.get("text", "") for o in outputs)
  assert "<a" in text and "codes (" in text   # the tokens shown as text.
  assert (cwd / "asl_vq_demo" / "tokenizer" / "best").is_dir()
