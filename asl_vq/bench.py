r"""Throughput of the paper-size tokenizer: train step, encode, k-means init.

  python -m asl_vq.bench [--shapes=22x196,32x256] [--steps=10] \
      [--dtype=float32|bfloat16] [--epoch_steps=N] [--torch_rvq] \
      [--profile_dir=DIR]

Frames/s = batch x frames / median step time (compile excluded). Inputs are
random: throughput does not depend on the values. The k-means figure is the
extra time of the first training step (which initialises the codebooks) over
an ordinary step. `--dtype` is the compute dtype (`config.model.dtype`).
`--epoch_steps=N` also times N consecutive training steps at the last shape,
each on a new host batch put on the devices as the train loop does, and
prints the sustained frames/s (an epoch-equivalent when N is the number of
steps in an epoch). `--torch_rvq` also times `vector_quantize_pytorch`'s
ResidualVQ (extra `bench`) against our RVQ alone at the same shapes.
`--profile_dir=DIR` also traces, after the timed calls, PROFILED_CALLS (2)
encodes and training steps of each shape with `jax.profiler`, into
DIR/BATCHxFRAMES-DTYPE/plugins/profile/<time>/: per-op times in an
`.xplane.pb` for XProf (`pip install xprof`; `xprof --logdir=DIR`) or
TensorBoard, and, from a single process writing to a local path, a
`perfetto_trace.json.gz` for https://ui.perfetto.dev.
While a shape runs, a progress bar on stderr counts its calls and names the
phase (compile, k-means step, train, encode); its line follows on stdout.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import jax
import numpy as np
import tqdm
from absl import flags

from asl_vq import cli
from asl_vq import config_lib
from asl_vq import errors
from asl_vq import fileio
from asl_vq import optimizers
from asl_vq import sharding
from asl_vq import train
from asl_vq import vocab
from asl_vq.models import rvq as rvq_lib
from asl_vq.models import tokenizer as tokenizer_lib

# How many encodes, and how many training steps, --profile_dir traces per
# shape.
PROFILED_CALLS = 2

FLAGS = flags.FLAGS
flags.DEFINE_list("shapes", ["22x196", "32x256"], "batch x frames to time.")
flags.DEFINE_integer("steps", 10, "Timed steps per shape (median reported).")
flags.DEFINE_string("preset", "paper", "Size preset of configs/tokenizer.py.")
flags.DEFINE_enum(
    "dtype",
    "float32",
    ["float32", "bfloat16"],
    "Compute dtype (config.model.dtype).",
)
flags.DEFINE_integer(
    "epoch_steps",
    0,
    "Consecutive training steps to time " "at the last shape (0: none).",
)
flags.DEFINE_bool("torch_rvq", False, "Also time vector_quantize_pytorch.")
flags.DEFINE_string(
    "profile_dir",
    None,
    "Also write a jax.profiler trace of "
    f"{PROFILED_CALLS} encodes and training steps per shape "
    "under DIR/BATCHxFRAMES-DTYPE (XProf, TensorBoard or "
    "Perfetto).",
)


def tokenizer_step(config, mesh):
  """(model, init_variables, loss_fn): the tokenizer's model, its
  `train.init_state` and `train.train_step` arguments (the tokenizer task's
  `init_variables` and `loss`, from `asl_vq.models.tokenizer`), its
  attention's passes chosen for `mesh` as training chooses them."""
  model = tokenizer_lib.TokenizerModel(
      tokenizer_lib.TokenizerConfig.from_config(
          config, **sharding.attention_layout(mesh)
      )
  )
  return (
      model,
      functools.partial(
          tokenizer_lib.init_variables, model, config.data.max_len
      ),
      lambda params, state, batch, rng: tokenizer_lib.training_loss(
          model, state.variables(params), batch, rng, config.train
      ),
  )


def random_batch(batch: int, frames: int, label_len: int = 64, seed: int = 0):
  rng = np.random.default_rng(seed)
  lengths = np.full(batch, label_len)
  lengths[:] = rng.integers(10, 30, batch)
  labels = np.full((batch, label_len), vocab.PAD_ID, np.int32)
  for i, n in enumerate(lengths):
    labels[i, :n] = rng.integers(0, 59, n)
  return {
      "inputs": rng.standard_normal((batch, frames, 42, 2)).astype(np.float32),
      "input_mask": np.ones((batch, frames), bool),
      "labels": labels,
      "label_mask": labels != vocab.PAD_ID,
      "example_mask": np.ones(batch, bool),
  }


def _bar(shape: str, total: int) -> tqdm.tqdm:
  """One shape's progress in calls (compiles included); gone when done."""
  return tqdm.tqdm(
      total=total,
      desc=shape,
      unit="call",
      file=sys.stderr,
      leave=False,
      dynamic_ncols=True,
  )


def _median_time(fn, steps: int, bar: tqdm.tqdm) -> float:
  """The median seconds of `steps` calls of fn; each advances `bar`."""
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
    bar.update()
  return float(np.median(times))


def bench_shape(
    config,
    batch: int,
    frames: int,
    steps: int,
    epoch_steps: int = 0,
    profile_dir: str | None = None,
) -> dict:
  """Times one shape; see the module docstring for what and how.

  Args:
    config: a `configs/tokenizer.py` config; its model is the one timed.
    batch, frames: the shape of the random batch.
    steps: timed calls of the training step and of the encode (medians).
    epoch_steps: also time this many consecutive training steps (0: none).
    profile_dir: also write a `jax.profiler` trace of PROFILED_CALLS encodes
      (annotated 'encode') and as many training steps (step-annotated
      'train') under profile_dir/BATCHxFRAMES-DTYPE (`config.model.dtype`),
      with a Perfetto file when the path is local and there is one process.

  Returns:
    A dict of the printed figures; 'profile' is the trace's directory, or
    None without `profile_dir`.
  """
  mesh = sharding.make_mesh()
  repl, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
  model, init_variables, loss_fn = tokenizer_step(config, mesh)
  tx = optimizers.make_optimizer(config, config.train.batch_size)
  init = jax.jit(
      functools.partial(train.init_state, init_variables, tx),
      out_shardings=repl,
  )
  step = train.jit_train_step(
      loss_fn, tokenizer_lib.TRAINING_KEYS, tx, mesh, jax.random.PRNGKey(1)
  )
  gbatch = {
      k: jax.device_put(v, data) for k, v in random_batch(batch, frames).items()
  }

  profiled = 2 * PROFILED_CALLS if profile_dir else 0
  profile = None
  with _bar(f"{batch}x{frames}", 2 * steps + 3 + profiled) as bar:
    bar.set_postfix_str("compile train step")
    t0 = time.perf_counter()
    state = jax.block_until_ready(step(init(jax.random.PRNGKey(0)), gbatch)[0])
    compile_s = time.perf_counter() - t0
    bar.update()
    # The first step of a fresh state runs k-means; later ones do not.
    bar.set_postfix_str("k-means step")
    fresh = init(jax.random.PRNGKey(2))
    t0 = time.perf_counter()
    jax.block_until_ready(step(fresh, gbatch))
    first_step_s = time.perf_counter() - t0
    bar.update()

    holder = [state]

    def one_step():
      holder[0], m = step(holder[0], gbatch)
      return m["loss"]

    bar.set_postfix_str("train steps")
    train_s = _median_time(one_step, steps, bar)
    epoch_s = 0.0
    if epoch_steps:
      # A few distinct host batches, each transferred when its step needs
      # it; dispatch runs ahead as in the train loop, one wait at the end.
      bar.set_postfix_str(f"{epoch_steps} consecutive train steps")
      host = [random_batch(batch, frames, seed=i) for i in range(4)]
      t0 = time.perf_counter()
      for i in range(epoch_steps):
        holder[0], m = step(
            holder[0],
            {k: jax.device_put(v, data) for k, v in host[i % 4].items()},
        )
      jax.block_until_ready(m["loss"])
      epoch_s = time.perf_counter() - t0
    variables = holder[0].variables()
    encode = jax.jit(
        lambda v, x, m: model.apply(v, x, m, method=model.encode),
        in_shardings=(repl, data, data),
        out_shardings=data,
    )
    encode_batch = functools.partial(
        encode, variables, gbatch["inputs"], gbatch["input_mask"]
    )
    bar.set_postfix_str("compile encode")
    jax.block_until_ready(encode_batch())
    bar.update()
    bar.set_postfix_str("encode")
    encode_s = _median_time(encode_batch, steps, bar)
    if profile_dir:
      bar.set_postfix_str("profile")
      profile = os.path.join(
          profile_dir, f"{batch}x{frames}-{config.model.dtype}"
      )
      # jax's Perfetto export reads the trace back from a local directory
      # holding one process's files.
      perfetto = not fileio.is_remote(profile) and jax.process_count() == 1
      with jax.profiler.trace(profile, create_perfetto_trace=perfetto):
        # Encodes first: a training step donates the state `variables` is.
        for _ in range(PROFILED_CALLS):
          with jax.profiler.TraceAnnotation("encode"):
            jax.block_until_ready(encode_batch())
          bar.update()
        for i in range(PROFILED_CALLS):
          with jax.profiler.StepTraceAnnotation("train", step_num=i):
            jax.block_until_ready(one_step())
          bar.update()
        bar.set_postfix_str("write profile")
  return dict(
      shape=f"{batch}x{frames}",
      train_frames_s=batch * frames / train_s,
      train_step_ms=1e3 * train_s,
      encode_frames_s=batch * frames / encode_s,
      kmeans_init_s=max(first_step_s - train_s, 0.0),
      compile_s=compile_s,
      epoch_s=epoch_s,
      epoch_frames_s=epoch_steps * batch * frames / max(epoch_s, 1e-9),
      profile=profile,
  )


def bench_rvq(config, batch: int, frames: int, steps: int) -> dict:
  """Our RVQ alone (train mode, EMA updates) vs vector_quantize_pytorch."""
  import torch  # pylint: disable=g-import-not-at-top
  from vector_quantize_pytorch import ResidualVQ  # pylint: disable=g-import-not-at-top

  m = config.model
  x = (
      np.random.default_rng(0)
      .standard_normal((batch, frames, m.dim))
      .astype(np.float32)
  )
  mask = np.ones((batch, frames), bool)
  ours = rvq_lib.ResidualVQ(
      rvq_lib.RVQConfig(
          num_quantizers=m.num_quantizers, codebook_size=m.codebook_size
      ),
      m.dim,
  )
  variables = ours.init(jax.random.PRNGKey(0), x, mask, train=False)

  @jax.jit
  def fwd(variables, x, mask, rng):
    (q, codes, aux), upd = ours.apply(
        variables, x, mask, train=True, rngs={"vq": rng}, mutable=["vq"]
    )
    return q, codes, dict(variables, **upd)

  with _bar(f"{batch}x{frames} RVQ", 2 * steps + 2) as bar:
    bar.set_postfix_str("ours")
    _, _, variables = fwd(variables, x, mask, jax.random.PRNGKey(1))
    bar.update()
    ours_s = _median_time(
        lambda: fwd(variables, x, mask, jax.random.PRNGKey(1))[0], steps, bar
    )
    bar.set_postfix_str("vector_quantize_pytorch")
    theirs = ResidualVQ(
        dim=m.dim,
        num_quantizers=m.num_quantizers,
        codebook_size=m.codebook_size,
        decay=m.vq_decay,
        kmeans_init=True,
        kmeans_iters=m.kmeans_iters,
        threshold_ema_dead_code=int(m.dead_threshold),
        rotation_trick=False,
    )
    theirs.train()
    tx = torch.from_numpy(x)
    with torch.no_grad():
      theirs(tx)
      bar.update()
      theirs_s = _median_time(lambda: theirs(tx), steps, bar)
  return dict(
      shape=f"{batch}x{frames}",
      ours_frames_s=batch * frames / ours_s,
      torch_frames_s=batch * frames / theirs_s,
      speedup=theirs_s / ours_s,
  )


def main(argv):
  del argv
  config = config_lib.load("tokenizer", FLAGS.preset)
  config.model.dtype = FLAGS.dtype
  print(
      f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} "
      f"({jax.default_backend()}); preset {FLAGS.preset}; {FLAGS.dtype}"
  )
  for i, shape in enumerate(FLAGS.shapes):
    batch, _, frames = shape.partition("x")
    if not (batch.isdigit() and frames.isdigit()):
      raise errors.UserError(
          f"--shapes: {shape!r} is not BATCHxFRAMES (e.g. " "22x196)"
      )
    batch, frames = int(batch), int(frames)
    epoch_steps = FLAGS.epoch_steps if i == len(FLAGS.shapes) - 1 else 0
    r = bench_shape(
        config, batch, frames, FLAGS.steps, epoch_steps, FLAGS.profile_dir
    )
    print(
        f"{r['shape']:>8}: train {r['train_frames_s']:8.0f} frames/s "
        f"({r['train_step_ms']:.0f} ms/step), encode "
        f"{r['encode_frames_s']:8.0f} frames/s, k-means init "
        f"{r['kmeans_init_s']:.2f} s, compile {r['compile_s']:.1f} s",
        flush=True,
    )
    if FLAGS.profile_dir:
      print(
          f"{r['shape']:>8}: profile of {PROFILED_CALLS} encodes and "
          f"{PROFILED_CALLS} train steps in {r['profile']}",
          flush=True,
      )
    if epoch_steps:
      print(
          f"{r['shape']:>8}: {epoch_steps} consecutive train steps in "
          f"{r['epoch_s']:.1f} s, {r['epoch_frames_s']:8.0f} frames/s",
          flush=True,
      )
    if FLAGS.torch_rvq:
      r = bench_rvq(config, batch, frames, FLAGS.steps)
      print(
          f"{r['shape']:>8}: RVQ alone: ours {r['ours_frames_s']:8.0f} "
          f"frames/s, vector_quantize_pytorch {r['torch_frames_s']:8.0f} "
          f"frames/s ({r['speedup']:.1f}x)",
          flush=True,
      )


if __name__ == "__main__":
  cli.run(main)
