"""The reference fixture of tests/data, and the reference's weights rebuilt.

tests/data/reference_fixture.npz is a subset of
../shared/reference/discrete_asl_fixture.npz (see its README): outputs of the
unmodified PyTorch reference (MichiganNLP/discrete_asl) in eval mode on 3
synthetic sequences, its 4 codebooks [4, 1024, 128] float32, and in 'meta'
the seed and the (name, shape, dtype) list of its state_dict. Every other
weight follows from the seed by the README's numpy rule ("How the weights
were made"), rebuilt here bit for bit by `state_dict()`.

Run as a script (from the repository root, with PYTHONPATH=.) it prints the
port's agreement with the reference outputs:

  PYTHONPATH=. python tests/reference_fixture.py
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from asl_vq import import_reference
from asl_vq.models import tokenizer as tokenizer_lib

PATH = os.path.join(os.path.dirname(__file__), "data",
                    "reference_fixture.npz")
NUM_SEQUENCES = 3
# The reference's transposed conv: output channels are its weight's dim 1.
_CONV_TRANSPOSE = "decoder.transposed_feature_extractor.conv_stem.weight"


@functools.lru_cache(maxsize=None)
def arrays() -> dict[str, np.ndarray]:
  with np.load(PATH) as f:
    return {k: f[k] for k in f.files}


def sequence(i: int) -> dict[str, np.ndarray]:
  """raw, input, encoder_out, codes, quantized, ctc_logits, recon(_nq1/2)."""
  prefix = f"seq{i}/"
  return {k[len(prefix):]: v for k, v in arrays().items()
          if k.startswith(prefix)}


@functools.lru_cache(maxsize=None)
def state_dict() -> dict[str, np.ndarray]:
  """The reference's 582 state_dict entries (README, "How the weights were
  made"): one numpy generator seeded with meta['seed'] walks the names in
  sorted order and draws per the rule of each entry; codebooks are stored."""
  meta = json.loads(str(arrays()["meta"]))
  codebooks = arrays()["codebooks"]
  rng = np.random.default_rng(meta["seed"])
  out = {}
  for name, shape, _ in sorted(map(tuple, meta["state_dict"])):
    shape = tuple(shape)
    parts = name.split(".")
    last, owner = parts[-1], parts[-2]
    if last == "num_batches_tracked":
      out[name] = np.array(1000, np.int64).reshape(shape)
      continue
    if owner == "_codebook":
      if last == "inited":
        v = np.ones(shape)
      elif last == "cluster_size":
        v = rng.uniform(2.0, 10.0, shape)
      elif last == "embed":
        v = codebooks[int(parts[3])]
      else:  # embed_avg: after embed and cluster_size in sorted order.
        base = name[:-len("embed_avg")]
        v = out[base + "embed"] * out[base + "cluster_size"][:, None]
    elif last == "running_mean":
      v = 0.1 * rng.standard_normal(shape)
    elif last == "running_var":
      v = 0.5 + rng.uniform(0.0, 1.0, shape)
    elif ((last == "weight" and (owner in ("stem_bn", "bn_conv", "bn")
                                 or owner.startswith("ln_")))
          or last.startswith("scale_")):
      v = 1.0 + 0.1 * rng.standard_normal(shape)
    elif last in ("bias", "u_bias", "v_bias") or last.startswith("bias_"):
      v = 0.1 * rng.standard_normal(shape)
    else:
      out_dim = 1 if name == _CONV_TRANSPOSE else 0
      v = rng.standard_normal(shape) / np.sqrt(np.prod(shape) // shape[out_dim])
    out[name] = np.asarray(v).astype(np.float32)
  return out


CONFIG = tokenizer_lib.TokenizerConfig()  # The paper's sizes, as the fixture.


@functools.lru_cache(maxsize=None)
def variables():
  return import_reference.to_variables(state_dict(), CONFIG)


@functools.lru_cache(maxsize=None)
def model_fns():
  """Jitted (encoder, RVQ codes, code embedding, CTC head, decode) at full
  float32 matmul precision, on one unpadded sequence."""
  model = tokenizer_lib.TokenizerModel(CONFIG)
  v = jax.tree.map(jnp.asarray, variables())
  full = lambda x: jnp.ones(x.shape[:2], bool)

  def apply(fn, **kw):
    f = jax.jit(lambda v, *a: model.apply(v, *a, method=fn), **kw)
    return lambda *a: f(v, *a)

  return dict(
      # pylint: disable-next=protected-access
      encoder=apply(lambda m, x: m._encode(x, full(x), False)),
      codes=apply(lambda m, h: m.rvq(h, full(h), train=False)[1]),
      embed=apply(lambda m, c: m.embed_codes(c)),
      ctc=apply(lambda m, q: m.ctc_head(q)),
      decode=apply(lambda m, c, n_q: m.decode_codes(c, full(c), n_q),
                   static_argnums=2))


def piecewise_outputs(i: int) -> dict[str, np.ndarray]:
  """The port on sequence i, each part fed the reference's own input to it."""
  s = sequence(i)
  f = model_fns()
  codes = jnp.asarray(s["codes"])[None]
  with jax.default_matmul_precision("highest"):
    out = dict(
        encoder_out=f["encoder"](jnp.asarray(s["input"])[None]),
        codes=f["codes"](jnp.asarray(s["encoder_out"])[None]),
        quantized=f["embed"](codes),
        ctc_logits=f["ctc"](jnp.asarray(s["quantized"])[None]),
        recon=f["decode"](codes, None),
        recon_nq1=f["decode"](codes, 1),
        recon_nq2=f["decode"](codes, 2))
  return {k: np.asarray(v[0]) for k, v in out.items()}


def agreement() -> str:
  """Per output: max and RMS differences, and codes equal per quantizer."""
  lines = []
  for i in range(NUM_SEQUENCES):
    s, got = sequence(i), piecewise_outputs(i)
    equal = (got["codes"] == s["codes"]).mean(0)
    parts = [f"seq{i} ({len(s['input'])} frames): codes equal per quantizer "
             + " ".join(f"{e:.3f}" for e in equal)]
    for name in ("encoder_out", "quantized", "ctc_logits", "recon",
                 "recon_nq1", "recon_nq2"):
      d = got[name].astype(np.float64) - s[name]
      parts.append(f"  {name}: max {np.abs(d).max():.2e} "
                   f"rms {np.sqrt(np.mean(d ** 2)):.2e}")
    lines.append("\n".join(parts))
  return "\n".join(lines)


if __name__ == "__main__":
  print(agreement())
