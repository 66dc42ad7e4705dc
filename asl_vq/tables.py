"""Result tables as CSV and markdown (the paper's Tables 2-5)."""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence

from etils import epath


def _cell(v: Any, absent: str) -> str:
  """Floats to 3 decimals; `absent` for a value not computed (None, NaN)."""
  if v is None or isinstance(v, float) and v != v:
    return absent
  return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_table(
    out_dir: str,
    name: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    note: str,
) -> str:
  """`<out_dir>/<name>.csv` and `.md` (the note above a markdown table);
  returns the markdown. Floats to 3 decimals; a value not computed (None or
  NaN) is an empty CSV cell and "—" in markdown, never "nan". `out_dir` is
  local or an object store URL (`gs://bucket/runs/table2`)."""
  csv_text = io.StringIO()
  csv.writer(csv_text).writerows(
      [header, *[[_cell(v, "") for v in r] for r in rows]]
  )
  epath.Path(out_dir, f"{name}.csv").write_text(csv_text.getvalue())
  lines = [
      note,
      "",
      "| " + " | ".join(header) + " |",
      "|" + "---|" * len(header),
  ]
  lines += ["| " + " | ".join(_cell(v, "—") for v in r) + " |" for r in rows]
  text = "\n".join(lines) + "\n"
  epath.Path(out_dir, f"{name}.md").write_text(text)
  return text
