"""The package's layers: every module imports from its layer or below.

The layers are docs/design.md's (section 3, "Rules": the `| layer | modules |`
table, lowest first), read from there, so the rule is written once. Every
`import` of every module counts, those inside functions too, but for those
under `if TYPE_CHECKING:` (annotations only). The modules are those of the
`asl_vq/` directory and `configs/` (installed as `asl_vq.configs`).
"""

import ast
import collections
import pathlib
import re
import textwrap

from asl_vq import config_lib
from asl_vq.tasks import TASKS

ROOT = pathlib.Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
PACKAGE = "asl_vq"


def layer_table(text: str) -> list[tuple[str, list[str]]]:
  """design.md's table of layers -> [(layer, module patterns)], lowest
  first. A pattern is a module under `asl_vq` (`inference`, the package
  itself `asl_vq`) or `x/*`, the package `x` and every module under it."""
  lines = [l.strip() for l in text.splitlines()]
  header = re.compile(r"\|\s*layer\s*\|\s*modules\s*\|")
  start = next(i for i, l in enumerate(lines) if header.fullmatch(l))
  table = []
  for line in lines[start + 2 :]:
    if not line.startswith("|"):
      break
    layer, modules = (c.strip() for c in line.strip("|").split("|"))
    table.append((layer, re.findall(r"`([a-z_]+(?:/\*)?)`", modules)))
  return table


def modules() -> dict[str, pathlib.Path]:
  """Dotted module name -> its file, for every module of the package."""
  found = {}
  for path in sorted((ROOT / PACKAGE).rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  for path in sorted((ROOT / "configs").glob("*.py")):
    name = "" if path.stem == "__init__" else "." + path.stem
    found[f"{PACKAGE}.configs{name}"] = path
  return found


def layer_of(module: str, table) -> tuple[int, str] | None:
  """(rank, layer) of `module`: its own entry, else the innermost package
  entry (`x/*`) holding it; None when the table has neither."""
  best = None
  for rank, (layer, patterns) in enumerate(table):
    for pattern in patterns:
      name = pattern.removesuffix("/*")
      full = PACKAGE if name == PACKAGE else f"{PACKAGE}.{name}"
      if pattern.endswith("/*"):
        if module == full or module.startswith(full + "."):
          depth = full.count(".")
          if best is None or (best[0] != "exact" and depth > best[1]):
            best = ("package", depth, rank, layer)
      elif module == full:
        best = ("exact", 0, rank, layer)
  return None if best is None else best[2:]


def _type_only(tree: ast.AST) -> set[int]:
  """ids of the import nodes under `if TYPE_CHECKING:`."""
  skipped = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
      for statement in node.body:
        skipped.update(id(n) for n in ast.walk(statement))
  return skipped


def imports(source: str, known: set[str]) -> list[tuple[int, str]]:
  """(line, module) of every import of the package in `source`, resolved to
  a module of `known` (`from asl_vq import errors` -> asl_vq.errors; `from
  asl_vq.inference import Tokenizer` -> asl_vq.inference)."""
  tree = ast.parse(source)
  skipped = _type_only(tree)
  found = []
  for node in ast.walk(tree):
    if id(node) in skipped:
      continue
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      # The package imports absolutely; a relative import would escape
      # this check, so it is refused.
      assert not node.level, f"line {node.lineno}: a relative import"
      names = [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      if name != PACKAGE and not name.startswith(PACKAGE + "."):
        continue
      while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]  # an attribute: its module.
      found.append((node.lineno, name))
  return sorted(found)


def test_design_md_has_the_layer_table():
  table = layer_table(DESIGN.read_text())
  assert [layer for layer, _ in table][:3] == ["base", "data", "models"]
  assert all(patterns for _, patterns in table)


def test_every_module_has_one_layer_and_every_entry_a_module():
  table = layer_table(DESIGN.read_text())
  found = modules()
  missing = sorted(m for m in found if layer_of(m, table) is None)
  assert (
      not missing
  ), f"modules without a layer in docs/design.md's table: {missing}"
  patterns = [p for _, ps in table for p in ps]
  assert len(patterns) == len(set(patterns)), "a module in two layers"
  for pattern in patterns:
    name = pattern.removesuffix("/*")
    full = PACKAGE if name == PACKAGE else f"{PACKAGE}.{name}"
    assert full in found, f"design.md's {pattern!r}: no such module"


def test_no_module_imports_from_a_layer_above():
  table = layer_table(DESIGN.read_text())
  found = modules()
  wrong = []
  for module, path in found.items():
    rank, layer = layer_of(module, table)
    for line, target in imports(path.read_text(), set(found)):
      target_rank, target_layer = layer_of(target, table)
      if target_rank > rank:
        wrong.append(
            f"{path.relative_to(ROOT)}:{line}: {module} ({layer}) imports "
            f"{target} ({target_layer})"
        )
  assert not wrong, "imports from a layer above:\n" + "\n".join(wrong)


def test_the_layers_at_or_above_tasks_hold_only_the_run_commands():
  table = layer_table(DESIGN.read_text())
  tasks_rank, _ = layer_of(f"{PACKAGE}.tasks", table)
  above = {
      m
      for m in modules()
      if layer_of(m, table)[0] >= tasks_rank
      and not m.startswith(f"{PACKAGE}.tasks")
  }
  assert above == {
      f"{PACKAGE}.main",
      f"{PACKAGE}.report",
      f"{PACKAGE}.experiments",
      f"{PACKAGE}.experiments.paper_tables",
  }


def test_one_name_per_experiment():
  """An experiment goes by its task's name: `config.task`, its config, its
  task module, its tests and, where it has its own network, its model (the
  `tokenize` task runs the tokenizer's)."""
  for task in TASKS:
    assert config_lib.load(task).task == task
    assert (ROOT / PACKAGE / "tasks" / f"{task}.py").is_file(), task
    assert (ROOT / "tests" / f"test_{task}.py").is_file(), task
  models = {p.stem for p in (ROOT / PACKAGE / "models").glob("*.py")}
  assert set(TASKS) - models == {"tokenize"}


def test_modules_share_a_name_only_as_layers_of_one_experiment():
  names = collections.Counter(
      m.rsplit(".", 1)[-1] for m in modules() if m != PACKAGE
  )
  shared = {name for name, count in names.items() if count > 1}
  assert shared <= set(TASKS), shared - set(TASKS)


def test_the_check_sees_imports_in_functions_but_not_type_only_ones():
  known = {"asl_vq", "asl_vq.tasks", "asl_vq.tasks.base", "asl_vq.inference"}
  source = textwrap.dedent("""
      from typing import TYPE_CHECKING
      import numpy as np
      from asl_vq import inference
      from asl_vq.inference import Tokenizer
      if TYPE_CHECKING:
        from asl_vq.tasks.base import Task

      def run():
        from asl_vq.tasks import base
        import asl_vq.tasks.base
  """)
  assert imports(source, known) == [
      (4, "asl_vq.inference"),
      (5, "asl_vq.inference"),
      (10, "asl_vq.tasks.base"),
      (11, "asl_vq.tasks.base"),
  ]
