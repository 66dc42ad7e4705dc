"""Result tables as CSV and markdown (the paper's Tables 2-5)."""

from __future__ import annotations

import csv
import os
from typing import Any, Sequence


def _cell(v: Any) -> str:
  if isinstance(v, float):
    return "n/a" if v != v else f"{v:.3f}"
  return str(v)


def write_table(out_dir: str, name: str, header: Sequence[str],
                rows: Sequence[Sequence[Any]], note: str) -> str:
  """`<out_dir>/<name>.csv` and `.md` (the note above a markdown table);
  returns the markdown. Floats to 3 decimals, NaN as n/a."""
  cells = [[_cell(v) for v in r] for r in rows]
  with open(os.path.join(out_dir, f"{name}.csv"), "w", newline="") as f:
    csv.writer(f).writerows([header, *cells])
  lines = [note, "", "| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in cells]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
    f.write(text)
  return text
