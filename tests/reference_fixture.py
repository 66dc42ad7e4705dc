"""The reference fixtures of tests/data, and the reference's weights rebuilt.

../shared/reference holds outputs of the unmodified PyTorch reference
(MichiganNLP/discrete_asl) in eval mode on 3 synthetic sequences, with
deterministic weights, in two versions of the same model (its README):
`discrete_asl_fixture_as_trained.npz`, after the
`torch.nn.SyncBatchNorm.convert_sync_batchnorm` that the reference's main.py
and predict.py apply (no SiLU after the two BatchNormAct2d), and
`discrete_asl_fixture.npz`, its modules as written (with the SiLU).

tests/data/reference_fixture.npz holds what the tests need of both (`make`
writes it): the raw and preprocessed inputs (the same in both), each
version's outputs under `as_trained/` and `as_written/`, and of each
version's 4 codebooks the rows that some frame chose (`codebook{q}/rows`,
`/vectors`). The other rows are set to FAR_ROW, a vector no input comes near,
so every chosen row keeps its index and its decision radius can only grow
(every radius in the fixtures is >= 1e-3, README "code_margin"): the codes
are exactly the reference's. 'meta' holds the seed and the (name, shape,
dtype) list of the state_dict; every other weight follows from the seed by
the README's numpy rule ("How the weights were made"), the same in both
versions, rebuilt here bit for bit by `state_dict()`.

Run as a script (from the repository root, with PYTHONPATH=.:tests) it
prints the port's agreement with both versions:

  PYTHONPATH=.:tests python tests/reference_fixture.py
  PYTHONPATH=.:tests python tests/reference_fixture.py --make  # rewrite it
"""

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from asl_vq import import_reference
from asl_vq.models import tokenizer as tokenizer_lib

PATH = os.path.join(os.path.dirname(__file__), "data", "reference_fixture.npz")
SHARED = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "reference"
)
# Version -> its file in ../shared/reference.
FILES = {
    "as_trained": "discrete_asl_fixture_as_trained.npz",
    "as_written": "discrete_asl_fixture.npz",
}
VERSIONS = tuple(FILES)
# The paper's sizes, as the fixtures; the version decides the activation.
CONFIGS = {
    "as_trained": tokenizer_lib.TokenizerConfig(conv_bn_activation="none"),
    "as_written": tokenizer_lib.TokenizerConfig(conv_bn_activation="silu"),
}
NUM_SEQUENCES = 3
NUM_QUANTIZERS = 4
CODEBOOK_SHAPE = (1024, 128)
OUTPUTS = (
    "encoder_out",
    "codes",
    "quantized",
    "ctc_logits",
    "recon",
    "recon_nq1",
    "recon_nq2",
)
# A codebook row no quantizer input comes near (they are of order 1).
FAR_ROW = 100.0
# The reference's transposed conv: output channels are its weight's dim 1.
_CONV_TRANSPOSE = "decoder.transposed_feature_extractor.conv_stem.weight"
_META_KEYS = (
    "seed",
    "state_dict",
    "raw_lengths",
    "kept_lengths",
    "dropped_frames",
    "cases",
    "reference_file_sha256",
    "torch",
    "timm",
)


def make(shared: str = SHARED, path: str = PATH) -> int:
  """Writes `path` from the two fixtures in `shared`; returns its size.

  Checks on the way that both share their inputs and every non-codebook
  weight.
  """
  out = {}
  files = {v: np.load(os.path.join(shared, f)) for v, f in FILES.items()}
  first = files[VERSIONS[0]]
  meta = json.loads(str(first["meta"]))
  out["meta"] = np.array(json.dumps({k: meta[k] for k in _META_KEYS}))
  for k in first.files:
    if k.startswith("weights/") and "_codebook" not in k:
      for f in files.values():
        np.testing.assert_array_equal(f[k], first[k], err_msg=k)
  for i in range(NUM_SEQUENCES):
    for k in ("raw", "input"):
      out[f"seq{i}/{k}"] = first[f"seq{i}/{k}"]
      for f in files.values():
        np.testing.assert_array_equal(f[f"seq{i}/{k}"], out[f"seq{i}/{k}"])
  for version, f in files.items():
    for i in range(NUM_SEQUENCES):
      for k in OUTPUTS:
        out[f"{version}/seq{i}/{k}"] = f[f"seq{i}/{k}"]
    for q in range(NUM_QUANTIZERS):
      embed = f[f"weights/quantizer.vq.layers.{q}._codebook.embed"]
      used = np.unique(
          np.concatenate(
              [f[f"seq{i}/codes"][:, q] for i in range(NUM_SEQUENCES)]
          )
      )
      out[f"{version}/codebook{q}/rows"] = used.astype(np.int16)
      out[f"{version}/codebook{q}/vectors"] = embed[used]
  np.savez_compressed(path, **out)
  return os.path.getsize(path)


@functools.lru_cache(maxsize=None)
def arrays() -> dict[str, np.ndarray]:
  with np.load(PATH) as f:
    return {k: f[k] for k in f.files}


def sequence(i: int, version: str = "as_trained") -> dict[str, np.ndarray]:
  """raw, input, and `version`'s encoder_out, codes, quantized, ctc_logits,
  recon(_nq1/2) of sequence i."""
  out = {}
  for prefix in (f"seq{i}/", f"{version}/seq{i}/"):
    out.update(
        {
            k[len(prefix) :]: v
            for k, v in arrays().items()
            if k.startswith(prefix)
        }
    )
  return out


@functools.lru_cache(maxsize=None)
def codebooks(version: str = "as_trained") -> np.ndarray:
  """[4, 1024, 128] float32: the chosen rows, FAR_ROW elsewhere."""
  out = np.full((NUM_QUANTIZERS,) + CODEBOOK_SHAPE, FAR_ROW, np.float32)
  for q in range(NUM_QUANTIZERS):
    rows = arrays()[f"{version}/codebook{q}/rows"].astype(np.int64)
    out[q, rows] = arrays()[f"{version}/codebook{q}/vectors"]
  return out


@functools.lru_cache(maxsize=None)
def state_dict(version: str = "as_trained") -> dict[str, np.ndarray]:
  """The reference's 582 state_dict entries (README, "How the weights were
  made"): one numpy generator seeded with meta['seed'] walks the names in
  sorted order and draws per the rule of each entry; codebooks as
  `codebooks(version)`."""
  meta = json.loads(str(arrays()["meta"]))
  books = codebooks(version)
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
        v = books[int(parts[3])]
      else:  # embed_avg: after embed and cluster_size in sorted order.
        base = name[: -len("embed_avg")]
        v = out[base + "embed"] * out[base + "cluster_size"][:, None]
    elif last == "running_mean":
      v = 0.1 * rng.standard_normal(shape)
    elif last == "running_var":
      v = 0.5 + rng.uniform(0.0, 1.0, shape)
    elif (
        last == "weight"
        and (owner in ("stem_bn", "bn_conv", "bn") or owner.startswith("ln_"))
    ) or last.startswith("scale_"):
      v = 1.0 + 0.1 * rng.standard_normal(shape)
    elif last in ("bias", "u_bias", "v_bias") or last.startswith("bias_"):
      v = 0.1 * rng.standard_normal(shape)
    else:
      out_dim = 1 if name == _CONV_TRANSPOSE else 0
      v = rng.standard_normal(shape) / np.sqrt(np.prod(shape) // shape[out_dim])
    out[name] = np.asarray(v).astype(np.float32)
  return out


@functools.lru_cache(maxsize=None)
def variables(version: str = "as_trained"):
  return import_reference.to_variables(state_dict(version), CONFIGS[version])


@functools.lru_cache(maxsize=None)
def model_fns(version: str = "as_trained"):
  """Jitted (encoder, RVQ codes, code embedding, CTC head, decode) at full
  float32 matmul precision; each takes a batch and its [B, T] frame mask."""
  model = tokenizer_lib.TokenizerModel(CONFIGS[version])
  v = jax.tree.map(jnp.asarray, variables(version))

  def apply(fn, **kw):
    f = jax.jit(lambda v, *a: model.apply(v, *a, method=fn), **kw)
    return lambda *a: f(v, *a)

  return dict(
      # pylint: disable-next=protected-access
      encoder=apply(lambda m, x, mask: m._encode(x, mask, False)),
      codes=apply(lambda m, h, mask: m.rvq(h, mask, train=False)[1]),
      embed=apply(lambda m, c: m.embed_codes(c)),
      ctc=apply(lambda m, q: m.ctc_head(q)),
      decode=apply(
          lambda m, c, mask, n_q: m.decode_codes(c, mask, n_q), static_argnums=3
      ),
  )


def piecewise_outputs(
    i: int, version: str = "as_trained"
) -> dict[str, np.ndarray]:
  """The port on sequence i alone, each part fed the reference's own input
  to it."""
  return {
      k: v[0]
      for k, v in padded_batch_outputs(
          [i], version, len(sequence(i)["input"])
      ).items()
  }


def padded_batch_outputs(
    indices, version: str, pad_to: int
) -> dict[str, np.ndarray]:
  """The port on sequences `indices` as one batch zero-padded to `pad_to`
  frames with a 0/1 mask, each part fed the reference's own input to it:
  {output: [B, pad_to, ...]} (padded frames hold whatever the port gives)."""

  def batch(name, dtype=np.float32):
    rows = [sequence(i, version)[name] for i in indices]
    out = np.zeros((len(rows), pad_to) + rows[0].shape[1:], dtype)
    for b, r in enumerate(rows):
      out[b, : len(r)] = r
    return jnp.asarray(out)

  lengths = [len(sequence(i)["input"]) for i in indices]
  mask = jnp.asarray(np.arange(pad_to)[None] < np.array(lengths)[:, None])
  f = model_fns(version)
  codes = batch("codes", np.int32)
  with jax.default_matmul_precision("highest"):
    out = dict(
        encoder_out=f["encoder"](batch("input"), mask),
        codes=f["codes"](batch("encoder_out"), mask),
        quantized=f["embed"](codes),
        ctc_logits=f["ctc"](batch("quantized")),
        recon=f["decode"](codes, mask, None),
        recon_nq1=f["decode"](codes, mask, 1),
        recon_nq2=f["decode"](codes, mask, 2),
    )
  return {k: np.asarray(v) for k, v in out.items()}


def agreement(version: str = "as_trained") -> str:
  """Per output: max and RMS differences, and codes equal per quantizer."""
  lines = []
  for i in range(NUM_SEQUENCES):
    s, got = sequence(i, version), piecewise_outputs(i, version)
    equal = (got["codes"] == s["codes"]).mean(0)
    parts = [
        f"{version} seq{i} ({len(s['input'])} frames): codes equal per "
        "quantizer " + " ".join(f"{e:.3f}" for e in equal)
    ]
    for name in OUTPUTS:
      if name == "codes":
        continue
      d = got[name].astype(np.float64) - s[name]
      parts.append(
          f"  {name}: max {np.abs(d).max():.2e} "
          f"rms {np.sqrt(np.mean(d ** 2)):.2e}"
      )
    lines.append("\n".join(parts))
  return "\n".join(lines)


if __name__ == "__main__":
  if "--make" in sys.argv[1:]:
    print(f"wrote {PATH}: {make()} bytes")
  for name in VERSIONS:
    print(agreement(name))
