#!/usr/bin/env bash
# One command for whoever holds a CUDA GPU (<= 9 min): the paper's full configuration for real
# (benchmarks/paper_scale.py: 5 sizes x 20 steps x 5 seeds, fp16 synthetic checkpoints hard-linked
# across steps), a reduced pipeline-vs-reference run (14m + 70m, 2 steps x 5 seeds, the 4.7k-token
# text), the roofline (14m, 70m, 160m shapes) and the kernel's KL forms (time and error vs float64)
# and recompute-vs-cached logits, every figure appended to one file.
#
#   benchmarks/gpu_check.sh [OUTFILE]   # default $OUT/gpu_check.txt when $OUT is set, else ./gpu_check.txt
#
# Installs jax[cuda12] only if the installed jax has no GPU backend, and the package's own
# dependencies only if one is missing (offline: put wheels in ./.whl and they are used instead).
# Each step has a time limit; a step that fails is logged and the next one still runs.
# The paper's Pile sample is read from ../shared (or $SEEDKL_SHARED, e.g. a copy carried along);
# without it the benchmarks use a synthetic text of the same length.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTFILE=${1:-${OUT:+$OUT/gpu_check.txt}}
OUTFILE=${OUTFILE:-gpu_check.txt}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # honest device peaks; torch and jax run in turn
log() { echo "$*" | tee -a "$OUTFILE"; }
step() {  # step LIMIT_S CMD...: run with a limit, output to the screen and the file
  local limit=$1; shift
  log "-- $* (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | grep -v -e 'Warning' -e 'warn(' | tee -a "$OUTFILE"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || log "!! exit $rc (124 = over its time limit)"
}

log "== seedkl gpu_check $(date -u +%FT%TZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$OUTFILE"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/seedkl-site .whl/*.whl >>"$OUTFILE" 2>&1 \
    && export PYTHONPATH="/tmp/seedkl-site:$PYTHONPATH"
fi
SMOKE=${SEEDKL_GPU_CHECK_SMOKE:-}   # set: a quick run of this script on any machine, no installs
if [ -z "$SMOKE" ] && ! $PY -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  log "jax has no GPU backend here: installing jax[cuda12]"
  $PY -m pip install -q -U 'jax[cuda12]' >>"$OUTFILE" 2>&1 || log "!! pip install jax[cuda12] failed"
fi
if [ -z "$SMOKE" ] && ! $PY -c 'import polars, pyarrow, orbax.checkpoint, flax, transformers, tokenizers, safetensors, torch, absl, tqdm, matplotlib' 2>/dev/null; then
  log "installing the package's dependencies"
  $PY -m pip install -q -e . >>"$OUTFILE" 2>&1 || log "!! pip install -e . failed (offline?): later steps may fail"
fi
$PY - <<'EOF' 2>&1 | tee -a "$OUTFILE"
import jax, torch
print(f"jax {jax.__version__} backend {jax.default_backend()} devices {jax.devices()}; "
      f"torch {torch.__version__} cuda {torch.cuda.is_available()}")
EOF

# Most important first: a step cut off by its limit still leaves the lines it printed.
PAPER=(--run_sizes=14m,31m,70m,160m,410m --run_steps=20 --nocold)
PIPE=(--sizes=14m,70m --steps=0,143000 --seeds=1,3,5,7,9)
ROOF=(--sizes=14m,70m,160m --seeds=5 --tokens=2048)
KERN=(--sections=3,4 --seeds=5 --tokens=2048 --cache_blocks=256,1024 --cache_forms=pair,einsum)
if [ -n "$SMOKE" ]; then
  PAPER=(--run_sizes=14m --run_steps=2 --seeds=2)
  PIPE=(--quick); ROOF=(--sizes=14m --seeds=2 --tokens=128)
  KERN=(--sections=4 --seeds=2 --tokens=128 --cache_blocks=64 --repeats=1)
fi
step 250 "$PY" benchmarks/paper_scale.py "${PAPER[@]}" --workdir=/tmp/seedkl-gpu-paper --out="$OUTFILE.paper"
step 170 "$PY" benchmarks/pipeline_vs_reference.py "${PIPE[@]}" --workdir=/tmp/seedkl-gpu-check \
  --out="$OUTFILE.pipeline"
step 60 "$PY" benchmarks/roofline.py "${ROOF[@]}" --out="$OUTFILE.roofline"
step 50 "$PY" benchmarks/kernel_vs_naive.py "${KERN[@]}"
log "-- raw records (JSON)"
grep -h '^[[{]' "$OUTFILE.paper" "$OUTFILE.roofline" "$OUTFILE.pipeline" >>"$OUTFILE" 2>/dev/null
rm -f "$OUTFILE.paper" "$OUTFILE.roofline" "$OUTFILE.pipeline"
log "== done $(date -u +%FT%TZ); figures in $OUTFILE"
