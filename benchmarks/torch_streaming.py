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
    start, cpu = time.perf_counter(), time.process_time()
    for x in xs:
        out, state = lstm(x, state)
        sink += linear(out)[0, 0, 0].item()
    return (time.perf_counter() - start) / steps * 1e6, (time.process_time() - cpu) / steps * 1e6


with torch.no_grad():
    run()  # warm-up
    runs = [run() for _ in range(10)]
times, cpu = [r[0] for r in runs], [r[1] for r in runs]
print(f"torch {torch.__version__}: LSTM(1, 64) + Linear(64, 1), B = 1, one step per call: "
      f"median {statistics.median(times):.2f} us/step wall (min {min(times):.2f}, max {max(times):.2f}), "
      f"{statistics.median(cpu):.2f} us/step CPU")
