r"""One readable report of every run under a directory.

  python -m asl_vq.report --workdir=runs [--out=runs/report]

Walks `--workdir` for what the commands wrote and gathers it into
`<out>/report.md` with its PNGs copied to `<out>/figures/`:
  * training runs (a `config.json`): tokenizers (score, reconstruction,
    codebook usage and perplexity per quantizer), translators and probes
    (test score / accuracy), language models (next-token accuracy per
    quantizer), each with its learning curves;
  * the Table 2 / Table 5 runner's `table2.md` and `table5.md`;
  * the token analyses' `analysis.json` (MI table, heatmap, galleries, trees,
    finger angles);
  * generation evaluations' `generation.json`.
Every figure is captioned with the command that made it: the last start
recorded in its directory's `command.txt` (one line per start: an earlier
start may have failed, or the run been resumed with other flags), and every
section says whether its data is real or the embedded synthetic dataset.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from typing import Any, Iterator, Sequence

from absl import app
from absl import flags
from etils import epath

from asl_vq import cli
from asl_vq import config_lib
from asl_vq import fileio
from asl_vq import metric_writers
from asl_vq import provenance

FLAGS = flags.FLAGS

SYNTHETIC = "synthetic"
REAL = "real"
_SYNTHETIC_NOTE = (
    "*Synthetic data*: the procedural hand model of "
    "`asl_vq.data.synthetic`, not the Kaggle dataset; use these "
    "figures for relative comparisons, never as real-data "
    "results."
)


def _define_flags():
  flags.DEFINE_string(
      "workdir", None, "Directory holding the runs (local " "or gs://...)."
  )
  flags.DEFINE_string(
      "out", None, "Where report.md goes ('' = " "<workdir>/report)."
  )
  flags.mark_flags_as_required(["workdir"])


def _load_json(path: str) -> Any:
  return json.loads(epath.Path(path).read_text())


@dataclasses.dataclass
class Artifact:
  """One directory a command wrote."""

  path: str  # relative to the report's workdir.
  kind: str  # tokenizer|translate|probe|lm|tables|analysis|generation
  data: str  # SYNTHETIC or REAL
  command: str | None  # its last start's command, if recorded.
  info: dict[str, Any]  # the kind's own files, parsed.


def _data_of_config(config: dict[str, Any]) -> str:
  return REAL if config.get("data", {}).get("dir") else SYNTHETIC


def _data_of_text(text: str) -> str:
  return SYNTHETIC if "synthetic" in text.split("\n", 1)[0].lower() else REAL


def _walk(root: str, skip: Sequence[str]) -> Iterator[tuple[str, set[str]]]:
  """(directory, its file names), top-down in name order, from `root` down
  but for `skip` and the runs' checkpoints and event files."""
  children = list(epath.Path(root).iterdir())
  dirs = sorted(c.name for c in children if c.is_dir())
  yield root, {c.name for c in children} - set(dirs)
  for d in dirs:
    path = os.path.join(root, d)
    if (
        d not in ("checkpoints", "best", "tensorboard")
        and fileio.abspath(path) not in skip
    ):
      yield from _walk(path, skip)


def discover(workdir: str, skip: Sequence[str] = ()) -> list[Artifact]:
  """Every artifact directory under `workdir` (local or an object store
  URL), in path order."""
  found = []
  skip = [fileio.abspath(s) for s in skip]
  for root, names in _walk(workdir, skip):
    rel = os.path.relpath(root, workdir)
    command = provenance.last_command(root)
    if "config.json" in names:
      config = config_lib.saved_config(
          _load_json(os.path.join(root, "config.json"))
      )
      task = config.get("task")
      if task in ("tokenizer", "translate", "probe", "lm"):
        info = {
            "config": config,
            "metrics": metric_writers.read_metrics(
                os.path.join(root, "metrics.jsonl")
            ),
        }
        if "test_metrics.json" in names:
          info["test"] = _load_json(os.path.join(root, "test_metrics.json"))
        found.append(
            Artifact(rel, task, _data_of_config(config), command, info)
        )
    if "table2.md" in names or "table5.md" in names:
      info = {}
      for name in ("table2.md", "table5.md"):
        if name in names:
          info[name] = epath.Path(root, name).read_text()
      found.append(
          Artifact(
              rel,
              "tables",
              _data_of_text(next(iter(info.values()))),
              command,
              info,
          )
      )
    if "analysis.json" in names:
      info = _load_json(os.path.join(root, "analysis.json"))
      found.append(
          Artifact(rel, "analysis", info.get("data", SYNTHETIC), command, info)
      )
    if "generation.json" in names:
      info = _load_json(os.path.join(root, "generation.json"))
      found.append(
          Artifact(
              rel, "generation", info.get("data", SYNTHETIC), command, info
          )
      )
  return found


def _last(metrics: list[dict], split: str) -> dict[str, float]:
  rows = [r for r in metrics if r.get("split") == split]
  return rows[-1] if rows else {}


def format_cell(v: Any) -> str:
  """A cell: "—" for what was not computed (None, NaN), never "nan"."""
  if v is None or isinstance(v, float) and v != v:
    return "—"
  if isinstance(v, float):
    return f"{v:.3f}" if abs(v) < 1e4 else f"{v:.3g}"
  return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(format_cell(v) for v in r) + " |" for r in rows]
  return lines + [""]


def _per_quantizer(d: dict[str, Any], key: str) -> list[Any]:
  """d[f"{key}_q0"], d[f"{key}_q1"], ... while present."""
  out, k = [], 0
  while f"{key}_q{k}" in d:
    out.append(d[f"{key}_q{k}"])
    k += 1
  return out


class _Figures:
  """Copies PNGs next to the report and numbers their captions."""

  def __init__(self, workdir: str, out: str):
    self.workdir, self.dir = workdir, os.path.join(out, "figures")
    self.count = 0

  def add(self, artifact: Artifact, png: str, what: str) -> list[str]:
    epath.Path(self.dir).mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(png, self.workdir)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "__", rel)
    epath.Path(png).copy(os.path.join(self.dir, name), overwrite=True)
    self.count += 1
    made_by = (
        f"made by `{artifact.command}`"
        if artifact.command
        else f"from `{artifact.path}` (command not recorded)"
    )
    return [
        f"![{what}](figures/{name})",
        "",
        f"*Figure {self.count}.* {what} ({artifact.data} data); " f"{made_by}.",
        "",
    ]


def _pngs(workdir: str, artifact: Artifact) -> list[str]:
  return sorted(
      os.fspath(p) for p in epath.Path(workdir, artifact.path).glob("*.png")
  )


def _tokenizers(arts: list[Artifact]) -> list[str]:
  rows = []
  for a in arts:
    val, test = _last(a.info["metrics"], "validation"), a.info.get("test", {})
    usage = _per_quantizer(test or val, "usage")
    ppl = _per_quantizer(test or val, "perplexity")
    # A tokenizer without the CTC head has no score (runs trained before it
    # was left out logged 0).
    ctc = a.info["config"].get("model", {}).get("use_ctc", True)
    score = lambda d: d.get("score") if ctc else None
    rows.append(
        [
            a.path,
            a.info["config"].get("row", "—"),
            a.data,
            val.get("step"),
            score(val),
            score(test),
            test.get("recon"),
            " / ".join(f"{u:.2f}" for u in usage) or "—",
            " / ".join(f"{p:.0f}" for p in ppl) or "—",
        ]
    )
  lines = [
      "## Tokenizers",
      "",
      "CTC score = greedy normalised Levenshtein of the CTC head; usage "
      "= fraction of each quantizer's codes used on the test split, "
      "perplexity = exp(entropy) of its code distribution.",
      "",
  ]
  lines += _table(
      [
          "run",
          "row",
          "data",
          "steps",
          "val score",
          "test score",
          "test recon",
          "usage q0..q3",
          "perplexity q0..q3",
      ],
      rows,
  )
  return lines


def _downstream(arts: list[Artifact]) -> list[str]:
  rows = []
  for a in arts:
    config, test = a.info["config"], a.info.get("test", {})
    encoder = config.get("model", {}).get("encoder", "—")
    value = test.get("score") if a.kind == "translate" else test.get("accuracy")
    rows.append(
        [a.path, a.kind, encoder, config.get("tokens") or "—", a.data, value]
    )
  return [
      "## Translation and probing runs",
      "",
      "translate: normalised Levenshtein of greedy decoding on test; "
      "probe: mean accuracy over the letters a-z on its test part.",
      "",
  ] + _table(["run", "task", "input", "tokens", "data", "test"], rows)


def _language_models(arts: list[Artifact], gens: list[Artifact]) -> list[str]:
  lines = ["## Language models (text to signing)", ""]
  rows = []
  for a in arts:
    val, test = _last(a.info["metrics"], "validation"), a.info.get("test", {})
    rows.append(
        [
            a.path,
            a.info["config"].get("model", {}).get("pattern", "—"),
            a.data,
            " / ".join(f"{v:.3f}" for v in _per_quantizer(val, "accuracy")),
            " / ".join(f"{v:.3f}" for v in _per_quantizer(test, "accuracy")),
        ]
    )
  if rows:
    lines += ["Next-token accuracy per quantizer (q0..q3).", ""]
    lines += _table(["run", "pattern", "data", "validation", "test"], rows)
  if gens:
    lines += [
        "Generated signing, decoded by the tokenizer and recognised by "
        "the continuous translator (normalised Levenshtein).",
        "",
    ]
    lines += _table(
        ["run", "data", "phrases", "score"],
        [
            [g.path, g.data, g.info.get("num_phrases"), g.info.get("score")]
            for g in gens
        ],
    )
  return lines


def _analyses(arts: list[Artifact], figs: _Figures, workdir: str) -> list[str]:
  lines = ["## Token analyses", ""]
  for a in arts:
    lines += [f"### `{a.path}`", ""]
    if a.data == SYNTHETIC:
      lines += [_SYNTHETIC_NOTE, ""]
    for name in ("mi_table.md", "angles_table.md"):
      path = epath.Path(workdir, a.path, name)
      if path.exists():
        lines += [path.read_text().strip(), ""]
    for png in _pngs(workdir, a):
      what = os.path.splitext(os.path.basename(png))[0].replace("_", " ")
      lines += figs.add(a, png, what)
  return lines


def write_report(workdir: str, out: str | None = None) -> str:
  """Writes `<out>/report.md` (default out: `<workdir>/report`); returns its
  path. Both are local or object store URLs (`gs://bucket/runs`). Raises
  FileNotFoundError when `workdir` holds nothing to report."""
  out = out or os.path.join(workdir, "report")
  if not epath.Path(workdir).is_dir():
    raise FileNotFoundError(f"{workdir}: no such directory")
  arts = discover(workdir, skip=[out])
  if not arts:
    raise FileNotFoundError(
        f"{workdir}: no runs found (no config.json, table2.md, analysis.json "
        "or generation.json below it)"
    )
  # No stale figures.
  epath.Path(out, "figures").rmtree(missing_ok=True)
  figs = _Figures(workdir, out)
  of = lambda *kinds: [a for a in arts if a.kind in kinds]
  data = sorted({a.data for a in arts})
  lines = [
      "# asl_vq report",
      "",
      f"Gathered {datetime.date.today()} from `{fileio.abspath(workdir)}` "
      f"by `python -m asl_vq.report`. Data: {', '.join(data)}.",
      "",
  ]
  if SYNTHETIC in data:
    lines += [_SYNTHETIC_NOTE, ""]
  if of("tokenizer"):
    lines += _tokenizers(of("tokenizer"))
  for a in of("tables"):
    lines += [f"## Tables 2 and 5: `{a.path}`", ""]
    if a.command:
      lines += [f"Made by `{a.command}`.", ""]
    lines += [text.strip() + "\n" for text in a.info.values()]
  if of("translate", "probe"):
    lines += _downstream(of("translate", "probe"))
  if of("lm", "generation"):
    lines += _language_models(of("lm"), of("generation"))
  if of("analysis"):
    lines += _analyses(of("analysis"), figs, workdir)
  curves = [
      a
      for a in of("tokenizer", "translate", "probe", "lm", "generation")
      if _pngs(workdir, a)
  ]
  if curves:
    lines += ["## Figures of the runs", ""]
    for a in curves:
      for png in _pngs(workdir, a):
        name = os.path.splitext(os.path.basename(png))[0].replace("_", " ")
        lines += figs.add(a, png, f"{a.kind} `{a.path}`: {name}")
  epath.Path(out).mkdir(parents=True, exist_ok=True)
  path = os.path.join(out, "report.md")
  epath.Path(path).write_text("\n".join(lines))
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  print(write_report(FLAGS.workdir, FLAGS.out or None))


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
