#!/usr/bin/env bash
# Runs the same training command on every worker of a Cloud TPU VM slice.
#
#   launch/tpu_vm.sh TPU_NAME ZONE configs/tokenizer.py gs://bucket/runs/rvq_ctc \
#       [--config.data.dir=/mnt/data/asl-fingerspelling ...]
#
# Copies this checkout (its git-tracked files) to every worker, installs it
# with JAX for TPU and the `gcs` extra (gs:// paths), and starts
# `python -m asl_vq.main --distributed` on all workers at once:
# jax.distributed.initialize() finds the slice's coordinator itself. The
# workdir should be shared: a gs:// URL, written with the TPU VM's service
# account. The dataset directory is a gs:// URL too or exists on every worker
# (a mounted disk). Run it again to resume.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [extra flags...]" >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
EXTRA=""
if [[ $# -gt 0 ]]; then EXTRA=$(printf ' %q' "$@"); fi
ROOT=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
TARBALL=$(mktemp --suffix=.tar.gz)
git -C "$ROOT" ls-files -z | tar -C "$ROOT" --null -T - -czf "$TARBALL"

gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU_NAME:asl_vq.tar.gz" \
  --zone="$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
  --command="set -e
    mkdir -p asl_vq && tar -xzf asl_vq.tar.gz -C asl_vq && cd asl_vq
    python3 -m venv ~/asl_vq_venv && . ~/asl_vq_venv/bin/activate
    pip install -q -U pip && pip install -q -e '.[gcs]' 'jax[tpu]'
    python -m asl_vq.main --distributed --config=$CONFIG --workdir=$WORKDIR$EXTRA"
rm -f "$TARBALL"
