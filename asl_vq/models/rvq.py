"""Residual vector quantizer with EMA codebooks, k-means init and code revival.

Every step is static-shape and jit-friendly. The codebooks and their EMA state
live in the mutable collection 'vq' (not 'params': no optimizer touches them)
and change only when training with 'vq' mutable. Padded frames never enter
k-means, the EMA, dead-code revival, the commitment loss or the metrics.

Sums over frames are plain sums over the (sharded) batch axis, i.e. global sums
under jit, and random draws come from one 'vq' key with sharding-invariant
threefry, so a step gives the same state on 1 device or many.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from asl_vq import errors

_HIGHEST = jax.lax.Precision.HIGHEST


# Codes per group in nearest_code's two-stage argmin.
_ARGMIN_GROUP = 32


def nearest_code(x, codebook):
  """Index of the nearest code, [N, D] x [K, D] -> [N] int32.

  argmin ||x||^2 - 2 x.C^T + ||C||^2, dropping ||x||^2 (constant per row):
  a single matmul. HIGHEST precision keeps TF32 / bf16 passes from flipping
  near ties on accelerators; the cost is negligible next to the encoder.

  The argmin runs in two stages when K is a multiple of 32 (and more): the
  minimum of each group of 32 codes (a plain, vectorised reduction), the
  first group holding the overall minimum, then the first index of that
  minimum within the group. It returns `jnp.argmin`'s index, the first one
  for ties and NaN alike; a NaN distance counts as -inf, so the one case
  where they differ is a -inf distance before the first NaN. It is 3x
  faster on CPU at N = 4312, K = 1024, where XLA's argmin (a reduction over
  value-index pairs) does not vectorise.
  """
  dist = jnp.sum(jnp.square(codebook), -1) - 2.0 * jnp.dot(
      x, codebook.T, precision=_HIGHEST
  )
  n, k = dist.shape
  group = _ARGMIN_GROUP
  if k % group or k == group:
    return jnp.argmin(dist, axis=-1).astype(jnp.int32)
  # XLA:CPU's min skips NaN where argmin returns the first NaN: as -inf,
  # a NaN distance wins both stages.
  dist = jnp.where(jnp.isnan(dist), -jnp.inf, dist).reshape(
      n, k // group, group
  )
  first_group = jnp.argmin(jnp.min(dist, axis=-1), axis=-1)
  within = jnp.take_along_axis(dist, first_group[:, None, None], axis=1)[:, 0]
  return (first_group * group + jnp.argmin(within, axis=-1)).astype(jnp.int32)


def cluster_statistics(x, codes, weights, k):
  """Weighted code counts [K] and vector sums [K, D].

  A scatter-add (segment_sum): equal to the one-hot matmul
  onehot(codes).T @ (weights * x) up to summation order, and ~30x cheaper on
  CPU at N = 4k frames, K = 1024 (no [N, K] one-hot, no N x K x D matmul).
  """
  counts = jax.ops.segment_sum(weights, codes, num_segments=k)
  sums = jax.ops.segment_sum(x * weights[:, None], codes, num_segments=k)
  return counts, sums


def sample_valid(key, valid, k):
  """k indices of valid rows: distinct while there are enough, then repeats.

  A random permutation puts the valid rows first; slots beyond the number of
  valid rows draw uniformly (with replacement) among them.
  """
  k_perm, k_extra = jax.random.split(key)
  scores = jnp.where(valid, jax.random.uniform(k_perm, valid.shape), 2.0)
  order = jnp.argsort(scores)
  n_valid = valid.sum()
  slot = jnp.arange(k)
  extra = jax.random.randint(k_extra, (k,), 0, jnp.maximum(n_valid, 1))
  return order[jnp.where(slot < n_valid, slot, extra)]


def kmeans(key, x, valid, k, iters):
  """Lloyd's k-means on the valid rows of x -> (centroids, counts).

  Centroids start at sampled valid rows; an empty cluster keeps its centroid.
  """
  weights = valid.astype(x.dtype)

  def step(_, centroids):
    counts, sums = cluster_statistics(x, nearest_code(x, centroids), weights, k)
    return jnp.where(
        counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids
    )

  centroids = jax.lax.fori_loop(0, iters, step, x[sample_valid(key, valid, k)])
  counts, _ = cluster_statistics(x, nearest_code(x, centroids), weights, k)
  return centroids, counts


class CodebookState(NamedTuple):
  """One quantizer's codebook and its EMA state.

  codebook: [K, D] float32 code vectors; cluster_size: [K] EMA of the number
  of frames per code; embed_sum: [K, D] EMA of the sum of those frames
  (`embed_avg` in the reference), so codebook = embed_sum / cluster_size
  after Laplace smoothing.
  """

  codebook: jnp.ndarray
  cluster_size: jnp.ndarray
  embed_sum: jnp.ndarray


def kmeans_start(
    key,
    state: CodebookState,
    residual,
    valid,
    iters: int,
    skip,
    ema_sums: str = 'counts',
) -> CodebookState:
  """The codebook's first training batch: k-means on its valid residuals.

  residual: [N, D] float32 (no gradient); valid: [N] bool; skip: bool scalar,
  True once the codebook is initialized (or when the batch holds no valid
  frame). The EMA cluster sizes start at the clusters' counts (against the
  final centroids; the reference's are those of k-means' last assignment,
  before its final update of the means); ema_sums says
  how the EMA sums start: 'counts', centroid x count, as if every centroid
  had been seen with its cluster's count (the codebook keeps its scale at
  the first EMA step); 'reference', the centroids themselves, as the
  reference (its `init_embed_` copies `embed` into `embed_avg`), so that the
  first EMA step divides each code by about its count and a code of an
  empty cluster (count 0) is never chosen again. Reference: k-means init
  with 10 iterations on the first batch (vector_quantize_pytorch), here
  without the padded frames.
  """

  def init():
    centroids, counts = kmeans(
        key, residual, valid, state.codebook.shape[0], iters
    )
    sums = centroids if ema_sums == 'reference' else centroids * counts[:, None]
    return CodebookState(centroids, counts, sums)

  return jax.lax.cond(skip, lambda: state, init)


def ema_update(
    state: CodebookState, counts, sums, decay: float, eps: float, any_active
) -> CodebookState:
  """EMA of cluster sizes [K] and sums [K, D], then codebook = sums / sizes.

  counts, sums: this batch's `cluster_statistics`; any_active: bool scalar, False
  when the quantizer was dropped for the whole batch, which then leaves the
  state as it is. Sizes are Laplace-smoothed with eps, as the reference.
  """
  decay = jnp.where(any_active, decay, 1.0)
  cluster_size = decay * state.cluster_size + (1 - decay) * counts
  embed_sum = decay * state.embed_sum + (1 - decay) * sums
  k = cluster_size.shape[0]
  total_size = cluster_size.sum()
  smoothed = (cluster_size + eps) / (total_size + k * eps) * total_size
  codebook = jnp.where(
      any_active, embed_sum / smoothed[:, None], state.codebook
  )
  return CodebookState(codebook, cluster_size, embed_sum)


def revive_dead_codes(
    key, state: CodebookState, residual, weights, threshold: float, any_active
):
  """Replaces codes whose EMA cluster size is below threshold.

  Each dead code becomes a random valid residual of the batch (rows with
  weights > 0, [N]) and its EMA state is reset to `threshold` frames of that
  vector, so the same step's EMA cannot overwrite the revival (it runs after
  `ema_update`). Returns (state, number of codes replaced, int32 scalar).
  """
  dead = (state.cluster_size < threshold) & any_active
  fresh = residual[sample_valid(key, weights > 0, state.codebook.shape[0])]
  state = CodebookState(
      jnp.where(dead[:, None], fresh, state.codebook),
      jnp.where(dead, threshold, state.cluster_size),
      jnp.where(dead[:, None], fresh * threshold, state.embed_sum),
  )
  return state, dead.sum(dtype=jnp.int32)


def usage_statistics(counts):
  """Perplexity and used fraction of a batch's code counts [K].

  perplexity = exp(entropy of counts / sum); used = fraction of codes with a
  count > 0. No count at all gives perplexity 1 and used 0.
  """
  probs = counts / jnp.maximum(counts.sum(), 1.0)
  logp = jnp.log(jnp.where(probs > 0, probs, 1.0))
  return (
      jnp.exp(-jnp.sum(probs * logp)),
      jnp.mean((counts > 0).astype(jnp.float32)),
  )


REVIVALS = ('batch', 'reference')


@dataclasses.dataclass(frozen=True)
class RVQConfig:
  """The RVQ's hyperparameters, declared here only: the tokenizer's config
  (`asl_vq.models.tokenizer.TokenizerConfig`) extends this class and hands
  itself to `ResidualVQ`, and the run config's `model` block has the same
  field names (`vq_decay`, `vq_eps`: the names saved runs' config.json
  have). The defaults are the paper's.

  Attributes:
    num_quantizers: quantizers Q (each codes the residual of those before).
    codebook_size: codes K per quantizer.
    vq_decay: EMA decay of the cluster sizes and sums.
    vq_eps: Laplace smoothing of the cluster sizes.
    kmeans_iters: k-means iterations of the first training batch.
    dead_threshold: codes whose EMA cluster size falls below it are replaced
      by random frames of the batch, and their EMA state reset to that size
      (with revival 'batch').
    commit_grad: which commitment terms pull the input x. 'first' (the
      reference): the residual entering quantizer q >= 1 carries no gradient
      (the reference computes it from the straight-through output), so only
      quantizer 0's term reaches x. 'all': every active term does. The
      reported commit_loss is the same either way.
    revival: 'batch' (this project's): dead codes are revived as above, and
      the k-means start's EMA sums are centroid x count (`kmeans_start`), so
      codes keep their scale. 'reference': the reference as it runs, whose
      revival never takes effect (its `expire_codes_` replaces rows of
      `embed` that the same step's EMA then overwrites with
      `embed_avg / cluster_size`): no revival (`replaced` is 0), and the
      k-means start's EMA sums are the centroids.
  """

  num_quantizers: int = 4
  codebook_size: int = 1024
  vq_decay: float = 0.99
  vq_eps: float = 1e-5
  kmeans_iters: int = 10
  dead_threshold: float = 2.0
  commit_grad: str = 'first'
  revival: str = 'batch'


class ResidualVQ(nn.Module):
  """Residual VQ: quantizer q codes what quantizers < q left over.

  Quantizer dropout: `n_q` (int32 scalar, or [B] per example as in DAC) keeps
  the first n_q quantizers. All are computed (static shapes); the others add
  nothing to the output, the loss or the EMA, and their codes are -1, so that
  codes always say exactly which vectors were summed (`embed_codes` skips -1).

  Attributes:
    config: the hyperparameters (`RVQConfig`, or a config extending it).
    dim: the width D of the vectors quantized.
  """

  config: RVQConfig = RVQConfig()
  dim: int = 128

  @property
  def num_quantizers(self) -> int:
    return self.config.num_quantizers

  @property
  def codebook_size(self) -> int:
    return self.config.codebook_size

  def setup(self):
    q, k, d = self.num_quantizers, self.codebook_size, self.dim
    self.codebook = self.variable(
        'vq',
        'codebook',
        lambda: jax.random.normal(self.make_rng('params'), (q, k, d)),
    )
    self.cluster_size = self.variable('vq', 'cluster_size', jnp.zeros, (q, k))
    self.embed_sum = self.variable('vq', 'embed_sum', jnp.zeros, (q, k, d))
    self.initialized = self.variable(
        'vq', 'initialized', lambda: jnp.array(False)
    )

  def _active(self, n_q, batch):
    """[B, Q] bool: quantizer q is active for example b."""
    if n_q is None:
      return jnp.ones((batch, self.num_quantizers), bool)
    n_q = jnp.broadcast_to(jnp.asarray(n_q, jnp.int32), (batch,))
    return jnp.arange(self.num_quantizers)[None, :] < n_q[:, None]

  def embed_codes(self, codes, n_q=None):
    """[..., Q] codes -> [..., D]: sum of the first n_q quantizers' vectors.

    Codes of -1 (dropped quantizers) add nothing.
    """
    q = jnp.arange(self.num_quantizers)
    use = codes >= 0
    if n_q is not None:
      use &= q < n_q
    vectors = self.codebook.value[q, jnp.maximum(codes, 0)]
    return jnp.sum(jnp.where(use[..., None], vectors, 0.0), axis=-2)

  def __call__(self, x, mask, *, n_q=None, train: bool):
    """Quantizes x [B, T, D] -> (straight-through output, codes [B, T, Q], aux).

    aux: 'commit_loss' (scalar: per quantizer, squared distance between its
    input residual and the stop-gradient code, summed over dims and averaged
    over the valid active frames; then averaged over the quantizers active
    anywhere in the batch), and per quantizer [Q]: 'perplexity' of the batch
    code distribution, 'used' fraction of codes hit, 'replaced' dead codes
    revived this step (0 without an update); an unused quantizer has
    perplexity 1 and used 0.
    """
    c = self.config
    if c.commit_grad not in ('first', 'all'):
      raise errors.UserError(
          f"commit_grad must be 'first' or 'all', not " f'{c.commit_grad!r}'
      )
    if c.revival not in REVIVALS:
      raise errors.UserError(
          f"revival must be one of {', '.join(REVIVALS)}, not " f'{c.revival!r}'
      )
    b, t, d = x.shape
    update = (
        train
        and self.is_mutable_collection('vq')
        and not self.is_initializing()
    )
    x32 = x.astype(jnp.float32).reshape(b * t, d)
    valid = mask.reshape(b * t)
    active = jnp.repeat(self._active(n_q, b), t, axis=0)  # [N, Q]
    initialized = self.initialized.value
    skip_init = initialized | ~valid.any()  # A batch of padding cannot init.

    def quantize(carry, xs):
      residual, total = carry
      state, active_q, key = xs
      r = jax.lax.stop_gradient(residual)
      if update:
        k_init, k_revive = jax.random.split(key)
        state = kmeans_start(
            k_init,
            state,
            r,
            valid,
            c.kmeans_iters,
            skip_init,
            'reference' if c.revival == 'reference' else 'counts',
        )
      codes = nearest_code(r, state.codebook)
      quantized = state.codebook[codes]
      weights = valid.astype(jnp.float32) * active_q
      counts, sums = cluster_statistics(r, codes, weights, self.codebook_size)
      n = counts.sum()
      replaced = jnp.zeros((), jnp.int32)
      if update:
        state = ema_update(state, counts, sums, c.vq_decay, c.vq_eps, n > 0)
        if c.revival == 'batch':
          state, replaced = revive_dead_codes(
              k_revive, state, r, weights, c.dead_threshold, n > 0
          )
      commit = jnp.sum(weights * jnp.sum(jnp.square(residual - quantized), -1))
      perplexity, used = usage_statistics(counts)
      outputs = dict(
          state=state,
          codes=codes,
          any_active=n > 0,
          commit=commit / jnp.maximum(n, 1.0),
          perplexity=perplexity,
          used=used,
          replaced=replaced,
      )
      residual = residual - quantized
      if c.commit_grad == 'first':
        residual = jax.lax.stop_gradient(residual)
      carry = (residual, total + quantized * active_q[:, None])
      return carry, outputs

    keys = (
        jax.random.split(self.make_rng('vq'), self.num_quantizers)
        if update
        else None
    )
    state = CodebookState(
        self.codebook.value, self.cluster_size.value, self.embed_sum.value
    )
    xs = (state, active.T.astype(jnp.float32), keys)
    (_, total), out = jax.lax.scan(quantize, (x32, jnp.zeros_like(x32)), xs)

    if update:
      self.codebook.value, self.cluster_size.value, self.embed_sum.value = out[
          'state'
      ]
      self.initialized.value = initialized | valid.any()
    codes = jnp.where(active, out['codes'].T, -1).reshape(b, t, -1)
    n_active = out['any_active'].sum()
    aux = dict(
        commit_loss=(
            jnp.sum(jnp.where(out['any_active'], out['commit'], 0.0))
            / jnp.maximum(n_active, 1)
        ),
        perplexity=out['perplexity'],
        used=out['used'],
        replaced=out['replaced'],
    )
    total = total.reshape(b, t, d).astype(x.dtype)
    # Straight-through: the forward value is the code sum, d out / d x = I.
    return x + jax.lax.stop_gradient(total - x), codes, aux
