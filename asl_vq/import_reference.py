"""Imports the reference's PyTorch tokenizer weights into a tokenizer workdir.

  python -m asl_vq.import_reference --checkpoint=model.pt --workdir=runs/ref

The workdir reproduces the reference as its `main.py` trains it and its
`predict.py` tokenizes with it: after `torch.nn.SyncBatchNorm.
convert_sync_batchnorm`, whose rebuilt BatchNorms drop the SiLU of timm's
two `BatchNormAct2d` (`model.conv_bn_activation="none"`, the paper preset's
default). `--as_written` keeps those SiLUs: the reference's modules as
written, run without the conversion.

The reference (MichiganNLP/discrete_asl) saves its tokenizer as a PyTorch
`state_dict`: 582 entries for the paper's sizes, under names such as
`encoder.blocks.0.mhsa.attention.query_proj.weight`. `load_state_dict` reads
it from a `.pt` file (needs torch) or an `.npz` of the same entries (keys
bare or prefixed `weights/`, as the reference fixture of tests/test_reference.py);
`to_variables` maps every entry to this project's TokenizerModel variables,
refusing any missing, extra or mis-shaped entry with one line
(`ReferenceMismatchError`); `main` writes a workdir that
`asl_vq.Tokenizer.load` and `inference.restore_variables` read.

Layouts (PyTorch -> Flax): Linear [out, in] -> Dense kernel W.T; Conv1d k=1
[out, in, 1] -> Dense W[:, :, 0].T; depthwise Conv1d [d, 1, k] ->
DepthwiseConv1D [k, 1, d]; Conv2d [out, in, kh, kw] -> [kh, kw, in, out];
ConvTranspose2d [in, out, kh, kw] -> the output head's kernel
[kh, kw, in, out] flipped in both spatial axes (`landmark_conv_transpose`);
attention projections -> DenseGeneral [d, heads, head_dim] (out:
[heads, head_dim, d]); codebooks `embed` / `cluster_size` / `embed_avg` of
layer q -> vq `codebook` / `cluster_size` / `embed_sum` [q]; `inited` ->
`initialized`. `num_batches_tracked` is ignored.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
from absl import app
from absl import flags
from etils import epath

from asl_vq import cli
from asl_vq import checkpointing
from asl_vq import config_lib
from asl_vq import errors
from asl_vq import fileio
from asl_vq import inference
from asl_vq import optimizers
from asl_vq import workdir as workdir_lib
from asl_vq.models import tokenizer as tokenizer_lib

_IGNORED = "num_batches_tracked"
_NPZ_PREFIX = "weights/"


class ReferenceMismatchError(errors.UserError):
  """The state dict does not hold exactly the reference tokenizer's entries."""


class WorkdirInUse(errors.UserError):
  """The workdir already holds weights; an import does not mix with them."""


# What an import writes, and what was derived from a workdir's weights or
# its training: all removed together by `overwrite` (command.txt stays).
_WEIGHTS_AND_DERIVED = (
    "best",
    "checkpoints",
    "config.json",
    "inputs.json",
    "test_metrics.json",
    "metrics.jsonl",
    "tensorboard",
    "learning_curves.png",
)


def _held_weights(workdir: str) -> list[str]:
  """The checkpoint folders of `workdir` that hold a step."""
  return [
      sub
      for sub in ("best", "checkpoints")
      if any(p.name.isdigit() for p in (epath.Path(workdir) / sub).glob("*"))
  ]


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A reference state_dict as numpy arrays, by PyTorch name.

  `.pt` / `.pth` (torch.load, torch imported only then; a checkpoint dict
  holding the weights under 'state_dict' or 'model' is unwrapped) or `.npz`
  (keys bare or prefixed 'weights/'; other keys of a prefixed file, such as
  the fixture's inputs and outputs, are skipped).
  """
  path = os.fspath(path)
  if path.endswith(".npz"):
    try:
      with np.load(path, allow_pickle=False) as f:
        names = list(f.files)
        if any(k.startswith(_NPZ_PREFIX) for k in names):
          return {
              k[len(_NPZ_PREFIX) :]: f[k]
              for k in names
              if k.startswith(_NPZ_PREFIX)
          }
        return {k: f[k] for k in names}
    except (ValueError, EOFError) as e:  # not an npz; pickled objects.
      raise ReferenceMismatchError(
          f"not a readable .npz of arrays ({e})"
      ) from None
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.MissingExtra(
        f"{path}: reading a PyTorch checkpoint needs "
        "torch (pip install torch), or give the "
        "state_dict as an .npz"
    ) from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("state_dict", "model"):
    if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
      state = state[key]
  return {k: v.detach().cpu().numpy() for k, v in state.items()}


# Each kind: (PyTorch shape from the Flax shape, PyTorch array -> Flax array).
_Kind = tuple[
    Callable[[tuple[int, ...]], tuple[int, ...]],
    Callable[[np.ndarray, tuple[int, ...]], np.ndarray],
]
_KINDS: dict[str, _Kind] = {
    "same": (lambda s: s, lambda w, s: w),
    "affine": (lambda s: (1, 1) + s, lambda w, s: w.reshape(s)),
    "dense": (lambda s: s[::-1], lambda w, s: w.T),
    "heads_in": (lambda s: (s[1] * s[2], s[0]), lambda w, s: w.T.reshape(s)),
    "heads_bias": (lambda s: (s[0] * s[1],), lambda w, s: w.reshape(s)),
    "heads_out": (lambda s: (s[2], s[0] * s[1]), lambda w, s: w.T.reshape(s)),
    "pointwise": (lambda s: (s[1], s[0], 1), lambda w, s: w[:, :, 0].T),
    "depthwise": (
        lambda s: (s[2], s[1], s[0]),
        lambda w, s: w.transpose(2, 1, 0),
    ),
    "conv2d": (
        lambda s: (s[3], s[2], s[0], s[1]),
        lambda w, s: w.transpose(2, 3, 1, 0),
    ),
    "conv2d_transpose": (
        lambda s: (s[2], s[3], s[0], s[1]),
        lambda w, s: w.transpose(2, 3, 0, 1)[::-1, ::-1],
    ),
}


def _batch_norm(torch_name, path):
  return {
      f"{torch_name}.weight": (("params",) + path + ("scale",), "same"),
      f"{torch_name}.bias": (("params",) + path + ("bias",), "same"),
      f"{torch_name}.running_mean": (
          ("batch_stats",) + path + ("mean",),
          "same",
      ),
      f"{torch_name}.running_var": (("batch_stats",) + path + ("var",), "same"),
  }


def _linear(torch_name, path, kind="dense", bias=True):
  out = {f"{torch_name}.weight": (("params",) + path + ("kernel",), kind)}
  if bias:
    out[f"{torch_name}.bias"] = (
        ("params",) + path + ("bias",),
        "heads_bias" if kind == "heads_in" else "same",
    )
  return out


def _block(prefix, path):
  """A Squeezeformer block: reference names -> (variable path, kind)."""
  entries = {}
  modules = (("mhsa", "0"), ("ff_mhsa", "1"), ("conv", "2"), ("ff_conv", "3"))
  for name, i in modules:
    scale = path + (f"scale_{i}",)
    entries[f"{prefix}.scale_{name}"] = (
        ("params",) + scale + ("scale",),
        "affine",
    )
    entries[f"{prefix}.bias_{name}"] = (
        ("params",) + scale + ("bias",),
        "affine",
    )
    for leaf, flax_leaf in (("weight", "scale"), ("bias", "bias")):
      entries[f"{prefix}.ln_{name}.{leaf}"] = (
          ("params",) + path + (f"ln_{i}", flax_leaf),
          "same",
      )
  attention = f"{prefix}.mhsa.attention"
  for proj in ("query", "key", "value"):
    entries.update(
        _linear(f"{attention}.{proj}_proj", path + ("mhsa", proj), "heads_in")
    )
  entries.update(
      _linear(
          f"{attention}.pos_proj",
          path + ("mhsa", "pos"),
          "heads_in",
          bias=False,
      )
  )
  entries.update(
      _linear(f"{attention}.out_proj", path + ("mhsa", "out"), "heads_out")
  )
  for b in ("u_bias", "v_bias"):
    entries[f"{attention}.{b}"] = (("params",) + path + ("mhsa", b), "same")
  for name, ff in (("ff_mhsa", "ff1"), ("ff_conv", "ff2")):
    entries.update(_linear(f"{prefix}.{name}.ffn1", path + (ff, "in")))
    entries.update(_linear(f"{prefix}.{name}.ffn2", path + (ff, "out")))
  conv = path + ("conv",)
  entries.update(
      _linear(
          f"{prefix}.conv.pw_conv_1.conv", conv + ("pointwise_in",), "pointwise"
      )
  )
  entries.update(
      _linear(
          f"{prefix}.conv.pw_conv_2.conv",
          conv + ("pointwise_out",),
          "pointwise",
      )
  )
  entries[f"{prefix}.conv.dw_conv.conv.weight"] = (
      ("params",) + conv + ("depthwise", "kernel"),
      "depthwise",
  )
  entries.update(_batch_norm(f"{prefix}.conv.bn", conv + ("bn",)))
  return entries


def parameter_map(
    config: tokenizer_lib.TokenizerConfig,
) -> dict[str, tuple[tuple[str, ...], str]]:
  """Every reference parameter / BN entry -> (Flax variable path, kind).

  The codebook entries (`quantizer.vq.layers.{q}._codebook.*`) are not in it:
  `to_variables` stacks them over q.
  """
  entries = {}
  fe = "encoder.feature_extractor"
  entries[f"{fe}.conv_stem.weight"] = (
      ("params", "features", "conv", "kernel"),
      "conv2d",
  )
  entries.update(_batch_norm(f"{fe}.bn_conv", ("features", "conv_bn")))
  entries.update(_linear(f"{fe}.stem_linear", ("features", "proj"), bias=False))
  entries.update(_batch_norm(f"{fe}.stem_bn", ("features", "proj_bn")))
  for stack in ("encoder", "decoder"):
    for i in range(config.num_blocks):
      entries.update(_block(f"{stack}.blocks.{i}", (stack, f"block_{i}")))
  head = "decoder.transposed_feature_extractor"
  entries.update(_batch_norm(f"{head}.stem_bn", ("output_head", "bn")))
  entries.update(
      _linear(f"{head}.stem_linear1", ("output_head", "proj"), bias=False)
  )
  entries[f"{head}.conv_stem.weight"] = (
      ("params", "output_head", "conv_t", "kernel"),
      "conv2d_transpose",
  )
  entries.update(_batch_norm(f"{head}.bn_conv", ("output_head", "conv_bn")))
  entries.update(
      _linear(f"{head}.final_linear", ("output_head", "out"), bias=False)
  )
  if config.use_ctc:
    entries.update(_linear("lm_head", ("ctc_head",), bias=False))
  return entries


# Reference codebook buffers -> the RVQ's 'vq' variables (stacked over q).
_CODEBOOK = {
    "embed": "codebook",
    "cluster_size": "cluster_size",
    "embed_avg": "embed_sum",
    "inited": "initialized",
}


def _codebook_name(q: int, leaf: str) -> str:
  return f"quantizer.vq.layers.{q}._codebook.{leaf}"


def _abstract_variables(config: tokenizer_lib.TokenizerConfig):
  return jax.eval_shape(
      functools.partial(
          tokenizer_lib.init_variables, tokenizer_lib.TokenizerModel(config), 2
      ),
      jax.random.key(0),
  )


def _check_names(state_dict, expected) -> None:
  names = {k for k in state_dict if not k.endswith("." + _IGNORED)}
  missing = sorted(set(expected) - names)
  extra = sorted(names - set(expected))
  if missing:
    raise ReferenceMismatchError(
        f"entry {missing[0]!r} is missing from the state dict ({len(missing)}"
        " missing in all): pass the reference tokenizer's complete "
        "state_dict, built with the same sizes (and CTC head) as the config"
    )
  if extra:
    raise ReferenceMismatchError(
        f"unexpected entry {extra[0]!r} in the state dict ({len(extra)} extra "
        "in all): pass the tokenizer's state_dict only, built with the same "
        "sizes as the config (e.g. its number of blocks, CTC head or not)"
    )


def _shape_error(name, got, want) -> ReferenceMismatchError:
  return ReferenceMismatchError(
      f"entry {name!r} has shape {list(got)}, expected {list(want)} "
      "(PyTorch layout): the checkpoint's sizes differ from the config's; "
      "build the config with the checkpoint's sizes"
  )


def to_variables(
    state_dict: Mapping[str, Any], config: tokenizer_lib.TokenizerConfig
) -> dict[str, Any]:
  """Reference state_dict -> {'params', 'batch_stats', 'vq'} of TokenizerModel.

  state_dict: PyTorch name -> array (any float dtype; cast to float32).
  Every entry of the reference model must be present with its PyTorch shape,
  and nothing else (`num_batches_tracked` aside), else ReferenceMismatchError
  names the first offending entry. The result holds numpy float32 arrays
  (`initialized` a bool scalar: every layer's `inited` flag set).
  """
  entries = parameter_map(config)
  codebook_names = [
      _codebook_name(q, leaf)
      for q in range(config.num_quantizers)
      for leaf in _CODEBOOK
  ]
  _check_names(state_dict, list(entries) + codebook_names)
  abstract = _abstract_variables(config)
  variables = jax.tree.map(lambda _: None, abstract)
  for name, (path, kind) in entries.items():
    target = abstract
    for key in path:
      target = target[key]
    torch_shape, convert = _KINDS[kind]
    value = np.asarray(state_dict[name], np.float32)
    if value.shape != torch_shape(target.shape):
      raise _shape_error(name, value.shape, torch_shape(target.shape))
    node = variables
    for key in path[:-1]:
      node = node[key]
    node[path[-1]] = np.ascontiguousarray(convert(value, target.shape))
  vq = abstract["vq"]["rvq"]
  for leaf, flax_leaf in _CODEBOOK.items():
    want = vq[flax_leaf].shape[1:] if leaf != "inited" else (1,)
    layers = []
    for q in range(config.num_quantizers):
      value = np.asarray(state_dict[_codebook_name(q, leaf)], np.float32)
      if value.shape != want:
        raise _shape_error(_codebook_name(q, leaf), value.shape, want)
      layers.append(value)
    variables["vq"]["rvq"][flax_leaf] = (
        np.array(all(v[0] > 0 for v in layers))
        if leaf == "inited"
        else np.stack(layers)
    )
  return variables


def paper_config(as_written: bool = False) -> ml_collections.ConfigDict:
  """The tokenizer config's paper preset (the reference's sizes and settings, as
  trained); `as_written`: with the SiLU after the two conv BNs."""
  config = config_lib.load("tokenizer", "paper")
  if as_written:
    config.model.conv_bn_activation = "silu"
  return config


def write_workdir(
    state_dict: Mapping[str, Any],
    workdir: str,
    config: ml_collections.ConfigDict | None = None,
    overwrite: bool = False,
) -> str:
  """Writes config.json and a 'best' checkpoint (step 0) holding the weights.

  A workdir that already holds a checkpoint (an earlier import, a training
  run) is refused: Orbax would keep its step 0 and the old weights with it
  (orbax #2657). `overwrite` first removes its checkpoints, config, test
  metrics and training curves (`_WEIGHTS_AND_DERIVED`), nothing else.

  The train state is `train.init_state`'s with params = the imported
  weights and the schedule-free state at the same point (z = params, b1 = 1):
  `optimizers.eval_params(state)` then returns the imported weights bit for bit
  (with the optimizer's b1 = 0.9, (y - 0.1 z) / 0.9 moves 1 value in 4 by a
  float32 ulp). The checkpoint's validation loss is recorded as +inf, so a
  training run in the same workdir replaces it with its first evaluation.
  Returns the workdir's absolute path.

  Raises:
    ReferenceMismatchError: `state_dict` is not the reference tokenizer's.
    WorkdirInUse: `workdir` holds a checkpoint and `overwrite` is False.
  """
  config = paper_config() if config is None else config
  model_config = tokenizer_lib.TokenizerConfig.from_config(config)
  variables = to_variables(state_dict, model_config)
  abstract = inference.abstract_train_state(
      config,
      functools.partial(
          tokenizer_lib.init_variables,
          tokenizer_lib.TokenizerModel(model_config),
          config.data.max_len,
      ),
  )
  params = jax.tree.map(jnp.asarray, variables["params"])
  tx = optimizers.make_optimizer(config, config.train.batch_size)
  clip_state, schedule_free = tx.init(params)
  schedule_free = schedule_free._replace(
      z=params, b1=jnp.ones_like(schedule_free.b1)
  )
  state = abstract.replace(
      step=jnp.zeros((), jnp.int32),
      params=params,
      collections={
          k: jax.tree.map(jnp.asarray, variables[k])
          for k in ("batch_stats", "vq")
      },
      opt_state=(clip_state, schedule_free),
      nonfinite_step=jnp.full((), -1, jnp.int32),
  )
  held = _held_weights(fileio.abspath(workdir))
  if held and not overwrite:
    raise WorkdirInUse(
        f"{workdir}: already holds a checkpoint ({', '.join(held)}/); give "
        "--overwrite to replace its weights, or another --workdir"
    )
  if held and jax.process_index() == 0:
    for name in _WEIGHTS_AND_DERIVED:
      path = epath.Path(fileio.abspath(workdir)) / name
      if path.is_dir():
        path.rmtree()
      elif path.exists():
        path.unlink()
  if held and jax.process_count() > 1:  # none reads the old files after.
    multihost_utils.sync_global_devices("asl_vq: old weights removed")
  workdir = workdir_lib.write_config(config, workdir)
  ckpts = checkpointing.Checkpoints(workdir)
  ckpts.save_best(0, state, {ckpts.best_metric: float("inf")})
  ckpts.close()
  return workdir


_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "the reference tokenizer's state_dict: .pt (needs "
    "torch) or .npz (keys bare or prefixed weights/)",
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "the tokenizer workdir to write"
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "replace the checkpoints, config, test metrics and "
    "training curves of a workdir that already holds a checkpoint "
    "(otherwise refused)",
)
_AS_WRITTEN = flags.DEFINE_bool(
    "as_written",
    False,
    "the reference's modules as written, with the SiLU "
    "after its two BatchNormAct2d; by default as main.py trains and "
    "predict.py tokenizes (converted to SyncBatchNorm: no SiLU)",
)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _CHECKPOINT.value or not _WORKDIR.value:
    raise app.UsageError("--checkpoint and --workdir are required")
  try:
    workdir = write_workdir(
        load_state_dict(_CHECKPOINT.value),
        _WORKDIR.value,
        paper_config(_AS_WRITTEN.value),
        overwrite=_OVERWRITE.value,
    )
  except ReferenceMismatchError as e:
    raise ReferenceMismatchError(f"{_CHECKPOINT.value}: {e}") from e
  print(f"wrote {workdir}: asl_vq.Tokenizer.load({workdir!r})")


if __name__ == "__main__":
  cli.run(main)
