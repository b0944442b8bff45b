#!/usr/bin/env bash
# IL per epoch, ours against PCX 0.6.3 (jitted JAX), side by side on one machine, in alternating
# rounds: Fashion-MNIST, 784-128-128-10 sigmoid, T = 20, gamma 0.1, batch 128, MSE, 2 epochs.
#
# Usage: benchmarks/il_vs_pcx.sh [PCX_PYTHON] [ROUNDS] [EPOCHS]
#   PCX_PYTHON  python of an environment with pcx==0.6.3 (default /work/pcxenv/bin/python); when it
#               is absent or cannot import pcx, PCX is skipped (said so) and ours still run
#   ROUNDS      alternating rounds (default 3); the summary is the median over them
#   EPOCHS      epochs per run (default 2); PCX reports its epochs after the first (its jit compile),
#               ours every epoch (epoch 1 includes our torch.compile when COMPILE=1)
# Environment:
#   BIOPROP      the bioprop command (default: `$PYTHON -m bioprop`)
#   PYTHON       python that runs bioprop and parses the results (default: python3)
#   PCX_SCRIPT   the PCX benchmark (default ../shared/tools/pcx_il_bench.py beside the repository, else
#                /work/shared/tools/pcx_il_bench.py)
#   COMPILE=1    also time `--compile` (the torch.compile'd inference loop)
#   THREADS=1    both on one thread (ours OMP_NUM_THREADS=1; PCX XLA_FLAGS without Eigen's thread pool):
#                on a loaded machine torch's two-thread products wait on descheduled threads (a step
#                can take 10x longer), so one thread each is the comparison the load distorts least
# Check `uptime` first: on a loaded machine every figure moves (the load is printed per run).
set -euo pipefail

PCX_PYTHON=${1:-/work/pcxenv/bin/python}
ROUNDS=${2:-3}
EPOCHS=${3:-2}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIOPROP=${BIOPROP:-"$PYTHON -m bioprop"}
if [[ -z "${PCX_SCRIPT:-}" ]]; then
    PCX_SCRIPT="$HERE/../shared/tools/pcx_il_bench.py"
    [[ -f "$PCX_SCRIPT" ]] || PCX_SCRIPT=/work/shared/tools/pcx_il_bench.py
fi

have_pcx=1
if [[ ! -x "$PCX_PYTHON" ]]; then
    echo "PCX skipped: no python at $PCX_PYTHON (give the python of an env with pcx==0.6.3 as the first argument)"
    have_pcx=0
elif ! "$PCX_PYTHON" -c "import pcx" 2>/dev/null; then
    echo "PCX skipped: $PCX_PYTHON cannot import pcx (pip install pcx==0.6.3 in that env)"
    have_pcx=0
elif [[ ! -f "$PCX_SCRIPT" ]]; then
    echo "PCX skipped: no PCX benchmark script at $PCX_SCRIPT (set PCX_SCRIPT)"
    have_pcx=0
fi

THREAD_ENV_OURS=
THREAD_ENV_PCX=
if [[ "${THREADS:-}" == 1 ]]; then
    THREAD_ENV_OURS="env OMP_NUM_THREADS=1"
    THREAD_ENV_PCX="env XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OMP_NUM_THREADS=1"
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.tsv"
load() { cut -d' ' -f1 /proc/loadavg; }

ours() {  # ours NAME EXTRA_FLAGS...
    local name=$1; shift
    local out="$WORK/$name"
    rm -rf "$out"
    local start_load; start_load=$(load)
    ${THREAD_ENV_OURS:-} $BIOPROP train --rule il --dataset fashion-mnist --hidden 128 128 --activation sigmoid --batch-size 128 \
        --gamma 0.1 --n-steps 20 --epochs "$EPOCHS" --loss mse --quiet --out "$out" "$@" > "$out.log" 2>&1 \
        || { echo "ours ($name) failed:"; tail -5 "$out.log"; return 1; }
    "$PYTHON" - "$out/metrics.jsonl" "$name" "$start_load" "$RESULTS" <<'EOF'
import json, sys
path, name, load, results = sys.argv[1:]
records = [json.loads(line) for line in open(path) if line.strip()]
seconds = [r["seconds"] for r in records if "seconds" in r]
accuracy = [r.get("test_acc") for r in records if "seconds" in r][-1]
steady = seconds[1:] or seconds
steady_median = sorted(steady)[len(steady) // 2]
print(f"  {name:<13} s/epoch {', '.join(f'{s:.2f}' for s in seconds)}  (steady {steady_median:.2f}; "
      f"test acc {accuracy}; load {load})")
open(results, "a").write(f"{name}\t{steady_median}\t{seconds[0]}\n")
EOF
}

pcx() {
    local start_load; start_load=$(load)
    local line
    line=$(${THREAD_ENV_PCX:-} "$PCX_PYTHON" "$PCX_SCRIPT" "$EPOCHS" 20 128 128 2>/dev/null | tail -1)
    echo "  pcx           $line (load $start_load)"
    "$PYTHON" - "$line" "$RESULTS" <<'EOF'
import re, sys
line, results = sys.argv[1:]
found = re.search(r"s/epoch ([0-9.]+) \(first ([0-9.]+)\)", line)
if found:
    open(results, "a").write(f"pcx\t{found.group(1)}\t{found.group(2)}\n")
EOF
}

echo "IL per epoch, Fashion-MNIST 784-128-128-10 sigmoid, T=20, gamma 0.1, batch 128, MSE, $EPOCHS epochs," \
     "$ROUNDS rounds; $(nproc) cores; threads ${THREADS:-default}; load now $(load)"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    [[ $have_pcx == 1 ]] && pcx
    ours eager
    [[ "${COMPILE:-0}" == 1 ]] && ours compiled --compile
done

echo "median over rounds, s/epoch after the first epoch (first epoch in brackets):"
"$PYTHON" - "$RESULTS" <<'EOF'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, steady, first = line.split("\t")
    rows.setdefault(name, []).append((float(steady), float(first)))
median = lambda values: sorted(values)[len(values) // 2]
for name, values in rows.items():
    print(f"  {name:<13} {median([s for s, _ in values]):.2f}  ({median([f for _, f in values]):.2f})")
if "pcx" in rows and "eager" in rows:
    ratio = median([s for s, _ in rows["eager"]]) / median([s for s, _ in rows["pcx"]])
    print(f"  ours (eager) / pcx: {ratio:.2f}")
EOF
