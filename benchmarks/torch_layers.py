#!/usr/bin/python3
"""torch_layers.py — PyTorch 1.13 figures for benchmarks/bench_layers.cpp.

The same steps as bench_layers, in PyTorch on one thread: one-layer nn.RNN (tanh), nn.LSTM and
nn.GRU in float32, batch_first, input (B, T, I) that does not require grad.
  train: zero_grad(), out = m(x)[0], out.sum().backward()
  infer: m(x) under torch.no_grad() (the first size only)
at (B, T, I, H) = (64, 100, 256, 256) and (1, 1000, 16, 16). Each case runs `--warmup` untimed
steps, then `--steps` timed ones one by one; the median is printed (and every sample is
written with --json). Time is process CPU time (as bench_layers reports CPU time), with wall
time alongside.

Run with Debian's interpreter, which has torch:
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 /usr/bin/python3 benchmarks/torch_layers.py
"""
import argparse
import json
import statistics
import time

import torch

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
SIZES = [(64, 100, 256, 256), (1, 1000, 16, 16)]
MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def cases(only=None):
    """(mode, kind, size) in bench_layers' order: Train at both sizes, then Infer at the first."""
    out = [("train", k, s) for k in GATES for s in SIZES] + [("infer", k, SIZES[0]) for k in GATES]
    return [c for c in out if only is None or only in name(*c)]


def name(mode, kind, size):
    b, t, i, h = size
    return f"{mode}/{kind}/B:{b}/T:{t}/I:{i}/H:{h}"


def forward_flops(kind, size):
    b, t, i, h = size
    return 2.0 * GATES[kind] * b * t * h * (i + h)


def measure(mode, kind, size, warmup, steps):
    b, t, i, h = size
    torch.manual_seed(7)
    m = MODULES[kind](i, h, num_layers=1, batch_first=True)
    x = torch.rand(b, t, i) * 2 - 1

    if mode == "train":
        params = list(m.parameters())

        def step():
            for p in params:  # zero the grads each step, as bench_layers does
                if p.grad is not None:
                    p.grad.zero_()
            out = m(x)[0]
            out.sum().backward()
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=7, help="timed steps per case (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--filter", default=None, help="only cases whose name contains this")
    ap.add_argument("--json", default=None, help="write every sample (seconds) here")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
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
