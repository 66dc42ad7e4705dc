"""`Tokenizer`: hand landmarks <-> discrete codes with a trained tokenizer run.

  tok = asl_vq.Tokenizer.load("runs/rvq_ctc")
  codes = tok.encode(hands)           # float32 [T, 42, 2] -> int32 [T', 4]
  text = tok.to_text(codes)           # "<a98><b624><c235><d17> <a3>..."
  recon = tok.decode(tok.from_text(text), n_q=2)   # float32 [T', 42, 2]

Sequences are padded into the run's few fixed bucket lengths and a fixed
batch size, so the jitted model compiles once per bucket, not per length.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import string
from typing import Any, Callable, Sequence

from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from asl_vq import checkpointing
from asl_vq import config_lib
from asl_vq import errors
from asl_vq import fileio
from asl_vq import losses
from asl_vq import optimizers
from asl_vq import sharding
from asl_vq import train
from asl_vq import vocab
from asl_vq.data import layout
from asl_vq.data import pipeline
from asl_vq.data import tokens as tokens_lib
from asl_vq.models import tokenizer as tokenizer_lib

TEXT_FORMAT = (
    "one group per frame, frames separated by one space; a group "
    "is <xN> per quantizer in order, x = a, b, c, ... (quantizer "
    "0, 1, 2, ...) and N the decimal code, e.g. "
    "'<a98><b624><c235><d17> <a3><b7><c0><d511>'"
)
_FRAME = re.compile(r"(?:<[a-z]\d+>)+")
_GROUP = re.compile(r"<([a-z])(\d+)>")


def read_config(
    path: str, *, kind: str, encoder: str | None = None
) -> ml_collections.ConfigDict:
  """A training workdir's config (its config.json, with the fields added
  since at the values the run had: `config_lib.saved_config`). `path` is
  local or an object store URL (`gs://bucket/run`); `kind` is the run's
  `config.task` it must be ("tokenizer", "translate", "lm"), `encoder` the
  model's inputs where it matters ("continuous").

  Raises:
    FileNotFoundError: `path` holds no config.json.
    errors.UserError: a run of another kind (or encoder), named.
  """
  path = fileio.abspath(path)
  config_path = epath.Path(path) / "config.json"
  if not config_path.exists():
    raise FileNotFoundError(
        f"{path}: no config.json; is it a training " "workdir?"
    )
  config = ml_collections.ConfigDict(
      config_lib.saved_config(json.loads(config_path.read_text()))
  )
  found = (
      config.get("task"),
      config.model.get("encoder") if encoder is not None else None,
  )
  if found != (kind, encoder):
    given = f"{found[1]} {found[0]}" if encoder else found[0]
    wanted = f"{encoder} {kind}" if encoder else kind
    raise errors.UserError(
        f"{path}: a {given} run, where a {wanted} run is needed (its "
        f"config: task={found[0]!r}"
        + (f", model.encoder={found[1]!r}" if encoder else "")
        + ")"
    )
  return config


def abstract_train_state(
    config: ml_collections.ConfigDict,
    init_variables: Callable[[jax.Array], dict[str, Any]],
    device: jax.sharding.Sharding | None = None,
) -> train.TrainState:
  """The shapes and dtypes (`jax.ShapeDtypeStruct`, on `device` if given)
  of the train state a run of `config` saves: `train.init_state`'s, with the
  model's variables from `init_variables(rng)` (the model's own
  `init_variables`, as the run's task calls it) and the run's optimizer.
  Nothing is computed."""
  # The optimizer's state has the same structure for any train size.
  tx = optimizers.make_optimizer(config, config.train.batch_size)
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
      jax.eval_shape(
          functools.partial(train.init_state, init_variables, tx),
          jax.random.PRNGKey(0),
      ),
  )


def restore_variables(
    path: str,
    config: ml_collections.ConfigDict,
    init_variables: Callable[[jax.Array], dict[str, Any]],
    which: str = "best",
) -> tuple[dict[str, Any], int]:
  """The `which` checkpoint ("best" or "latest") of the workdir `path` of a
  run of `config` (`read_config`'s): its schedule-free evaluation variables
  (as validation uses them), on one local device, and its step.
  `init_variables`: see `abstract_train_state`.

  Raises:
    FileNotFoundError: no such checkpoint.
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  state = checkpointing.restore(
      fileio.abspath(path),
      which,
      abstract_train_state(config, init_variables, device),
  )
  return state.variables(optimizers.eval_params(state)), int(state.step)


# The fields `fingerprinted_fields` gained after fingerprints were first
# taken: (path in its fields) -> the config field (a key of
# `config_lib.ADDED_FIELDS`, which holds the value tokenizers had before it
# existed). `tests/test_inference.py` fails on a field added without one.
FINGERPRINTED_SINCE = {
    ("model", "attention_window"): ("tokenizer", "model", "attention_window"),
    ("normalization",): ("data", "normalization"),
}


def fingerprinted_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config fields that decide a tokenizer's codes and so its
  `fingerprint`: the model config and the preprocessing's."""
  return dict(
      model=config.model.to_dict(),
      max_len=int(config.data.max_len),
      resample=str(config.data.resample),
      normalization=str(config.data.normalization),
  )


def fingerprint(
    config: ml_collections.ConfigDict, variables: dict[str, Any]
) -> str:
  """A tokenizer's content digest (16 hex digits): every variable (weights,
  BatchNorm statistics, codebooks: names, dtypes, shapes, bytes) and the
  config fields that decide its codes (`fingerprinted_fields`). Equal for a
  copy of a run elsewhere; different after any further training step.

  Fields added since fingerprints were first taken (`FINGERPRINTED_SINCE`)
  count only when they differ from what a tokenizer made before them had,
  so that an unchanged tokenizer keeps its fingerprint (and its tokens,
  saved copies and downstream runs stay valid)."""
  fields = fingerprinted_fields(config)
  for (section, *field), added in FINGERPRINTED_SINCE.items():
    where = fields[section] if field else fields
    key = field[0] if field else section
    if where.get(key) == config_lib.ADDED_FIELDS[added]:
      del where[key]
  h = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    leaf = np.ascontiguousarray(jax.device_get(leaf))
    h.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape}".encode())
    h.update(leaf.tobytes())
  return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class FrameCodes:
  """A recording's codes, one group per input frame with a hand
  (`Tokenizer.encode_frames`), and what it takes to put decoded frames back
  into the picture (`Tokenizer.to_image`)."""

  codes: np.ndarray  # int32 [N, Q]
  frames: np.ndarray  # int64 [N]: the input frame each code group is of.
  missing: np.ndarray  # int64 [T - N]: input frames with no hand (no code).
  num_frames: int  # T, the input's frames.
  fps: float | None  # frames per second of the input, where known.
  mean: np.ndarray  # float32 [N, 2, 2]: per code group and hand (left,
  std: np.ndarray  # right), the x / y mean and std it was normalised
  # with (`pipeline.statistics`: its window's, or the
  # hand's own).
  seen: np.ndarray  # bool [N, 2]: the left / right hand was detected.

  @property
  def timestamps(self) -> np.ndarray | None:
    """float64 [N] seconds of each code group's frame (None without fps)."""
    return None if not self.fps else self.frames / self.fps


def window_starts(length: int, window: int, overlap: int) -> list[int]:
  """Starts of the windows of `window` frames, `overlap` shared between
  neighbours, that cover `length` frames (the last one ends at the end).

  Raises:
    errors.UserError: `window` < 1 or `overlap` not in [0, window).
  """
  if window < 1 or not 0 <= overlap < window:
    raise errors.UserError(
        f"window={window}, overlap={overlap}: need "
        "window >= 1 and 0 <= overlap < window"
    )
  if length <= window:
    return [0]
  stride = window - overlap
  starts = list(range(0, length - window, stride))
  return starts + [length - window]


def central_window(
    length: int, starts: Sequence[int], window: int
) -> np.ndarray:
  """int [length]: per frame, the index of the window in which it is most
  central (furthest from the window's ends); ties to the earlier window."""
  frame = np.arange(length)[:, None]
  start = np.asarray(starts)[None, :]
  inside = (frame >= start) & (frame < start + window)
  margin = np.minimum(frame - start, start + window - 1 - frame)
  return np.argmax(np.where(inside, margin, -1), axis=1)


PRETRAINED_WEIGHTS = "model.safetensors"


def _safetensors():
  try:
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.MissingExtra(
        "saving and loading tokenizers in the Hub's "
        "layout needs safetensors: pip install -e "
        "'.[lm]'"
    ) from None
  return safetensors.numpy


def codes_text(codes: np.ndarray, separator: str = " ") -> str:
  """Codes int [T, k] -> `TEXT_FORMAT` (`Tokenizer.to_text`, which checks
  them first), frames joined by `separator`."""
  letters = string.ascii_lowercase
  return separator.join(
      "".join(f"<{letters[q]}{int(c)}>" for q, c in enumerate(frame))
      for frame in np.asarray(codes)
  )


def _stitch(
    pieces: Sequence[np.ndarray],
    length: int,
    starts: Sequence[int],
    window: int,
) -> np.ndarray:
  """Per-window results [len(piece), ...] of a sequence cut at `starts` ->
  [length, ...], each frame from the window where it is most central."""
  if not length:
    return pieces[0][:0]
  owner = central_window(length, starts, window)
  local = np.arange(length) - np.asarray(starts)[owner]
  return np.stack([pieces[w][i] for w, i in zip(owner, local)])


def run_in_buckets(
    fn: Callable[[np.ndarray, np.ndarray], Any],
    items: Sequence[np.ndarray],
    feature_shape: Sequence[int],
    dtype,
    *,
    buckets: Sequence[int],
    batch_size: int,
    per_frame: bool = True,
    progress: Callable[[int], Any] | None = None,
) -> list[np.ndarray]:
  """fn(batch [batch_size, L, *feature_shape] of `dtype`, mask bool
  [batch_size, L]) over `items` (arrays [T_i, *feature_shape]), the
  batching every inference path shares.

  Each item goes, zero-padded, into the smallest of `buckets` that holds
  it (`pipeline.choose_bucket`) with the other items of that bucket,
  `batch_size` at a time; a batch's unused rows are empty (mask False).
  So fn compiles once per bucket, and an item's result does not depend on
  the other items of the call.

  Returns fn's row of each item, in `items`' order: its first T_i frames
  when `per_frame` (outputs [B, L, ...]), else the whole row. `progress(n)`
  is called after each batch with its number of items.

  Raises:
    errors.UserError: an item longer than the largest bucket.
  """
  out = [None] * len(items)
  by_bucket = {}
  for i, x in enumerate(items):
    by_bucket.setdefault(pipeline.choose_bucket(len(x), buckets), []).append(i)
  for length, members in by_bucket.items():
    for start in range(0, len(members), batch_size):
      rows = members[start : start + batch_size]
      batch = np.zeros((batch_size, length, *feature_shape), dtype)
      mask = np.zeros((batch_size, length), bool)
      for r, i in enumerate(rows):
        batch[r, : len(items[i])] = items[i]
        mask[r, : len(items[i])] = True
      result = np.asarray(fn(batch, mask))
      for r, i in enumerate(rows):
        out[i] = result[r, : len(items[i])] if per_frame else result[r]
      if progress is not None:
        progress(len(rows))
  return out


def hands_seen(hands: np.ndarray) -> np.ndarray:
  """bool [T, 2]: whether the left / right hand of hands [T, 42, 2] has a
  detected point."""
  h = layout.NUM_HAND_POINTS
  detected = ~np.isnan(hands).any(axis=-1)
  return np.stack([detected[:, :h].any(1), detected[:, h:].any(1)], axis=1)


def _checked_hands(hands, mask=None) -> np.ndarray:
  """Raw hands as float32 [T, 42, 2] with non-finite values NaN (a missing
  detection), `mask`'s frames only; raises errors.UserError on a wrong
  shape or mask, no frames, or no hand in any frame."""
  hands = layout.missing_as_nan(hands)  # +-inf: not detected.
  if hands.ndim != 3 or hands.shape[1:] != (layout.NUM_POINTS, 2):
    raise errors.UserError(
        f"hands must be [T, {layout.NUM_POINTS}, 2] (a list "
        f"of such arrays for a batch), got {hands.shape}"
    )
  if mask is not None:
    mask = np.asarray(mask, bool)
    if mask.shape != hands.shape[:1]:
      raise errors.UserError(
          f"mask must be [{hands.shape[0]}], got {mask.shape}"
      )
    hands = hands[mask]
  if not len(hands):
    raise errors.UserError("the sequence has no frames")
  if np.isnan(hands).all():
    raise errors.UserError("the sequence has no hand in any frame (all NaN)")
  return hands


def _is_batch(x: Any) -> bool:
  return isinstance(x, (list, tuple))


class Tokenizer:
  """A trained tokenizer's encoder, RVQ and decoder, for inference only.

  `encode` preprocesses exactly as training did (`pipeline.preprocess`): it
  drops frames with no hand, normalises (per sequence, or per hand: the
  config's `data.normalization`) and resamples sequences longer than
  `max_len` frames to `max_len`. The codes thus have one row per
  *kept* frame, T' = min(frames with a hand, max_len), not one per input frame.
  """

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      variables: dict[str, Any],
      batch_size: int = 16,
      step: int | None = None,
  ):
    self.config = config
    self.step = step  # the training step of the checkpoint, if known.
    self.source = None  # the workdir or directory it was loaded from.
    self._record = None  # a saved tokenizer's inputs and test metrics.
    # Batches are split over this process's devices only, so one process can
    # tokenize on its own while the others wait.
    mesh = sharding.make_mesh(jax.local_devices())
    self.model = tokenizer_lib.TokenizerModel(
        tokenizer_lib.TokenizerConfig.from_config(
            config, **sharding.attention_layout(mesh)
        )
    )
    self.max_len = int(config.data.max_len)
    self.buckets = tuple(config.data.buckets) or pipeline.default_buckets(
        self.max_len
    )
    self.code_spec = tokens_lib.CodeSpec(
        int(config.model.num_quantizers), int(config.model.codebook_size)
    )
    self.batch_size = -(-batch_size // mesh.size) * mesh.size
    repl, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
    self.fingerprint = fingerprint(config, variables)
    self._variables = jax.device_put(variables, repl)
    self._encode = jax.jit(
        functools.partial(self.model.apply, method="encode"),
        in_shardings=(repl, data, data),
        out_shardings=data,
    )
    self._ctc_logits = jax.jit(
        functools.partial(self.model.apply, method="ctc_logits"),
        in_shardings=(repl, data, data),
        out_shardings=data,
    )
    self._decode = jax.jit(
        lambda v, codes, mask, n_q: self.model.apply(
            v, codes, mask, n_q, method="decode_codes"
        ),
        in_shardings=(repl, data, data, None),
        out_shardings=data,
    )

  @property
  def codebooks(self) -> np.ndarray:
    """The RVQ codebooks, float32 [Q, K, D] (quantizer q's code k is row
    [q, k])."""
    return np.asarray(self._variables["vq"]["rvq"]["codebook"])

  @classmethod
  def load(
      cls, path: str | os.PathLike, which: str = "best", batch_size: int = 16
  ) -> "Tokenizer":
    """From a training workdir (its config.json and `which` checkpoint).

    The schedule-free evaluation parameters are used, as in validation;
    `which="best"` (the default) also carries the BatchNorm statistics
    recomputed at them, `"latest"` those of the training point.
    """
    if (epath.Path(fileio.abspath(path)) / PRETRAINED_WEIGHTS).exists():
      return cls.from_pretrained(path, batch_size)
    config = read_config(path, kind="tokenizer")
    model = tokenizer_lib.TokenizerModel(
        tokenizer_lib.TokenizerConfig.from_config(config)
    )
    variables, step = restore_variables(
        path,
        config,
        functools.partial(
            tokenizer_lib.init_variables, model, int(config.data.max_len)
        ),
        which,
    )
    tok = cls(config, variables, batch_size, step)
    tok.source = fileio.abspath(path)
    return tok

  # -------------------------------------------------------------------------
  # The Hugging Face Hub's layout.

  def save_pretrained(self, directory: str | os.PathLike) -> str:
    """Writes `directory` (local or `gs://`) in the Hub's layout: its
    config (`config.json`), the inference variables (`model.safetensors`:
    weights, BatchNorm statistics at the evaluation point, codebooks) and a
    model card (`README.md`: architecture, parameters, the data it was
    trained on and its test metrics, where its workdir kept them).
    `from_pretrained` (or `load`) gives the same codes. Needs safetensors
    (the `lm` extra). Returns the directory.

    Raises:
      errors.UserError: `directory` is a training workdir (its config.json
        would be replaced).
    """
    st = _safetensors()
    directory = fileio.abspath(directory)
    if any(
        (epath.Path(directory) / d).exists() for d in ("best", "checkpoints")
    ):
      raise errors.UserError(
          f"{directory}: a training workdir; save into " "another directory"
      )
    if not fileio.is_remote(directory):
      os.makedirs(directory, exist_ok=True)
    flat = {
        "/".join(k): np.asarray(jax.device_get(v))
        for k, v in traverse_util.flatten_dict(
            jax.device_get(self._variables)
        ).items()
    }
    fileio.atomic_write(
        os.path.join(directory, PRETRAINED_WEIGHTS),
        lambda f: f.write(
            st.save(flat, metadata={"fingerprint": self.fingerprint})
        ),
    )
    source, record = self.source, self._record
    if record is None:  # a training workdir's records, read once.
      record = {
          k: fileio.read_json(os.path.join(source, f"{k}.json"))
          if source
          else None
          for k in ("inputs", "test_metrics")
      }
    fileio.write_json(
        os.path.join(directory, "config.json"),
        dict(
            asl_vq=dict(
                format=1,
                step=self.step,
                fingerprint=self.fingerprint,
                source=source,
                **record,
            ),
            **json.loads(self.config.to_json_best_effort()),
        ),
    )
    (epath.Path(directory) / "README.md").write_text(
        self._model_card(source, record["inputs"], record["test_metrics"])
    )
    return directory

  @classmethod
  def from_pretrained(
      cls, name: str | os.PathLike, batch_size: int = 16
  ) -> "Tokenizer":
    """A tokenizer saved by `save_pretrained`: a directory (local or
    `gs://`) or a Hub id `user/name` (downloaded with huggingface_hub).

    Raises:
      errors.UserError: not a saved tokenizer.
      errors.MissingExtra: a Hub id without huggingface_hub installed.
    """
    st = _safetensors()
    path = os.fspath(name)
    if not (fileio.is_remote(path) or os.path.exists(path)):
      if not re.fullmatch(r"[\w.-]+/[\w.-]+", path):
        raise errors.UserError(
            f"{path}: no such directory, nor a Hub id " "user/name"
        )
      try:
        import huggingface_hub  # pylint: disable=g-import-not-at-top
      except ImportError:
        raise errors.MissingExtra(
            f"{path}: a Hub id needs huggingface_hub: pip install -e "
            "'.[lm]' huggingface_hub"
        ) from None
      try:
        path = huggingface_hub.snapshot_download(path)
      except Exception as e:  # pylint: disable=broad-except
        # The Hub client's errors (offline, no such repository) differ by
        # version; each is one line here.
        raise errors.UserError(
            f"{path}: no such directory, and not "
            f"downloadable from the Hub ({e})"
        ) from None
    path = fileio.abspath(path)
    saved = fileio.read_json(os.path.join(path, "config.json"))
    weights = epath.Path(path) / PRETRAINED_WEIGHTS
    if not saved or "asl_vq" not in saved or not weights.exists():
      raise errors.UserError(
          f"{path}: not a tokenizer saved by "
          "Tokenizer.save_pretrained (config.json with "
          f"asl_vq, {PRETRAINED_WEIGHTS})"
      )
    meta = saved.pop("asl_vq")
    config = ml_collections.ConfigDict(config_lib.saved_config(saved))
    try:
      flat = st.load(weights.read_bytes())
    except Exception as e:  # pylint: disable=broad-except
      # safetensors raises its own SafetensorError on a damaged file.
      raise errors.UserError(f"{weights}: not readable ({e})") from None
    variables = traverse_util.unflatten_dict(
        {tuple(k.split("/")): v for k, v in flat.items()}
    )
    tok = cls(config, variables, batch_size, meta.get("step"))
    if tok.fingerprint != meta.get("fingerprint"):
      raise errors.UserError(
          f"{path}: its weights are not those it was "
          "saved with (fingerprint differs)"
      )
    tok.source = path
    tok._record = {k: meta.get(k) for k in ("inputs", "test_metrics")}
    return tok

  def _model_card(self, source, inputs, metrics) -> str:
    """The README.md of `save_pretrained`."""
    model = self.config.model
    data = self.config.data.get("dir") or ""
    params = jax.tree.map(lambda x: int(np.size(x)), self._variables["params"])
    count = sum(jax.tree.leaves(params))
    lines = [
        "---",
        "library_name: asl_vq",
        "tags: [sign-language, asl, " "tokenizer, vq]",
        "---",
        "",
        "# asl_vq sign tokenizer",
        "",
        "Hand landmarks (MediaPipe, 21 points a hand, both hands) to discrete "
        "codes, a JAX/Flax reimplementation of Abzaliev and Mihalcea, EMNLP "
        "2024 (https://github.com/MichiganNLP/discrete_asl).",
        "",
        "## Model",
        "",
        f"- Squeezeformer encoder ({model.num_blocks} blocks, width "
        f"{model.dim}), residual VQ of {model.num_quantizers} quantizers x "
        f"{model.codebook_size} codes, mirrored decoder"
        + (", CTC character head" if model.use_ctc else "")
        + ".",
        f"- {count:,} parameters; fingerprint `{self.fingerprint}`; training "
        f"step {self.step}.",
        f"- Input: up to {self.max_len} frames at once (longer recordings in "
        "windows: `Tokenizer.encode_frames`).",
        "",
        "## Data",
        "",
        (
            f"Trained on `{data}`."
            if data
            else "Trained on the embedded **synthetic** fingerspelling data of "
            "asl_vq (generated hands, not real signers)."
        ),
    ]
    if source:
      lines.append(f"Saved from the run `{source}`.")
    if inputs:
      lines.append(f"Inputs (content fingerprints): `{json.dumps(inputs)}`.")
    lines += ["", "## Test metrics", ""]
    lines += (
        [
            f"- {k}: {v:.4g}"
            for k, v in sorted(metrics.items())
            if isinstance(v, (int, float))
        ]
        if metrics
        else ["Not recorded with this tokenizer."]
    )
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import asl_vq",
        'tok = asl_vq.Tokenizer.from_pretrained("DIR_OR_USER/NAME")',
        "codes = tok.encode_frames(hands).codes   # hands: [T, 42, 2]",
        "```",
        "",
    ]
    return "\n".join(lines)

  # -------------------------------------------------------------------------
  # Encoding.

  def preprocess(
      self, hands: np.ndarray, mask: np.ndarray | None = None
  ) -> np.ndarray:
    """Raw hands [T, 42, 2] -> the model's input float32 [T', 42, 2].

    NaN, and any non-finite value, is a missing detection.

    `mask` (bool [T]) drops frames first, e.g. the padding of a padded array.
    """
    inputs, valid = pipeline.preprocess(
        _checked_hands(hands, mask),
        max_len=self.max_len,
        flip=False,
        resample_method=self.config.data.resample,
        normalization=self.config.data.normalization,
    )
    return inputs[: valid.sum()]

  def encode(self, hands, mask=None):
    """Raw hands [T, 42, 2] (NaN = not detected) -> int32 codes [T', Q].

    A list of sequences (any lengths; `mask` then a list or None) gives the
    list of their codes. See the class docstring for T'.
    """
    if not _is_batch(hands):
      return self.encode([hands], None if mask is None else [mask])[0]
    return self._run(
        self._encode,
        self._inputs(hands, mask),
        (layout.NUM_POINTS, 2),
        np.float32,
    )

  def encode_frames(
      self,
      hands,
      fps: float | None = None,
      *,
      window: int | None = None,
      overlap: int | None = None,
  ):
    """Raw hands [T, 42, 2], any T -> `FrameCodes`: one code group per frame
    with a hand, none resampled, each with its input frame index.

    Recordings with more frames with a hand than `window` (default: the
    model's `max_len`) are encoded in windows of `window` such frames that
    share `overlap` (default `window // 2`: README, "Any length"); each
    window is normalised on its own, as a training sequence is, and each
    frame takes its codes from the window where it is most central. Up to
    `window` frames this is `encode` (the same codes). A list of recordings
    gives a list (`fps` then one value for all, or a list).

    Raises:
      errors.UserError: bad hands (as `encode`), window or overlap.
    """
    if not _is_batch(hands):
      return self.encode_frames([hands], [fps], window=window, overlap=overlap)[
          0
      ]
    rates = list(fps) if _is_batch(fps) else [fps] * len(hands)
    window = self.max_len if window is None else int(window)
    if not 1 <= window <= self.max_len:
      raise errors.UserError(
          f"window={window}: must be in [1, max_len="
          f"{self.max_len}] (the model's length)"
      )
    overlap = window // 2 if overlap is None else int(overlap)
    plans, windows = [], []  # per recording: (present, starts, first
    for h in hands:  # window, hands seen)
      h = _checked_hands(h)
      present = ~np.isnan(h).all(axis=(1, 2))
      kept = h[present]
      starts = window_starts(len(kept), window, overlap)
      plans.append((present, starts, len(windows), hands_seen(kept)))
      windows += [kept[s : s + window] for s in starts]
    stats = [
        pipeline.statistics(w, self.config.data.normalization) for w in windows
    ]
    codes = self._run(
        self._encode,
        [pipeline.normalize(w, st) for w, st in zip(windows, stats)],
        (layout.NUM_POINTS, 2),
        np.float32,
    )
    # Per frame and hand: a hand's 21 points share their statistics.
    per_frame = lambda v, w: np.broadcast_to(v, (len(w), layout.NUM_POINTS, 2))[
        :, :: layout.NUM_HAND_POINTS
    ]
    means = [per_frame(m, w) for w, (m, _) in zip(windows, stats)]
    stds = [per_frame(d, w) for w, (_, d) in zip(windows, stats)]
    out = []
    for (present, starts, first, seen), rate in zip(plans, rates):
      n, part = int(present.sum()), slice(first, first + len(starts))
      out.append(
          FrameCodes(
              codes=_stitch(codes[part], n, starts, window).astype(np.int32),
              frames=np.flatnonzero(present),
              missing=np.flatnonzero(~present),
              num_frames=len(present),
              fps=None if rate is None else float(rate),
              mean=_stitch(means[part], n, starts, window).astype(np.float32),
              std=_stitch(stds[part], n, starts, window).astype(np.float32),
              seen=seen,
          )
      )
    return out

  def to_image(
      self,
      landmarks: np.ndarray,
      frame_codes: FrameCodes,
      *,
      every_frame: bool = False,
  ) -> np.ndarray:
    """Decoded landmarks [N, 42, 2] of `frame_codes.codes` (model space) ->
    the input's coordinates (e.g. image fractions), each frame with the
    statistics it was encoded with: `v * std + mean`; a hand the input
    did not have in that frame NaN (codes do not say; `seen` does).
    `every_frame`: at the input's frames, [num_frames, 42, 2], NaN where
    it had no hand.

    Raises:
      errors.UserError: not one decoded frame per code group.
    """
    landmarks = np.asarray(landmarks, np.float32)
    if landmarks.shape[0] != len(frame_codes.frames):
      raise errors.UserError(
          f"{landmarks.shape[0]} decoded frames for "
          f"{len(frame_codes.frames)} code groups"
      )
    per_point = lambda v: np.repeat(v, layout.NUM_HAND_POINTS, axis=1)
    placed = landmarks * per_point(frame_codes.std) + per_point(
        frame_codes.mean
    )
    absent = ~np.repeat(frame_codes.seen, layout.NUM_HAND_POINTS, axis=1)
    placed[absent] = np.nan
    if not every_frame:
      return placed
    out = np.full(
        (frame_codes.num_frames, *placed.shape[1:]), np.nan, np.float32
    )
    out[frame_codes.frames] = placed
    return out

  def drawable(self, landmarks: np.ndarray) -> np.ndarray:
    """Model-space landmarks [..., 42, 2] (`preprocess`'s, `decode`'s)
    laid out to be drawn (`pipeline.drawable`: with the "hand"
    normalization each hand is at its own origin; side by side here)."""
    return pipeline.drawable(landmarks, self.config.data.normalization)

  def _inputs(self, hands: Sequence[Any], mask) -> list[np.ndarray]:
    """`preprocess` of each sequence of a batch (`mask` a list or None)."""
    masks = [None] * len(hands) if mask is None else mask
    if len(masks) != len(hands):
      raise errors.UserError(f"{len(masks)} masks for {len(hands)} sequences")
    return [self.preprocess(h, m) for h, m in zip(hands, masks)]

  def transcribe(self, hands, mask=None):
    """Raw hands [T, 42, 2] (NaN = not detected) -> the CTC head's text.

    Greedy CTC decoding (per kept frame the most likely character, repeats
    collapsed, blanks dropped), as the tokenizer's evaluation scores it. A
    list of sequences gives a list of strings. Preprocessing as `encode`.

    Raises:
      ValueError: the tokenizer has no CTC head (trained with
        `model.use_ctc=False`), or bad hands as `encode`.
    """
    if not self.config.model.use_ctc:
      raise errors.UserError(tokenizer_lib.NO_CTC_HEAD)
    if not _is_batch(hands):
      return self.transcribe([hands], None if mask is None else [mask])[0]
    logits = self._run(
        self._ctc_logits,
        self._inputs(hands, mask),
        (layout.NUM_POINTS, 2),
        np.float32,
    )
    return [
        vocab.decode(
            losses.ctc_greedy_decode(l[None], np.ones((1, len(l)), bool))[0]
        )
        for l in logits
    ]

  # -------------------------------------------------------------------------
  # Decoding.

  def decode(self, codes, n_q: int | None = None):
    """Codes int [T, k] (k <= Q), any T -> landmarks float32 [T, 42, 2].

    Reconstructed from the first `n_q` quantizers (default: all k given), in
    the model's output space: normalised coordinates, as `preprocess` gives
    (`to_image` puts `encode_frames`' back into the input's). Codes longer
    than the model's length are decoded in windows as `encode_frames`
    encodes. A list of code arrays gives a list.
    """
    if not _is_batch(codes):
      return self.decode([codes], n_q)[0]
    q, size = self.code_spec.num_quantizers, self.code_spec.codebook_size
    full = []
    for c in codes:
      c = np.asarray(c)
      if (
          c.ndim != 2
          or not 1 <= c.shape[1] <= q
          or not np.issubdtype(c.dtype, np.integer)
      ):
        raise errors.UserError(
            f"codes must be integers [T, k] with 1 <= k <= {q}, "
            f"got {c.dtype} {c.shape}"
        )
      if c.size and (c.min() < 0 or c.max() >= size):
        raise errors.UserError(
            f"codes must be in [0, {size}), got " f"[{c.min()}, {c.max()}]"
        )
      # Codes of -1 add nothing (`ResidualVQ.embed_codes`).
      full.append(
          np.pad(
              c.astype(np.int32),
              ((0, 0), (0, q - c.shape[1])),
              constant_values=-1,
          )
      )
    n_q = q if n_q is None else n_q
    if not 1 <= n_q <= q:
      raise errors.UserError(f"n_q must be in [1, {q}], got {n_q}")
    n_q = jnp.int32(n_q)  # traced: one compilation for every n_q.
    # Longer than the model's length (`encode_frames` of a long recording):
    # in overlapping windows, each frame from the one where it is central.
    window, plans, pieces = self.max_len, [], []
    for c in full:
      starts = window_starts(len(c), window, window // 2)
      plans.append((len(c), starts, len(pieces)))
      pieces += [c[s : s + window] for s in starts]
    decoded = self._run(
        lambda v, x, m: self._decode(v, x, m, n_q), pieces, (q,), np.int32
    )
    return [
        _stitch(decoded[first : first + len(starts)], length, starts, window)
        for length, starts, first in plans
    ]

  # -------------------------------------------------------------------------

  def _run(
      self, fn, items: Sequence[np.ndarray], feature_shape, dtype
  ) -> list[np.ndarray]:
    """fn(variables, [B, L, ...], mask [B, L]) over `items` in the run's
    buckets and batch size (`run_in_buckets`), each result cut to its
    item's frames."""
    return run_in_buckets(
        lambda batch, mask: fn(self._variables, batch, mask),
        items,
        feature_shape,
        dtype,
        buckets=self.buckets,
        batch_size=self.batch_size,
    )

  # -------------------------------------------------------------------------
  # Text.

  def to_text(self, codes) -> str:
    """Codes int [T, k] -> text in `TEXT_FORMAT` (k <= 26 quantizers)."""
    codes = np.asarray(codes)
    if (
        codes.ndim != 2
        or codes.shape[1] > 26
        or (codes.size and codes.min() < 0)
    ):
      raise errors.UserError(
          f"codes must be non-negative [T, k <= 26], got " f"{codes.shape}"
      )
    return codes_text(codes)

  def from_text(self, text: str) -> np.ndarray:
    """Text in `TEXT_FORMAT` -> int32 codes [T, k]; raises on malformed text.

    Every frame must hold quantizers a, b, ... in order, the same k <= Q on
    every frame, with codes below the codebook size. "" gives [0, Q].
    """
    if not text:
      return np.zeros((0, self.code_spec.num_quantizers), np.int32)
    rows = []
    for t, frame in enumerate(text.split(" ")):
      if not _FRAME.fullmatch(frame):
        raise errors.UserError(
            f"frame {t}: {frame!r} is not a group like "
            "'<a98><b624>' (frames are separated by one space)"
        )
      groups = _GROUP.findall(frame)
      letters = "".join(l for l, _ in groups)
      if letters != string.ascii_lowercase[: len(groups)]:
        raise errors.UserError(
            f"frame {t}: quantizers {letters!r} are not a, b, "
            "c, ... in order"
        )
      rows.append([int(n) for _, n in groups])
    k = {len(r) for r in rows}
    if len(k) > 1:
      raise errors.UserError(f"frames hold different numbers of quantizers {k}")
    # Checked on Python ints: a 20-digit code would overflow int64 first.
    if len(rows[0]) > self.code_spec.num_quantizers or any(
        c >= self.code_spec.codebook_size for r in rows for c in r
    ):
      raise errors.UserError(f"codes exceed {self.code_spec}")
    codes = np.asarray(rows, np.int64)
    return codes.astype(np.int32)
