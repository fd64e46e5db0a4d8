#!/usr/bin/env bash
# Every figure of the recurrent layers' performance targets (issues 5 and 9): recur, oneDNN and
# PyTorch 1.13 in one run:
#   1. training steps (forward + backward through time, loss = sum(output)) and inference
#      forwards of one-layer LSTM and GRU at XS (1,1000,16,16), S (16,200,64,64),
#      M (64,100,256,256), L (64,50,512,512) (B, T, I, H), RNN training at XS and M and
#      inference at M: bench_layers (recur's natural loop, a fresh Tape each step with default
#      options and tape.constant, and its tuned loop, the README's: one reused tape,
#      retain_grads = false, tape.view), onednn_layers (oneDNN's lstm / lbr_gru primitives, f32)
#      and benchmarks/torch_layers.py, in ROUNDS rounds; within a round recur and oneDNN run
#      case by case, each case's two programs seconds apart (which goes first alternates by
#      round), so a drift in machine load hits both sides of a ratio alike; PyTorch runs its
#      cases before or after them; medians over all rounds;
#   2. the raw sgemm rate of a (64 x 2048) (2048 x 512) product (bench_layers' BM_Sgemm, OpenBLAS,
#      and BM_SgemmOneDNN, oneDNN's dnnl_sgemm; the faster counts) and
#      the L training steps' nominal FLOP rate as a percentage of it;
#   3. the peak RSS growth of the M training step: benchmarks/step_memory (natural and tuned
#      loops) against torch_layers.py --memory, a fresh process per case.
# Everything runs pinned to one core, single-threaded (OMP_NUM_THREADS=1 also holds oneDNN's
# OpenMP runtime to one thread), in float32, batch_first. It builds bench_layers, onednn_layers
# and step_memory (Release, in build-bench) first, then prints the machine, the date, the
# command, and the tables with each target and whether it is met. The recur column the targets
# are checked on is the natural loop.
#
#   benchmarks/compare_layers.sh                        # about 10 minutes on 2 cores
#   MD_OUT=table.md benchmarks/compare_layers.sh        # also the tables as Markdown
#
# Environment: BUILD_DIR (default <repo>/build-bench), BUILD_JOBS (default 1), CPU (core to pin
# to, default 0), ROUNDS (default 3), REPETITIONS (repetitions per round of bench_layers and
# onednn_layers, default 3), STEPS (timed PyTorch steps per case per round, default 5, after 2
# warm-up steps), MIN_TIME (Google Benchmark seconds per repetition, default 0.2), MEMORY_STEPS
# (training steps of each memory case, default 3), NO_BUILD=1 (run the existing binaries as they
# are), PYTHON (an interpreter with torch, default /usr/bin/python3), MD_OUT (write the tables as
# Markdown there), OPENBLAS_CORETYPE (passed on: OpenBLAS's kernel set, e.g. SkylakeX, for recur
# and PyTorch alike; the header shows the one in use). Times are CPU time (the machine may be shared: CPU time does not count time
# spent descheduled); the wall/CPU ratio is printed as a load gauge.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
cpu=${CPU:-0}
rounds=${ROUNDS:-3}
reps=${REPETITIONS:-3}
steps=${STEPS:-5}
min_time=${MIN_TIME:-0.2}
memory_steps=${MEMORY_STEPS:-3}
python=${PYTHON:-/usr/bin/python3}
bench=$build/benchmarks/bench_layers
onednn=$build/benchmarks/onednn_layers
step_memory=$build/benchmarks/step_memory
memory_size=(64 100 256 256)  # M

# The command as given, with the knobs set in the environment.
command=""
for knob in BUILD_DIR BUILD_JOBS CPU ROUNDS REPETITIONS STEPS MIN_TIME MEMORY_STEPS NO_BUILD PYTHON MD_OUT OPENBLAS_CORETYPE; do
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
  cmake --build "$build" -j"${BUILD_JOBS:-1}" --target bench_layers onednn_layers step_memory >&2
fi
"$python" -c 'import torch' 2>/dev/null || { echo "compare_layers.sh: $python has no torch (set PYTHON)" >&2; exit 1; }

out=$(mktemp -d "${TMPDIR:-/tmp}/compare_layers.XXXXXX")
trap 'rm -rf "$out"' EXIT
pin=(env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c "$cpu")

# recur and oneDNN run case by case, next to each other (seconds apart, the order alternating
# by round), so that a drift in the machine's load hits both sides of a ratio alike; then
# recur's cases without a oneDNN counterpart (RNN, layer-normalised, bf16, the sgemms).
paired_cases=$("$onednn" --benchmark_list_tests 2>/dev/null | grep -E '^BM_(Train|Infer)/')
gbench() {  # gbench BINARY OUT_JSON FILTER
  "${pin[@]}" "$1" --benchmark_repetitions="$reps" --benchmark_min_time="$min_time" --benchmark_filter="$3" \
    --benchmark_out="$2" --benchmark_out_format=json >/dev/null 2>"$2.err" || { cat "$2.err" >&2; exit 1; }
}
run_paired() {  # run_paired ROUND: every oneDNN case beside recur's natural and tuned loops of it
  local k=0 case mode rest recur_filter onednn_filter
  while IFS= read -r case; do
    k=$((k + 1))
    mode=${case%%/*} rest=${case#*/}  # BM_Train  lstm/B:64/T:100/...
    recur_filter="^$mode/${rest%%/*}/(natural|tuned)/${rest#*/}\$"
    onednn_filter="^$case\$"
    if (($1 % 2)); then
      gbench "$bench" "$out/recur.$1.$k.json" "$recur_filter"
      gbench "$onednn" "$out/onednn.$1.$k.json" "$onednn_filter"
    else
      gbench "$onednn" "$out/onednn.$1.$k.json" "$onednn_filter"
      gbench "$bench" "$out/recur.$1.$k.json" "$recur_filter"
    fi
  done <<<"$paired_cases"
  gbench "$bench" "$out/recur.$1.rest.json" "-^BM_(Train|Infer)/(lstm|gru)/(natural|tuned)/"
}
run_torch() {
  "${pin[@]}" "$python" "$root/benchmarks/torch_layers.py" --steps "$steps" --json "$out/torch.$1.json" >/dev/null
}
load() { cut -d' ' -f1-3 /proc/loadavg; }

load_before=$(load)
for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then run_paired "$r"; run_torch "$r"; else run_torch "$r"; run_paired "$r"; fi
  echo "round $r/$rounds done ($((SECONDS - started)) s), load average $(load)" >&2
done
for kind in lstm gru; do  # peak memory: a fresh process per case
  for loop in natural tuned; do
    "${pin[@]}" "$step_memory" "$kind" "${memory_size[@]}" "$memory_steps" "$loop" >"$out/memory.recur.$loop.$kind.json"
  done
  "${pin[@]}" "$python" "$root/benchmarks/torch_layers.py" --memory "$kind" --size "${memory_size[@]}" \
    --memory-steps "$memory_steps" >"$out/memory.torch.$kind.json"
done
echo "memory done ($((SECONDS - started)) s)" >&2

cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
logical=$(grep -c '^processor' /proc/cpuinfo)
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2-) "
case $flags in *" avx512f "*) isa=", AVX-512" ;; *" avx2 "*) isa=", AVX2" ;; *) isa="" ;; esac
# The kernel set OpenBLAS picked (recur and PyTorch both call it): its DYNAMIC_ARCH build falls
# back to generic Prescott kernels on CPUs it does not know; OPENBLAS_CORETYPE overrides that.
openblas_core=$("$python" -c 'import ctypes; b = ctypes.CDLL("libopenblas.so.0"); b.openblas_get_corename.restype = ctypes.c_char_p; b.openblas_get_config.restype = ctypes.c_char_p; print(b.openblas_get_corename().decode(), "kernels,", b.openblas_get_config().decode().split(" NO_")[0])' 2>/dev/null || echo "?")
dnnl_version=$(dpkg-query -W -f '${Version}' libdnnl-dev 2>/dev/null || echo "?")
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$root" diff --quiet HEAD 2>/dev/null || revision+=" with uncommitted changes"
report=(
  --header "Machine: ${cpu_model:-unknown CPU}$isa, $logical logical cores ($(nproc) available); pinned to core $cpu, 1 thread"
  --header "Date: $start; recur $revision; $rounds interleaved rounds in $((SECONDS - started)) s, load average $load_before before, $(load) after"
  --header "Command: $command"
  --header "recur: ${pin[*]} ${bench#"$root"/} --benchmark_repetitions=$reps --benchmark_min_time=$min_time; ${step_memory#"$root"/} KIND ${memory_size[*]} $memory_steps natural|tuned"
  --header "oneDNN $dnnl_version: ${pin[*]} ${onednn#"$root"/} --benchmark_repetitions=$reps --benchmark_min_time=$min_time"
  --header "OpenBLAS (recur's and PyTorch's BLAS): $openblas_core (OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE-unset})"
  --header "PyTorch: ${pin[*]} $python benchmarks/torch_layers.py --steps $steps; --memory KIND --memory-steps $memory_steps"
)
while IFS= read -r check; do report+=(--header "${check#onednn_layers }"); done < <(cat "$out"/onednn.1.*.err | grep '^onednn_layers check' | awk '!seen[$0]++')
if [[ -n ${MD_OUT:-} ]]; then report+=(--md "$MD_OUT"); fi
"$python" "$root/benchmarks/layers_report.py" "$out" "${report[@]}"
