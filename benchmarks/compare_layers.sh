#!/usr/bin/env bash
# Every figure of the recurrent layers' performance targets (issue 5), recur and PyTorch 1.13 in
# one run:
#   1. training steps (forward + backward through time, loss = sum(output)) of one-layer LSTM
#      and GRU at XS (1,1000,16,16), S (16,200,64,64), M (64,100,256,256), L (64,50,512,512)
#      (B, T, I, H), RNN at XS and M, and inference forwards at M: bench_layers against
#      benchmarks/torch_layers.py, in ROUNDS interleaved rounds (odd rounds recur first, even
#      rounds PyTorch first, so slow drifts in machine load hit both); medians over all rounds;
#   2. the raw sgemm rate of a (64 x 2048) (2048 x 512) product (bench_layers' BM_Sgemm) and
#      the L training steps' nominal FLOP rate as a percentage of it;
#   3. the peak RSS growth of the M training step: benchmarks/step_memory against
#      torch_layers.py --memory, a fresh process per case.
# Everything runs pinned to one core, single-threaded, in float32, batch_first. It builds
# bench_layers and step_memory (Release, in build-bench) first, then prints the machine, the
# date, the command, and the tables with each target and whether it is met.
#
#   benchmarks/compare_layers.sh                        # about 5 minutes on 2 cores
#   MD_OUT=table.md benchmarks/compare_layers.sh        # also the tables as Markdown
#
# Environment: BUILD_DIR (default <repo>/build-bench), BUILD_JOBS (default 1), CPU (core to pin
# to, default 0), ROUNDS (default 5), REPETITIONS (bench_layers repetitions per round, default
# 3), STEPS (timed PyTorch steps per case per round, default 5, after 2 warm-up steps), MIN_TIME
# (bench_layers seconds per repetition, default 0.2), MEMORY_STEPS (training steps of each
# memory case, default 3), NO_BUILD=1 (run the existing binaries as they are), PYTHON (an
# interpreter with torch, default /usr/bin/python3), MD_OUT (write the tables as Markdown
# there). Times are CPU time (the machine may be shared: CPU time does not count time spent
# descheduled); the wall/CPU ratio is printed as a load gauge.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
cpu=${CPU:-0}
rounds=${ROUNDS:-5}
reps=${REPETITIONS:-3}
steps=${STEPS:-5}
min_time=${MIN_TIME:-0.2}
memory_steps=${MEMORY_STEPS:-3}
python=${PYTHON:-/usr/bin/python3}
bench=$build/benchmarks/bench_layers
step_memory=$build/benchmarks/step_memory
memory_size=(64 100 256 256)  # M

# The command as given, with the knobs set in the environment.
command=""
for knob in BUILD_DIR BUILD_JOBS CPU ROUNDS REPETITIONS STEPS MIN_TIME MEMORY_STEPS NO_BUILD PYTHON MD_OUT; do
  if [[ -n ${!knob+set} ]]; then command+="$knob=$(printf '%q' "${!knob}") "; fi
done
command+="$0"
if (($#)); then command+=" $(printf '%q ' "$@")"; fi
start=$(date '+%Y-%m-%d %H:%M %Z')
started=$SECONDS

if [[ ${NO_BUILD:-0} != 1 ]]; then  # configure once, then an incremental build of the benchmarks
  if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DRECUR_BUILD_TESTS=OFF -DRECUR_BUILD_EXAMPLES=OFF >&2
  fi
  cmake "$build" >/dev/null  # picks up benchmark targets added since the configure
  cmake --build "$build" -j"${BUILD_JOBS:-1}" --target bench_layers step_memory >&2
fi
"$python" -c 'import torch' 2>/dev/null || { echo "compare_layers.sh: $python has no torch (set PYTHON)" >&2; exit 1; }

out=$(mktemp -d "${TMPDIR:-/tmp}/compare_layers.XXXXXX")
trap 'rm -rf "$out"' EXIT
pin=(env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c "$cpu")

run_recur() {
  "${pin[@]}" "$bench" --benchmark_repetitions="$reps" --benchmark_min_time="$min_time" \
    --benchmark_out="$out/recur.$1.json" --benchmark_out_format=json >/dev/null 2>"$out/recur.$1.err" ||
    { cat "$out/recur.$1.err" >&2; exit 1; }
}
run_torch() {
  "${pin[@]}" "$python" "$root/benchmarks/torch_layers.py" --steps "$steps" --json "$out/torch.$1.json" >/dev/null
}
load() { cut -d' ' -f1-3 /proc/loadavg; }

load_before=$(load)
for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then run_recur "$r"; run_torch "$r"; else run_torch "$r"; run_recur "$r"; fi
  echo "round $r/$rounds done ($((SECONDS - started)) s), load average $(load)" >&2
done
for kind in lstm gru; do  # peak memory: a fresh process per case
  "${pin[@]}" "$step_memory" "$kind" "${memory_size[@]}" "$memory_steps" >"$out/memory.recur.$kind.json"
  "${pin[@]}" "$python" "$root/benchmarks/torch_layers.py" --memory "$kind" --size "${memory_size[@]}" \
    --memory-steps "$memory_steps" >"$out/memory.torch.$kind.json"
done
echo "memory done ($((SECONDS - started)) s)" >&2

cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
logical=$(grep -c '^processor' /proc/cpuinfo)
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2-) "
case $flags in *" avx512f "*) isa=", AVX-512" ;; *" avx2 "*) isa=", AVX2" ;; *) isa="" ;; esac
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$root" diff --quiet HEAD 2>/dev/null || revision+=" with uncommitted changes"
report=(
  --header "Machine: ${cpu_model:-unknown CPU}$isa, $logical logical cores ($(nproc) available); pinned to core $cpu, 1 thread"
  --header "Date: $start; recur $revision; $rounds interleaved rounds in $((SECONDS - started)) s, load average $load_before before, $(load) after"
  --header "Command: $command"
  --header "recur: ${pin[*]} ${bench#"$root"/} --benchmark_repetitions=$reps --benchmark_min_time=$min_time; ${step_memory#"$root"/} KIND ${memory_size[*]} $memory_steps"
  --header "PyTorch: ${pin[*]} $python benchmarks/torch_layers.py --steps $steps; --memory KIND --memory-steps $memory_steps"
)
if [[ -n ${MD_OUT:-} ]]; then report+=(--md "$MD_OUT"); fi
"$python" "$root/benchmarks/layers_report.py" "$out" "${report[@]}"
