"""The run directory's contract: what a workdir holds about its run, and
when the same command may continue it.

`<workdir>/config.json` (the run's config), `inputs.json` (the content
origin of each split it read: `pipeline.Source.origin`) and `command.txt`
(each start's command, `provenance`). A run continues only under the same
config but for `RESUMABLE_FIELDS`, and on the same inputs (`check_resume`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from etils import epath
from flax import traverse_util
import jax
import ml_collections

from asl_vq import config_lib
from asl_vq import errors
from asl_vq import fileio
from asl_vq import provenance

# Fields a resumed run may change: how long it trains, how it logs, saves
# and evaluates, and the compute dtype (the saved state is float32 either
# way). Any other change would reinterpret the saved state or data position
# (batch size, model, data, split, optimizer...).
RESUMABLE_FIELDS = (
    "train.num_epochs",
    "train.log_every_steps",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.async_checkpoints",
    "train.eval_every_epochs",
    "train.max_eval_batches",
    "model.dtype",
)


def config_changes(
    saved: dict[str, Any], config: ml_collections.ConfigDict
) -> dict[str, tuple[Any, Any]]:
  """{dotted field: (saved value, new value)} of the fields that differ."""
  old = traverse_util.flatten_dict(saved, sep=".")
  new = traverse_util.flatten_dict(
      json.loads(config.to_json_best_effort()), sep="."
  )
  return {
      k: (old.get(k), new.get(k))
      for k in sorted(set(old) | set(new))
      if old.get(k) != new.get(k)
  }


# Marks an inputs.json whose origins are content digests (data files by
# sha256, tokenizers by their weights); one without it came before.
KEYED_ON = {"keyed_on": "content"}


class StaleInputs(errors.UserError):
  """A workdir's run was made from other inputs than it is given now."""


def check_config(
    config: ml_collections.ConfigDict, workdir: str
) -> dict[str, tuple[Any, Any]] | None:
  """The config half of `check_resume`, cheap enough to run before any data
  is made (`asl_vq.main` does): None when `workdir` holds no run (no
  checkpoints or no config.json), else the changes to `RESUMABLE_FIELDS`.

  Raises:
    ValueError: other fields differ, naming them and the way out.
  """
  if not (
      (epath.Path(workdir) / "checkpoints").is_dir()
      and (epath.Path(workdir) / "config.json").exists()
  ):
    return None
  changes = config_changes(
      config_lib.saved_config(
          json.loads((epath.Path(workdir) / "config.json").read_text())
      ),
      config,
  )
  refused = {k: v for k, v in changes.items() if k not in RESUMABLE_FIELDS}
  if refused:
    raise errors.UserError(
        f"{workdir} holds a run of another configuration ({_show(refused)}); "
        "run the same config to resume it, or give a new --workdir"
    )
  return changes


def _show(changes: dict[str, tuple[Any, Any]]) -> str:
  return ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())


def check_resume(
    config: ml_collections.ConfigDict,
    workdir: str,
    inputs: dict[str, Any] | None = None,
) -> None:
  """Before a run continues the checkpoints in `workdir`: the saved config
  must equal `config` but for `RESUMABLE_FIELDS` (those changes are said),
  and the saved `inputs.json` (the origin of each split, see
  `pipeline.Source.origin`) must equal `inputs`.

  Raises:
    ValueError: other fields differ, naming them and the way out.
    StaleInputs: the inputs differ (e.g. tokens remade from a later
      tokenizer step), naming what changed.
  """
  changes = check_config(config, workdir)
  if changes is None:
    return
  saved = fileio.read_json(os.path.join(workdir, "inputs.json"))
  if inputs is not None and saved is not None:
    flat = lambda d: traverse_util.flatten_dict(d, sep=".")
    legacy = saved.pop("keyed_on", None) != KEYED_ON["keyed_on"]
    old, new = flat(saved), flat(json.loads(json.dumps(inputs)))
    stale = {
        k: (old.get(k), new.get(k))
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    }
    if (
        stale
        and legacy
        and set(saved) == set(inputs)
        and not any(k.endswith(".sequences") for k in stale)
    ):
      # Written before inputs were keyed on content (names and times, a
      # tokenizer's path and step): nothing to compare those with; the
      # splits' sequences are the same, so the run goes on, keyed anew.
      if jax.process_index() == 0:
        print(
            f"{workdir}: inputs.json from an earlier version (inputs by "
            "name and time); the same sequences: resuming, and keying its "
            "inputs on content from now on",
            flush=True,
        )
      stale = {}
    if stale:
      raise StaleInputs(
          f"{workdir} was trained on other inputs ({_show(stale)}); its "
          "results would not be this data's: give a new --workdir, or "
          "delete this one to train again"
      )
  if changes and jax.process_index() == 0:
    print(f"resuming with {_show(changes)}", flush=True)


def write_config(
    config: ml_collections.ConfigDict,
    workdir: str,
    inputs: dict[str, Any] | None = None,
) -> str:
  """`<workdir>/config.json` and `inputs.json` (after `check_resume`) and
  the command; `workdir` is local or an object store URL (`gs://b/run`)."""
  workdir = fileio.abspath(workdir)
  check_resume(config, workdir, inputs)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    (epath.Path(workdir) / "config.json").write_text(
        config.to_json_best_effort(indent=2)
    )
    if inputs is not None:
      fileio.write_json(
          os.path.join(workdir, "inputs.json"), dict(inputs, **KEYED_ON)
      )
  provenance.record_command(workdir)
  return workdir
