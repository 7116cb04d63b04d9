#!/usr/bin/env bash
# seedkl study on every worker of a Cloud TPU VM pod slice (one process per worker, all its chips).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh install
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh run --preset=polypythia \
#       --text=/mnt/shared/eval.txt --out=/mnt/shared/study
#
# `install` copies this checkout to ~/seedkl on every worker and installs it with a TPU jax;
# `run` starts launch/multihost.py on all workers at once (jax.distributed finds the coordinator and
# the worker ids from the TPU metadata, so no --coordinator). --out, --text and $SEEDKL_CACHE must be
# on storage every worker sees (Filestore/NFS mount, or a GCS FUSE mount) — each worker writes its
# own groups there and worker 0 reads them all to write the outputs. Flags after `run` go to
# multihost.py unchanged, e.g. --multihost_mode=global to run each group over all chips of the pod
# (few groups, long texts; see launch/README.md).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REPO=$(cd "$(dirname "$0")/.." && pwd)
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all --command="$1"
}

case "${1:-}" in
  install)
    tar -C "$REPO" --exclude=.git --exclude=.venv --exclude='*.egg-info' -czf /tmp/seedkl-src.tgz .
    gcloud compute tpus tpu-vm scp /tmp/seedkl-src.tgz "$TPU_NAME":/tmp/seedkl-src.tgz \
      --zone="$ZONE" $PROJECT_FLAG --worker=all
    ssh_all "mkdir -p ~/seedkl && tar -xzf /tmp/seedkl-src.tgz -C ~/seedkl && \
      python3 -m venv ~/seedkl/.venv && ~/seedkl/.venv/bin/pip install -q -U pip && \
      ~/seedkl/.venv/bin/pip install -q -e \"\$HOME/seedkl[pos]\" 'jax[tpu]'"
    ;;
  run)
    shift
    args=$(printf '%q ' "$@")
    ssh_all "cd ~/seedkl && SEEDKL_CACHE=\${SEEDKL_CACHE:-\$HOME/.cache/seedkl} \
      .venv/bin/python launch/multihost.py $args"
    ;;
  *)
    echo "usage: TPU_NAME=... ZONE=... $0 install | run <seedkl run flags>" >&2
    exit 2
    ;;
esac
