#!/usr/bin/env bash
# Every GPU check of the project in one go, for a briefly lent GPU (issue 16):
# the `gpu` tests, then the GPU benchmarks, each under its own time limit.
#
#     bash benchmarks/run_gpu.sh [LOGDIR]      # LOGDIR defaults to $OUT, else gpu-logs/
#
# Installs nothing: it needs numpy, scipy, numba (+ numba-cuda), cupy and pytest on the
# machine and runs the project from its checkout (PYTHONPATH).  Logs: one file per step
# and summary.txt (exit status and seconds of each step).  Total limit about 8 minutes.
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

step gpu-tests 200 python3 -m pytest -m gpu -q -p no:cacheprovider -W ignore::Warning tests
step bench-fibre 90 python3 benchmarks/bench_gpu_fibre.py
step bench-training 120 python3 benchmarks/bench_training.py --device gpu --fused
step bench-amp 60 python3 benchmarks/bench_amp.py --device gpu --max-iter 30
step curve-gpu 120 python3 -m smi curve --device gpu --output "$logs/curve_gpu.jsonl"
