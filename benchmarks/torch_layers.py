#!/usr/bin/python3
"""torch_layers.py — PyTorch 1.13 figures for benchmarks/bench_layers.cpp and step_memory.cpp.

The same steps as bench_layers, in PyTorch on one thread: one-layer nn.RNN (tanh), nn.LSTM and
nn.GRU in float32, batch_first, input (B, T, I) that does not require grad.
  train: zero the grads, out = m(x)[0], out.sum().backward()
  infer: m(x) under torch.no_grad()
at (B, T, I, H) = XS (1, 1000, 16, 16), S (16, 200, 64, 64), M (64, 100, 256, 256) and
L (64, 50, 512, 512): LSTM and GRU train and infer at all four, RNN trains at XS and M and infers
at M. Each case runs
`--warmup` untimed steps, then `--steps` timed ones one by one; the median is printed (and every
sample is written with --json). Time is process CPU time (as bench_layers reports CPU time), with
wall time alongside.

--memory KIND measures instead the peak memory of KIND's training step at --size (default M),
as step_memory does for recur: one step of a tiny module first (pages in the code), then the
module, its input and its grads; the RSS; `--memory-steps` steps; the peak RSS (VmHWM, reset to
the RSS just before the first step through /proc/self/clear_refs) minus that RSS. One JSON line.
Run it in a fresh process per case, so nothing earlier is resident.

Run with Debian's interpreter, which has torch:
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 /usr/bin/python3 benchmarks/torch_layers.py
"""
import argparse
import json
import statistics
import time

import torch

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
SIZES = {"XS": (1, 1000, 16, 16), "S": (16, 200, 64, 64), "M": (64, 100, 256, 256), "L": (64, 50, 512, 512)}
MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
TRAIN = {"lstm": ["XS", "S", "M", "L"], "gru": ["XS", "S", "M", "L"], "rnn": ["XS", "M"]}
INFER = {"lstm": ["XS", "S", "M", "L"], "gru": ["XS", "S", "M", "L"], "rnn": ["M"]}


def cases(only=None):
    """(mode, kind, size): training steps size by size, then the inference forwards."""
    out = [("train", k, SIZES[z]) for z in SIZES for k in TRAIN if z in TRAIN[k]]
    out += [("infer", k, SIZES[z]) for z in SIZES for k in INFER if z in INFER[k]]
    return [c for c in out if only is None or only in name(*c)]


def name(mode, kind, size):
    b, t, i, h = size
    return f"{mode}/{kind}/B:{b}/T:{t}/I:{i}/H:{h}"


def forward_flops(kind, size):
    b, t, i, h = size
    return 2.0 * GATES[kind] * b * t * h * (i + h)


def status_kib(field):
    """A "Name:   1234 kB" field of /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss():
    """Resets VmHWM to the current RSS; False when the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def train_step(m, x, params):
    """zero the grads, loss = sum(output), backward (as bench_layers' step)."""
    for p in params:
        p.grad.zero_()
    m(x)[0].sum().backward()


def make(kind, size):
    """The module (seed 7), its input x (B, T, I) in [-1, 1) and its parameters, grads zeroed."""
    b, t, i, h = size
    torch.manual_seed(7)
    m = MODULES[kind](i, h, num_layers=1, batch_first=True)
    x = torch.rand(b, t, i) * 2 - 1
    params = list(m.parameters())
    for p in params:  # the grads exist before the first step, as a recur Parameter's do
        p.grad = torch.zeros_like(p)
    return m, x, params


def measure(mode, kind, size, warmup, steps):
    m, x, params = make(kind, size)
    if mode == "train":
        def step():
            train_step(m, x, params)
    else:
        def step():
            with torch.no_grad():
                m(x)

    for _ in range(warmup):
        step()
    cpu, wall = [], []
    for _ in range(steps):
        c0, w0 = time.process_time(), time.perf_counter()
        step()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return cpu, wall


def measure_memory(kind, size, steps):
    """Peak RSS growth over `steps` training steps, as step_memory.cpp measures recur's."""
    train_step(*make(kind, (2, 2, 2, 2)))  # pages in the code of a step
    m, x, params = make(kind, size)
    peak_reset = reset_peak_rss()
    rss_before = status_kib("VmRSS")
    for _ in range(steps):
        train_step(m, x, params)
    peak = status_kib("VmHWM")
    return {"kind": kind, "size": list(size), "steps": steps, "rss_before_kib": rss_before, "peak_kib": peak,
            "growth_kib": peak - rss_before, "peak_reset": peak_reset}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=7, help="timed steps per case (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--filter", default=None, help="only cases whose name contains this")
    ap.add_argument("--json", default=None, help="write every sample (seconds) here")
    ap.add_argument("--memory", choices=sorted(MODULES), help="measure the peak memory of this module's step")
    ap.add_argument("--size", type=int, nargs=4, default=list(SIZES["M"]), metavar=("B", "T", "I", "H"),
                    help="--memory's size (default M: 64 100 256 256)")
    ap.add_argument("--memory-steps", type=int, default=3, help="--memory's steps (default 3)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    if args.memory:
        print(json.dumps(measure_memory(args.memory, tuple(args.size), args.memory_steps)))
        return
    results = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread; median of {args.steps} steps")
    print(f"{'case':<40} {'cpu ms':>9} {'wall ms':>9} {'GFLOP/s':>8}")
    for mode, kind, size in cases(args.filter):
        cpu, wall = measure(mode, kind, size, args.warmup, args.steps)
        flops = forward_flops(kind, size) * (3 if mode == "train" else 1)
        med = statistics.median(cpu)
        print(f"{name(mode, kind, size):<40} {1e3 * med:9.3f} {1e3 * statistics.median(wall):9.3f} "
              f"{flops / med / 1e9:8.2f}", flush=True)
        results.append({"name": name(mode, kind, size), "mode": mode, "kind": kind, "size": list(size),
                        "flops": flops, "cpu": cpu, "wall": wall})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "results": results}, f)


if __name__ == "__main__":
    main()
