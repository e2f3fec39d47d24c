#!/usr/bin/env bash
# Every GPU check of the project in one go, for a briefly lent GPU (issue 16):
# the `gpu` tests, then the GPU benchmarks, each under its own time limit.
#
#     bash benchmarks/run_gpu.sh [LOGDIR]      # LOGDIR defaults to $OUT, else gpu-logs/
#
# Installs nothing: it needs numpy, scipy, numba (+ numba-cuda), cupy and pytest on the
# machine and runs the project from its checkout (PYTHONPATH).  Logs: one file per step
# and summary.txt (exit status and seconds of each step).  Total limit 9 minutes;
# the steps not yet measured on a GPU come first.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
logs=${1:-${OUT:-gpu-logs}}
mkdir -p "$logs"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SMI_NO_CACHE=1 SMI_CACHE_DIR=/tmp/smi-cache MPLBACKEND=Agg

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" >"$logs/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc ${SECONDS}s-total $((SECONDS - t0))s" | tee -a "$logs/summary.txt"
    tail -n 25 "$logs/$name.log"
}

{
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version \
        --format=csv
    python3 -c "import numpy, numba, cupy; print('numpy', numpy.__version__, 'numba',
numba.__version__, 'cupy', cupy.__version__, 'cuda runtime',
cupy.cuda.runtime.runtimeGetVersion())"
    nproc; uptime
} >"$logs/machine.log" 2>&1
cat "$logs/machine.log"

# the issue's curve: 32 alpha from 0.05 to 1.6, both branches (target <= 15 s on the GPU),
# then the same on this machine's CPU cores, compared row by row within error
curve=(--alphas 0.05:1.6:0.05 --no-cache)
# -o addopts=: the project's "-n 2" needs pytest-xdist, which a bare GPU machine lacks
step gpu-tests 130 python3 -m pytest -o addopts= -m gpu -q -p no:cacheprovider \
    -W ignore::Warning tests
step bench-training 150 python3 benchmarks/bench_training.py --device gpu --fused
# cold: every process compiles its kernels (numba CPU and CUDA); warm: loaded from numba's
# on-disk cache, as in any later run on the machine
step curve-gpu 80 python3 -m smi curve --device gpu "${curve[@]}" --output "$logs/curve_gpu.jsonl"
step curve-gpu-warm 40 python3 -m smi curve --device gpu "${curve[@]}" \
    --output "$logs/curve_gpu_warm.jsonl"
step curve-cpu 60 python3 -m smi curve --device cpu "${curve[@]}" --output "$logs/curve_cpu.jsonl"
step curve-compare 10 python3 benchmarks/compare_curves.py "$logs/curve_gpu.jsonl" \
    "$logs/curve_cpu.jsonl"
# per-call times of the SE map at the curve's sizes (2^12 and 2^9 outer points): with the
# map calls of each branch (about 3 000 in all for the curve above; bench_curve.py prints
# them per row) they split the curve's time into kernels and the rest
step bench-map-gpu 25 python3 benchmarks/bench_curve.py --map --device gpu --repeat 3
step bench-fibre 25 python3 benchmarks/bench_gpu_fibre.py
step bench-amp 20 python3 benchmarks/bench_amp.py --device gpu --max-iter 30
