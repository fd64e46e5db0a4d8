#!/usr/bin/env bash
# The bf16 targets (issue 13): recur's natural loops in f32 and under Precision::bf16 beside
# oneDNN's RNN primitive in f32 and bf16 (onednn_layers --dtype bf16), one-layer LSTM and GRU,
# training steps and inference forwards, in ROUNDS rounds, recur and oneDNN case by case
# (seconds apart, the order alternating by round); medians over all rounds.
# Prints per (size, cell, mode): the four times and the ratios recur f32 / recur bf16 (targets:
# >= 1.5 training, >= 1.8 inference at M and L) and oneDNN bf16 / recur bf16 (target >= 1.0).
# Pinned to one core, one thread (OMP_NUM_THREADS=1), like compare_layers.sh.
#
#   benchmarks/compare_bf16.sh                 # S, M, L; about 5 minutes on a quiet core
#   SIZES="S M" ROUNDS=3 benchmarks/compare_bf16.sh
#
# Environment: BUILD_DIR (default <repo>/build-bench), BUILD_JOBS (default 1), CPU (default 0),
# ROUNDS (default 3), REPETITIONS (default 1), MIN_TIME (default 0.2), SIZES (any of XS S M L,
# default "S M L"), NO_BUILD=1 (run the existing binaries). The benchmarks inherit the rest:
# RECUR_BF16_KERNEL=onednn keeps recur's small bf16 products off its own kernel (README
# "Reduced precision"), for the same table without it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
cpu=${CPU:-0}
rounds=${ROUNDS:-3}
reps=${REPETITIONS:-1}
min_time=${MIN_TIME:-0.2}
sizes=${SIZES:-S M L}

if [[ ${NO_BUILD:-0} != 1 ]]; then
  if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DRECUR_BUILD_TESTS=OFF -DRECUR_BUILD_EXAMPLES=OFF >&2
  fi
  cmake "$build" >/dev/null
  cmake --build "$build" -j"${BUILD_JOBS:-1}" --target bench_layers onednn_layers >&2
fi

declare -A batch=([XS]=1 [S]=16 [M]=64 [L]=64) steps=([XS]=1000 [S]=200 [M]=100 [L]=50) width=([XS]=16 [S]=64 [M]=256 [L]=512)

out=$(mktemp -d "${TMPDIR:-/tmp}/compare_bf16.XXXXXX")
trap 'rm -rf "$out"' EXIT
pin=(env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c "$cpu")
run() {  # run NAME BINARY ARGS...
  local name=$1; shift
  "${pin[@]}" "$@" --benchmark_repetitions="$reps" --benchmark_min_time="$min_time" \
    --benchmark_out="$out/$name.json" --benchmark_out_format=json >/dev/null 2>"$out/$name.err" ||
    { cat "$out/$name.err" >&2; exit 1; }
}
# Case by case (size, mode, cell): recur's f32 and bf16 loops, then oneDNN's f32 and bf16
# primitives, seconds apart (which goes first alternates by round), so that a drift in the
# machine's load hits both sides of a ratio alike.
run_round() {  # run_round ROUND
  local k=0 size mode kind shape recur_filter onednn_filter
  for size in $sizes; do
    shape="B:${batch[$size]}/T:${steps[$size]}/I:${width[$size]}/H:${width[$size]}"
    for mode in Train Infer; do
      for kind in lstm gru; do
        k=$((k + 1))
        recur_filter="^BM_$mode/$kind/(natural|bf16)/$shape\$"
        onednn_filter="^BM_$mode(Bf16)?/$kind/$shape\$"
        if (($1 % 2)); then
          run "recur.$1.$k" "$build/benchmarks/bench_layers" --benchmark_filter="$recur_filter"
          run "onednn.$1.$k" "$build/benchmarks/onednn_layers" --dtype bf16 --benchmark_filter="$onednn_filter"
        else
          run "onednn.$1.$k" "$build/benchmarks/onednn_layers" --dtype bf16 --benchmark_filter="$onednn_filter"
          run "recur.$1.$k" "$build/benchmarks/bench_layers" --benchmark_filter="$recur_filter"
        fi
      done
    done
  done
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date '+%Y-%m-%d %H:%M %Z')
for ((r = 1; r <= rounds; r++)); do
  run_round "$r"
  echo "round $r/$rounds done, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
echo "Machine: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), pinned to core $cpu, 1 thread"
echo "Date: $start; recur $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?"); $rounds rounds; load average $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after"
python3 - "$out" <<'PY'
import glob, json, statistics, sys
from collections import defaultdict
times = defaultdict(list)  # (mode, kind, column, size) -> CPU ms
for path in glob.glob(sys.argv[1] + "/*.json"):
    source = "recur" if "/recur." in path else "onednn"
    for b in json.load(open(path))["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        parts = b["run_name"].split("/")
        mode, kind = parts[0], parts[1]
        size = "/".join(p for p in parts if ":" in p)
        if source == "recur":
            column = "recur " + ("f32" if parts[2] == "natural" else "bf16")
        else:
            column = "oneDNN " + ("bf16" if mode.endswith("Bf16") else "f32")
            mode = mode.replace("Bf16", "")
        times[(mode[3:].lower(), kind, column, size)].append(b["cpu_time"])
names = {"B:1/T:1000/I:16/H:16": "XS", "B:16/T:200/I:64/H:64": "S", "B:64/T:100/I:256/H:256": "M", "B:64/T:50/I:512/H:512": "L"}
cols = ["recur f32", "recur bf16", "oneDNN f32", "oneDNN bf16"]
print("| size | cell | mode | " + " | ".join(c + " ms" for c in cols) + " | recur f32/bf16 | oneDNN bf16/recur bf16 |")
print("|---|---|---|" + "---|" * (len(cols) + 2))
keys = sorted({(k[3], k[1], k[0]) for k in times}, key=lambda k: (list(names).index(k[0]) if k[0] in names else 9, k[1], k[2]))
for size, kind, mode in keys:
    med = {c: statistics.median(times[(mode, kind, c, size)]) if times[(mode, kind, c, size)] else None for c in cols}
    fmt = lambda v: "-" if v is None else f"{v:.3g}"
    ratio = lambda a, b: "-" if a is None or b is None else f"{a / b:.2f}"
    print(f"| {names.get(size, size)} | {kind.upper()} | {mode} | " + " | ".join(fmt(med[c]) for c in cols) +
          f" | {ratio(med['recur f32'], med['recur bf16'])} | {ratio(med['oneDNN bf16'], med['recur bf16'])} |")
print("\nms: median CPU time of one step over all rounds and repetitions. recur: the natural loop (a fresh Tape each "
      "step; bf16: TapeOptions{.precision = Precision::bf16}). Targets: recur f32/bf16 >= 1.5 training and >= 1.8 "
      "inference at M and L; oneDNN bf16/recur bf16 >= 1.0 everywhere.")
PY
