#!/usr/bin/env bash
# Reproduces the engine's speed baseline with one command: builds bench_engine if needed, runs
# it pinned to one core and single-threaded with 5 repetitions, and prints the medians followed
# by a pass/miss summary against the targets.
#
#   benchmarks/run_engine.sh                       # everything
#   benchmarks/run_engine.sh --benchmark_filter=Matmul
#
# Environment: BUILD_DIR (default <repo>/build-bench), CPU (core to pin to, default 0),
# REPETITIONS (default 5), NO_BUILD=1 (run the existing binary as is). Extra arguments go to
# the benchmark program. Figures are CPU time; the machine may be shared, so compare medians.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
cpu=${CPU:-0}
reps=${REPETITIONS:-5}
bin=$build/benchmarks/bench_engine

if [[ ${NO_BUILD:-0} != 1 ]]; then  # configure once, then an incremental build of the benchmark
  if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DRECUR_BUILD_TESTS=OFF -DRECUR_BUILD_EXAMPLES=OFF
  fi
  cmake --build "$build" -j2 --target bench_engine >&2
fi

json=$(mktemp "${TMPDIR:-/tmp}/bench_engine.XXXXXX.json")
trap 'rm -f "$json"' EXIT

echo "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c $cpu $bin --benchmark_repetitions=$reps --benchmark_report_aggregates_only=true $*"
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c "$cpu" "$bin" \
  --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true \
  --benchmark_out="$json" --benchmark_out_format=json "$@" |
  grep -E '^(Benchmark|-{10,}|Run on|Load Average)|_median'

command -v python3 >/dev/null || exit 0
python3 - "$json" <<'PY'
import json, sys

runs = json.load(open(sys.argv[1]))["benchmarks"]
med = {r["run_name"]: r for r in runs if r.get("aggregate_name") == "median"}

def get(name, counter):
    r = med.get(name)
    return None if r is None else r.get(counter)

rows = []
def check(label, value, ok, shown):
    if value is not None:
        rows.append((label, shown, "pass" if ok else "MISS"))

print("\nTargets (medians of CPU time):")
for name, r in med.items():
    if name.startswith("BM_TapeOverhead_") and "RawMath" not in name:
        ns = r["per_node"] * 1e9
        check(f"{name}  <= 200 ns/node", ns, ns <= 200, f"{ns:7.1f} ns/node")
for fwd, ref in [("BM_Matmul_Forward/M:64/K:256/N:1024", "BM_Matmul_RawSgemm/M:64/K:256/N:1024"),
                 ("BM_Matmul_ForwardBackward/M:64/K:256/N:1024",
                  "BM_Matmul_RawSgemmForwardBackward/M:64/K:256/N:1024")]:
    a, b = get(fwd, "FLOPS"), get(ref, "FLOPS")
    if a is not None and b is not None:
        check(f"{fwd}  >= 95% of sgemm", a, a >= 0.95 * b,
              f"{a / 1e9:6.1f} vs {b / 1e9:6.1f} GFLOP/s ({100 * a / b:5.1f}%)")
for name, r in med.items():
    if name.startswith(("BM_Unary_", "BM_Binary_")):
        e = r["elems"]
        check(f"{name}  >= 1 G elem/s", e, e >= 1e9, f"{e / 1e9:6.2f} G elem/s")
width = max((len(l) for l, _, _ in rows), default=0)
for label, shown, verdict in rows:
    print(f"  {label:<{width}}  {shown}  {verdict}")
PY
