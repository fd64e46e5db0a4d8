#!/usr/bin/env bash
# recur's recurrent layers next to PyTorch, with one command: builds bench_layers (Release, in
# build-bench) if needed, then runs bench_layers and benchmarks/torch_layers.py pinned to one
# core and single-threaded, in ROUNDS interleaved rounds (odd rounds recur first, even rounds
# PyTorch first, so slow drifts in machine load hit both), and prints one table of medians over
# all rounds: size, module, step, recur ms, PyTorch ms, ratio (PyTorch time / recur time, > 1
# means recur is faster), GFLOP/s of each, and the spread of the samples.
#
#   benchmarks/compare_layers.sh
#   ROUNDS=5 benchmarks/compare_layers.sh
#
# Environment: BUILD_DIR (default <repo>/build-bench), CPU (core to pin to, default 0),
# ROUNDS (default 3), REPETITIONS (bench_layers repetitions per round, default 3), STEPS
# (timed PyTorch steps per case per round, default 5), MIN_TIME (bench_layers seconds per
# repetition, default 0.2), NO_BUILD=1 (run the existing binary as is), PYTHON (an interpreter
# with torch, default /usr/bin/python3). Figures are CPU time (the machine may be shared: CPU
# time does not count time spent descheduled); the wall/CPU ratio is printed as a load gauge.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
cpu=${CPU:-0}
rounds=${ROUNDS:-3}
reps=${REPETITIONS:-3}
steps=${STEPS:-5}
min_time=${MIN_TIME:-0.2}
python=${PYTHON:-/usr/bin/python3}
bin=$build/benchmarks/bench_layers

if [[ ${NO_BUILD:-0} != 1 ]]; then  # configure once, then an incremental build of the benchmark
  if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DRECUR_BUILD_TESTS=OFF -DRECUR_BUILD_EXAMPLES=OFF >&2
  fi
  cmake "$build" >/dev/null  # picks up a bench_layers target added since the configure
  cmake --build "$build" -j2 --target bench_layers >&2
fi
"$python" -c 'import torch' 2>/dev/null || { echo "compare_layers.sh: $python has no torch (set PYTHON)" >&2; exit 1; }

out=$(mktemp -d "${TMPDIR:-/tmp}/compare_layers.XXXXXX")
trap 'rm -rf "$out"' EXIT
pin=(env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c "$cpu")

run_recur() {
  "${pin[@]}" "$bin" --benchmark_repetitions="$reps" --benchmark_min_time="$min_time" \
    --benchmark_out="$out/recur.$1.json" --benchmark_out_format=json >/dev/null 2>"$out/recur.$1.err" ||
    { cat "$out/recur.$1.err" >&2; exit 1; }
}
run_torch() {
  "${pin[@]}" "$python" "$root/benchmarks/torch_layers.py" --steps "$steps" --json "$out/torch.$1.json" >/dev/null
}

echo "recur:   ${pin[*]} $bin --benchmark_repetitions=$reps --benchmark_min_time=$min_time"
echo "PyTorch: ${pin[*]} $python benchmarks/torch_layers.py --steps $steps"
echo "$rounds interleaved rounds; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then run_recur "$r"; run_torch "$r"; else run_torch "$r"; run_recur "$r"; fi
  echo "  round $r/$rounds done, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$python" - "$out" <<'PY'
import glob, json, os, statistics, sys

out = sys.argv[1]
recur, torch = {}, {}  # name -> {"cpu": [ms], "wall": [ms]}
for path in sorted(glob.glob(os.path.join(out, "recur.*.json"))):
    for r in json.load(open(path))["benchmarks"]:
        if r.get("run_type") != "iteration":
            continue
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[r["time_unit"]]
        mode, kind, *rest = r["run_name"].split("/")  # BM_Train/lstm/B:64/...
        key = "/".join([mode[3:].lower(), kind] + rest)
        d = recur.setdefault(key, {"cpu": [], "wall": []})
        d["cpu"].append(r["cpu_time"] * scale)
        d["wall"].append(r["real_time"] * scale)
flops = {}
for path in sorted(glob.glob(os.path.join(out, "torch.*.json"))):
    for r in json.load(open(path))["results"]:
        d = torch.setdefault(r["name"], {"cpu": [], "wall": []})
        d["cpu"] += [1e3 * s for s in r["cpu"]]
        d["wall"] += [1e3 * s for s in r["wall"]]
        flops[r["name"]] = r["flops"]

def spread(xs):  # (max - min) / median, in percent
    return 100 * (max(xs) - min(xs)) / statistics.median(xs)

head = (f"{'size (B,T,I=H)':<16} {'module':<6} {'step':<6} {'recur ms':>10} {'PyTorch ms':>11} {'ratio':>7} "
        f"{'recur GF/s':>11} {'torch GF/s':>11} {'n r/t':>6} {'spread r/t %':>13} {'wall/cpu r/t':>13}")
print()
print(head)
print("-" * len(head))
wall_cpu = []
for name in torch:  # torch_layers.py's order
    if name not in recur:
        continue
    mode, kind, b, t, i, h = name.split("/")
    size = f"{b[2:]},{t[2:]},{h[2:]}"
    r, p = recur[name], torch[name]
    rm, pm = statistics.median(r["cpu"]), statistics.median(p["cpu"])
    rw = statistics.median(r["wall"]) / rm
    pw = statistics.median(p["wall"]) / pm
    wall_cpu += [rw, pw]
    f = flops[name]
    print(f"{size:<16} {kind.upper():<6} {mode:<6} {rm:10.3f} {pm:11.3f} {pm / rm:7.2f} "
          f"{f / rm / 1e6:11.2f} {f / pm / 1e6:11.2f} {len(r['cpu']):>2}/{len(p['cpu']):<3} "
          f"{spread(r['cpu']):6.0f}/{spread(p['cpu']):<6.0f} {rw:6.2f}/{pw:<6.2f}")
print()
print("ms: median CPU time per step over all rounds; ratio = PyTorch ms / recur ms (> 1: recur faster).")
print("GF/s: 6·G·B·T·H·(I+H) FLOP per training step (G = 1 RNN, 3 GRU, 4 LSTM), a third for infer.")
print("n: samples (recur: repetitions of bench_layers, each the mean of its iterations; PyTorch: single steps).")
print("spread: (max - min) / median of the samples. wall/cpu: median wall time over median CPU time —")
print(f"  1.0 on an idle core; here {min(wall_cpu):.2f} to {max(wall_cpu):.2f} (other processes shared the core).")
PY
