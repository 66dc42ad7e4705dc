#!/usr/bin/env bash
# Throughput of the paper-size tokenizer on one GPU or TPU chip, in float32
# and bfloat16 compute (config.model.dtype), in under 5 minutes.
#
#   pip install -e . 'jax[cuda12]'    # NVIDIA GPU ('jax[cuda13]' with a
#                                     # CUDA 13 driver; 'jax[tpu]' on a TPU VM)
#   launch/device_bench.sh [extra asl_vq.bench flags]
#
# Per dtype, `asl_vq.bench` prints one line per shape (train and encode
# frames/s, k-means init, compile) at the paper's shapes (22x196: one GPU's
# batch; 32x256: encoding) and at 44x384 (the paper's global batch at
# max_len), then one epoch-equivalent of training at 44x384: 1,222
# consecutive steps = 0.8 x 67,208 Kaggle training sequences / 44, every
# batch padded to 384 frames (the real epoch's bucketed batches are shorter:
# an upper bound on its time). Each dtype is cut off after 140 s. With
# --profile_dir=DIR, each shape and dtype also leaves a jax.profiler trace
# in DIR/BATCHxFRAMES-DTYPE (per-op times; XProf, TensorBoard or Perfetto);
# writing the traces counts against the 140 s, so the epoch line may be cut.
set -uo pipefail
cd "$(dirname "$0")/.."
python -c 'import jax; print("jax", jax.__version__, jax.devices())'
for dtype in float32 bfloat16; do
  timeout 140 python -m asl_vq.bench --dtype="$dtype" \
    --shapes=22x196,32x256,44x384 --steps=20 --epoch_steps=1222 "$@" \
    || echo "bench --dtype=$dtype: exit $? (124: cut off at 140 s)"
done
