#!/usr/bin/python3
"""PyTorch's per-step time for the model of bench_streaming: nn.LSTM(1, 64) + nn.Linear(64, 1),
one time step per call at B = 1 with the state carried, under torch.no_grad, one thread.
Median over repetitions of 10,000 steps.
    OMP_NUM_THREADS=1 taskset -c 1 /usr/bin/python3 benchmarks/torch_streaming.py
"""
import math
import statistics
import time

import torch

torch.set_num_threads(1)
torch.manual_seed(1)
lstm = torch.nn.LSTM(1, 64)
linear = torch.nn.Linear(64, 1)
steps = 10000
xs = [torch.full((1, 1, 1), math.sin(0.05 * t)) for t in range(steps)]


def run():
    state = None
    sink = 0.0
    start = time.perf_counter()
    for x in xs:
        out, state = lstm(x, state)
        sink += linear(out)[0, 0, 0].item()
    return (time.perf_counter() - start) / steps * 1e6, sink


with torch.no_grad():
    run()  # warm-up
    times = [run()[0] for _ in range(10)]
print(f"torch {torch.__version__}: LSTM(1, 64) + Linear(64, 1), B = 1, one step per call: "
      f"median {statistics.median(times):.2f} us/step (min {min(times):.2f}, max {max(times):.2f})")
