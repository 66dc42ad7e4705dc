"""The README's commands as written: every `python -m asl_vq.X` names a
module that runs, its arguments parse with that module's own flags (a
`--config=` resolves, loads with its `:arg` and takes its overrides), and
what it reads under runs/ or data/ an earlier command wrote. Every command
named in the package's messages and docs runs. Parsing only: seconds."""

import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SEPARATORS = {"&&", "||", ";", "|", ">", ">>", "<"}
# Flags that name what a command writes; a value under runs/ or data/ of any
# other flag is something it reads.
_OUTPUT_FLAGS = {"workdir", "out", "preview"}
_MADE_HERE = ("runs/", "data/")
# `python -m asl_vq...` in prose or code, not `asl_vq.X` placeholders.
_COMMAND = re.compile(r"python -m (asl_vq(?:\.[a-z_]\w*)*)(?!\w|\.\w)")


def readme_commands(text: str) -> list[tuple[str, list[str]]]:
  """Every (module, arguments) of a `python -m asl_vq.X ...` in the README,
  in order: in its bash blocks (lines continued with `\\` joined, comments
  dropped, `&&` chains split) and in its inline code."""
  commands = []
  for block in re.finditer(
      r"```(\w*)\n(.*?)```|`(python -m [^`]+)`", text, re.S
  ):
    language, code, inline = block.groups()
    if inline:
      lines = [inline]
    elif language == "bash":
      lines = code.replace("\\\n", " ").splitlines()
    else:
      continue
    for line in lines:
      words = shlex.split(line, comments=True)
      starts = [
          i
          for i in range(len(words) - 2)
          if words[i : i + 2] == ["python", "-m"]
          and words[i + 2].startswith("asl_vq")
      ]
      for i in starts:
        args = []
        for word in words[i + 3 :]:
          if word in _SEPARATORS:
            break
          args.append(word)
        commands.append((words[i + 2], args))
  return commands


def runnable(module: str) -> bool:
  """Whether `python -m module` finds something to run."""
  try:
    spec = importlib.util.find_spec(module)
  except ModuleNotFoundError:
    return False
  if spec is not None and spec.submodule_search_locations is not None:
    return runnable(module + ".__main__")
  return spec is not None


def _flag_values(args: list[str]) -> list[tuple[str, str]]:
  """(name, value) of each `--name=value` argument."""
  return [
      tuple(a[2:].split("=", 1))
      for a in args
      if a.startswith("--") and "=" in a
  ]


with open(os.path.join(REPO, "README.md"), encoding="utf-8") as _f:
  COMMANDS = readme_commands(_f.read())


def _parse_all(commands: list[tuple[str, list[str]]]) -> list[str | None]:
  """In a fresh interpreter: each command's arguments through its module's
  own flags and parser (`main._parse_flags` resolves `--config=NAME`), as
  `python -m` would; None or the error, per command. Module by module, each
  one's flags deleted after it, since modules share flag names (the flags
  of the libraries it imports stay: the command accepts them too)."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  errors = [None] * len(commands)
  for name in dict.fromkeys(m for m, _ in commands):
    module = importlib.import_module(name)
    if hasattr(module, "__path__"):  # a package: python -m runs __main__.
      module = importlib.import_module(name + ".__main__")
    if hasattr(module, "_define_flags"):  # defined when run as a program.
      module._define_flags()  # pylint: disable=protected-access
    parse = getattr(module, "_parse_flags", flags.FLAGS)
    for i, (m, args) in enumerate(commands):
      if m != name:
        continue
      # ml_collections reads the `--config.*` overrides from sys.argv and
      # defines a flag for each.
      sys.argv = [name, *args]
      try:
        rest = parse(sys.argv)
        if rest[1:]:
          errors[i] = f"unexpected arguments: {rest[1:]}"
      except (flags.Error, SystemExit) as e:
        errors[i] = str(e)
      flags.FLAGS.unparse_flags()
      for flag in [f for f in flags.FLAGS if f.startswith("config.")]:
        delattr(flags.FLAGS, flag)
    for flag in list(flags.FLAGS):
      if flags.FLAGS.find_module_defining_flag(flag, "").startswith("asl_vq"):
        delattr(flags.FLAGS, flag)
  return errors


@pytest.fixture(scope="module")
def parse_errors():
  """`_parse_all` over the README's commands, in one subprocess."""
  proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__)],
      cwd=REPO,
      input=json.dumps(COMMANDS),
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.splitlines()[-1])


def test_readme_has_the_commands():
  modules = {m for m, _ in COMMANDS}
  assert {
      "asl_vq.main",
      "asl_vq.data.synthetic",
      "asl_vq.analysis",
      "asl_vq.generate",
      "asl_vq.report",
      "asl_vq.bench",
  } <= modules
  assert len(COMMANDS) >= 25


@pytest.mark.parametrize(
    "i",
    range(len(COMMANDS)),
    ids=[f"{i}-{m.split('.')[-1]}" for i, (m, _) in enumerate(COMMANDS)],
)
def test_readme_command_parses(parse_errors, i):
  module, args = COMMANDS[i]
  assert runnable(module), f"python -m {module}: no such module"
  assert (
      parse_errors[i] is None
  ), f"python -m {module} {shlex.join(args)}: {parse_errors[i]}"


def test_readme_commands_run_in_order():
  """What a command reads under runs/ or data/ (a run, tokens, a dataset, a
  file) is what an earlier command wrote, or lies below it; a training
  workdir used again is the same run resumed (the same arguments), since
  another config is refused there."""
  written, problems, runs = [], [], {}
  for module, args in COMMANDS:
    command = f"python -m {module} {shlex.join(args)}"
    values = _flag_values(args)
    if module == "asl_vq.main":
      first = runs.setdefault(dict(values)["workdir"], args)
      if sorted(first) != sorted(args):
        problems.append(f"{command}: the workdir of {shlex.join(first)}")
    for flag, value in values:
      if flag not in _OUTPUT_FLAGS:
        problems += [
            f"{command}: nothing before writes {p}"
            for p in value.split(",")
            if p.startswith(_MADE_HERE)
            and not any(p == w or p.startswith(w + "/") for w in written)
        ]
    written += [v for f, v in values if f in _OUTPUT_FLAGS]
  assert not problems, "\n".join(problems)


def test_commands_named_in_the_package_run():
  """Error hints, docstrings and docs name real modules (no
  `python -m asl_vq.tokenize`)."""
  bad = []
  for folder, suffixes in (
      ("asl_vq", (".py",)),
      ("configs", (".py",)),
      ("docs", (".md",)),
      ("launch", ("",)),
  ):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
      for name in files:
        if not name.endswith(suffixes) or name.endswith(".pyc"):
          continue
        path = os.path.join(root, name)
        with open(path, encoding="utf-8") as f:
          text = f.read()
        bad += [
            f"{os.path.relpath(path, REPO)}: python -m {m}"
            for m in _COMMAND.findall(text)
            if not runnable(m)
        ]
  assert not bad, "\n".join(bad)


def test_command_pattern():
  assert readme_commands(
      "```bash\n# python -m asl_vq.no\npython -m venv v && python -m "
      "asl_vq.main --a=1 \\\n  --b='x y'  # c\n```\n"
      "Run `python -m asl_vq.report\n--workdir=r`."
  ) == [
      ("asl_vq.main", ["--a=1", "--b=x y"]),
      ("asl_vq.report", ["--workdir=r"]),
  ]
  assert _COMMAND.findall(
      "(`python -m asl_vq.X`) python -m asl_vq.report. "
      "python -m asl_vq.data.inspect"
  ) == ["asl_vq.report", "asl_vq.data.inspect"]
  assert runnable("asl_vq.analysis") and not runnable("asl_vq.tokenize")
  assert not runnable("asl_vq")


def test_the_design_module_map_names_every_module_and_no_other():
  """docs/design.md's module map against the tree: every module of the
  package is named there (as `module.py` or `folder/module.py`), and
  every name there is a module that exists."""
  with open(os.path.join(REPO, "docs", "design.md"), encoding="utf-8") as f:
    text = f.read()
  section = text[text.index("## 3. Module map") : text.index("## 4.")]
  named = set(re.findall(r"`([\w/]+\.py)`", section))
  package = os.path.join(REPO, "asl_vq")
  modules = {
      os.path.relpath(os.path.join(root, name), package)
      for root, _, names in os.walk(package)
      for name in names
      if name.endswith(".py") and name not in ("__init__.py", "__main__.py")
  }
  assert not modules - named, f"not in the module map: {modules - named}"
  assert not named - modules, f"no such module: {named - modules}"


if __name__ == "__main__":
  print(json.dumps(_parse_all([tuple(c) for c in json.load(sys.stdin)])))
