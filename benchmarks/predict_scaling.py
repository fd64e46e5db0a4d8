#!/usr/bin/env python3
"""Predicted step time and scaling efficiency of data-parallel training at M across machines.

The M model of examples/distributed_training (one LSTM layer, I = H = 256, T 100, per-rank
batch 64, a Linear head), one rank per machine, weak scaling. A ring allreduce of b bytes over
N machines takes 2 (N - 1) / N * b / bandwidth + 2 (N - 1) * latency. The reducer's buckets
(GradReducer's layout for this model, 1 MiB buckets, the last 64 KiB) are reduced in order on
the communication thread, each from the moment backward finishes it; the step ends when the
last one is reduced, then the losses are reduced (one more small ring). "none hidden" adds
every ring after backward instead.

Assumptions (measured on the 2-core machine of README's "Training on several machines"):
- compute per step: the 1 rank x 1 thread time per batch of the example (forward, BPTT, Adam);
- the input projection's weight gradient dW_ih (1024 x 256 from 6400 rows) takes
  `projection_ms`, made in blocks of 512, 256, 128, 64 and 64 rows (linear's backward under a
  rows hook), each reported final when written (at the block's share of that time); W_hh and
  b_hh are final when it starts, the head long before;
- the ring runs at the link's full rate; the additions and copies (~1 ms per GB) are left out.

Usage: benchmarks/predict_scaling.py [--compute-ms 180] [--projection-ms 39]
"""
import argparse

MIB = 1 << 20
FLOAT = 4
ROWS_IH = 1024  # 4 H rows of weight_ih

# (bytes, rows of dW_ih written when the bucket is complete; None: before the projection), in
# the order they are reduced: head (257 floats), weight_hh (1 MiB), then bias_hh + bias_ih +
# weight_ih rows [0, 64), and weight_ih rows [64, 576), [576, 832), [832, 960), [960, 1024),
# complete when the block holding their last row is written (block ends 512, 768, 896, 960, 1024).
BUCKETS = [
    (257 * FLOAT, None),
    (262144 * FLOAT, 0),
    ((1024 + 1024 + 64 * 256) * FLOAT, 512),
    (512 * 256 * FLOAT, 768),
    (256 * 256 * FLOAT, 896),
    (128 * 256 * FLOAT, 960),
    (64 * 256 * FLOAT, 1024),
]
LOSSES = 2 * 8  # the step's loss sum and sample count, in doubles


def ring(n, size, bandwidth, latency):
    return 2 * (n - 1) / n * size / bandwidth + 2 * (n - 1) * latency


def step(n, compute, projection, bandwidth, latency, hidden):
    if not hidden:
        return compute + sum(ring(n, b, bandwidth, latency) for b, _ in BUCKETS) + ring(n, LOSSES, bandwidth, latency)
    # Times relative to the end of backward (0): the projection's blocks end at
    # -projection + projection * rows / ROWS_IH; the head is final long before (-compute / 2).
    free = float("-inf")
    for size, rows in BUCKETS:
        final = -compute / 2 if rows is None else -projection + projection * rows / ROWS_IH
        free = max(free, final) + ring(n, size, bandwidth, latency)
    return compute + max(0.0, free) + ring(n, LOSSES, bandwidth, latency)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compute-ms", type=float, default=180.0)
    parser.add_argument("--projection-ms", type=float, default=39.0)
    args = parser.parse_args()
    compute, projection = args.compute_ms / 1e3, args.projection_ms / 1e3
    links = [("10 Gb/s", 10e9 / 8, 30e-6), ("100 Gb/s", 100e9 / 8, 10e-6)]
    print(f"compute {args.compute_ms:.0f} ms per step, dW_ih {args.projection_ms:.0f} ms, "
          f"{sum(b for b, _ in BUCKETS) / 1e6:.2f} MB in {len(BUCKETS)} buckets")
    print("| machines | " + " | ".join(f"{name}: step, efficiency (none hidden)" for name, _, _ in links) + " |")
    print("|---:|" + "---:|" * len(links))
    for n in (2, 8, 64):
        cells = []
        for _, bandwidth, latency in links:
            overlapped = step(n, compute, projection, bandwidth, latency, True)
            serial = step(n, compute, projection, bandwidth, latency, False)
            cells.append(f"{overlapped * 1e3:.1f} ms, {compute / overlapped:.1%} "
                         f"({serial * 1e3:.1f} ms, {compute / serial:.1%})")
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
