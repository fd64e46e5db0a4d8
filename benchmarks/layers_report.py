#!/usr/bin/env python3
"""layers_report.py — the tables of benchmarks/compare_layers.sh (issue 5's performance targets).

Reads what compare_layers.sh collected in one directory:
  recur.ROUND.json          bench_layers' Google Benchmark JSON (each repetition a sample)
  torch.ROUND.json          torch_layers.py --json (each step a sample)
  memory.recur.KIND.json    step_memory's line
  memory.torch.KIND.json    torch_layers.py --memory's line
and prints three tables: step times against PyTorch, the L training steps' FLOP rate against a
raw sgemm, and the peak memory of the M training step; each row with its target and whether it
is met. --md PATH writes the same as Markdown. Needs only the standard library.
"""
import argparse
import glob
import json
import os
import statistics

SIZES = {(1, 1000, 16, 16): "XS", (16, 200, 64, 64): "S", (64, 100, 256, 256): "M", (64, 50, 512, 512): "L"}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}

# Targets: minimum ratio PyTorch time / recur time, per (mode, size, module).
SPEED_TARGETS = {
    ("train", "XS", "lstm"): 20, ("train", "XS", "gru"): 20,
    ("train", "S", "lstm"): 2.5, ("train", "S", "gru"): 2.5,
    ("train", "M", "lstm"): 1.2, ("train", "M", "gru"): 1.0,
    ("train", "L", "lstm"): 1.0, ("train", "L", "gru"): 1.0,
    ("infer", "M", "lstm"): 1.4, ("infer", "M", "gru"): 1.4,
}
SGEMM_SHARE_TARGET = 90.0  # percent: the L training step's nominal FLOP rate over the sgemm rate
SGEMM_NAME = "BM_Sgemm/M:64/K:2048/N:512"


def size_label(size):
    b, t, i, h = size
    return f"{SIZES.get(tuple(size), '?')} ({b},{t},{i},{h})"


def case_key(name):
    """'train/lstm/B:64/T:100/I:256/H:256' -> ('train', 'lstm', (64, 100, 256, 256))."""
    mode, kind, *dims = name.split("/")
    return mode, kind, tuple(int(d.split(":")[1]) for d in dims)


def load_recur(out):
    """{case name: {"cpu": [ms], "wall": [ms]}} over all rounds; the sgemm under SGEMM_NAME (GFLOP/s)."""
    samples = {}
    for path in sorted(glob.glob(os.path.join(out, "recur.*.json"))):
        with open(path) as f:
            runs = json.load(f)["benchmarks"]
        for r in runs:
            if r.get("run_type") != "iteration":
                continue
            scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[r["time_unit"]]
            if r["run_name"] == SGEMM_NAME:
                samples.setdefault(SGEMM_NAME, {"gflops": []})["gflops"].append(r["FLOPS"] / 1e9)
                continue
            mode, kind, *rest = r["run_name"].split("/")  # BM_Train/lstm/B:64/...
            d = samples.setdefault("/".join([mode[3:].lower(), kind] + rest), {"cpu": [], "wall": []})
            d["cpu"].append(r["cpu_time"] * scale)
            d["wall"].append(r["real_time"] * scale)
    return samples


def load_torch(out):
    """{case name: {"cpu": [ms], "wall": [ms]}} over all rounds, in torch_layers.py's order; version."""
    samples, version = {}, "?"
    for path in sorted(glob.glob(os.path.join(out, "torch.*.json"))):
        with open(path) as f:
            data = json.load(f)
        version = data["torch"]
        for r in data["results"]:
            d = samples.setdefault(r["name"], {"cpu": [], "wall": []})
            d["cpu"] += [1e3 * s for s in r["cpu"]]
            d["wall"] += [1e3 * s for s in r["wall"]]
    return samples, version


def load_memory(out, framework):
    rows = {}
    for path in sorted(glob.glob(os.path.join(out, f"memory.{framework}.*.json"))):
        with open(path) as f:
            r = json.loads(f.read().strip().splitlines()[-1])
        rows[r["kind"]] = r
    return rows


def spread(xs):
    """(max - min) / median, in percent."""
    return 100 * (max(xs) - min(xs)) / statistics.median(xs)


def yes_no(ok):
    return "yes" if ok else "no"


class Table:
    """Rows of strings, shown aligned as text or as a Markdown table."""

    def __init__(self, head, right):
        self.head, self.right, self.rows = head, right, []

    def add(self, *cells):
        self.rows.append([str(c) for c in cells])

    def text(self):
        widths = [max(len(r[i]) for r in [self.head] + self.rows) for i in range(len(self.head))]
        def line(r):
            return "  ".join(c.rjust(w) if right else c.ljust(w)
                             for c, w, right in zip(r, widths, self.right)).rstrip()
        rule = "-" * max(len(line(r)) for r in [self.head] + self.rows)
        return "\n".join([line(self.head), rule] + [line(r) for r in self.rows])

    def markdown(self):
        def line(r):
            return "| " + " | ".join(r) + " |"
        align = "|" + "|".join("---:" if right else ":---" for right in self.right) + "|"
        return "\n".join([line(self.head), align] + [line(r) for r in self.rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the directory compare_layers.sh wrote")
    ap.add_argument("--header", action="append", default=[], help="a 'name: value' line shown above the tables")
    ap.add_argument("--md", default=None, help="also write the tables as Markdown here")
    args = ap.parse_args()

    recur = load_recur(args.out)
    torch, torch_version = load_torch(args.out)
    met, total = 0, 0
    sections = []  # (title, Table, notes)

    # ---- 1. step times -------------------------------------------------------------------
    speed = Table(["size (B,T,I,H)", "module", "mode", "recur ms", "PyTorch ms", "ratio", "target", "met",
                   "spread r/t %"], [False, False, False, True, True, True, True, False, True])
    counts, wall_cpu = set(), []
    for name, p in torch.items():  # torch_layers.py's order: training size by size, then inference
        if name not in recur:
            continue
        mode, kind, size = case_key(name)
        r = recur[name]
        rm, pm = statistics.median(r["cpu"]), statistics.median(p["cpu"])
        counts.add((len(r["cpu"]), len(p["cpu"])))
        wall_cpu += [statistics.median(r["wall"]) / rm, statistics.median(p["wall"]) / pm]
        ratio = pm / rm
        target = SPEED_TARGETS.get((mode, SIZES.get(size), kind))
        if target is not None:
            total += 1
            met += ratio >= target
        speed.add(size_label(size), kind.upper(), mode, f"{rm:.3f}", f"{pm:.3f}", f"{ratio:.2f}",
                  f">= {target:g}" if target is not None else "-",
                  yes_no(ratio >= target) if target is not None else "-",
                  f"{spread(r['cpu']):.0f}/{spread(p['cpu']):.0f}")
    n_recur = "/".join(sorted({str(a) for a, _ in counts})) or "0"
    n_torch = "/".join(sorted({str(b) for _, b in counts})) or "0"
    load = f"{min(wall_cpu):.2f} to {max(wall_cpu):.2f}" if wall_cpu else "-"
    sections.append((f"Step time, one core, float32 (PyTorch {torch_version})", speed, [
        "ms: median CPU time of one step over all rounds; ratio = PyTorch ms / recur ms (> 1: recur faster).",
        "train: zero grads, forward, loss = sum(output), backward through time; infer: forward without grad.",
        f"samples per row: recur {n_recur} (repetitions of bench_layers, each the mean of >= 1 steps after a "
        f"warm-up step), PyTorch {n_torch} (single steps after warm-up steps).",
        f"spread: (max - min) / median of the samples. wall/cpu medians {load} (1.0 on an idle core).",
    ]))

    # ---- 2. FLOP rate at L against the sgemm ---------------------------------------------
    sgemm = recur.get(SGEMM_NAME, {}).get("gflops", [])
    rate = Table(["size (B,T,I,H)", "module", "nominal GFLOP", "recur ms", "recur GFLOP/s", "% of sgemm",
                  "target", "met"], [False, False, True, True, True, True, True, False])
    sgemm_rate = statistics.median(sgemm) if sgemm else None
    for name, r in recur.items():
        if name == SGEMM_NAME:
            continue
        mode, kind, size = case_key(name)
        if mode != "train" or SIZES.get(size) != "L" or kind not in ("lstm", "gru") or sgemm_rate is None:
            continue
        b, t, i, h = size
        gflop = 6 * GATES[kind] * b * t * h * (i + h) / 1e9  # 24 (LSTM) or 18 (GRU) B T H (I + H)
        ms = statistics.median(r["cpu"])
        gflops = gflop / (ms / 1e3)
        share = 100 * gflops / sgemm_rate
        total += 1
        met += share >= SGEMM_SHARE_TARGET
        rate.add(size_label(size), kind.upper(), f"{gflop:.2f}", f"{ms:.3f}", f"{gflops:.1f}", f"{share:.1f}",
                 f">= {SGEMM_SHARE_TARGET:g}", yes_no(share >= SGEMM_SHARE_TARGET))
    sgemm_line = (f"sgemm (M,K,N) = (64,2048,512), float, one thread, direct cblas_sgemm: {sgemm_rate:.1f} GFLOP/s "
                  f"(median of {len(sgemm)})" if sgemm_rate else "sgemm: not measured")
    sections.append(("Training step at L against the raw sgemm rate", rate, [
        sgemm_line + ".",
        "nominal GFLOP per step: 24 B T H (I + H) for LSTM, 18 for GRU (forward, dW and dX GEMMs); "
        "recur GFLOP/s = nominal / median CPU time.",
    ]))

    # ---- 3. Peak memory of the M training step --------------------------------------------
    mem_recur, mem_torch = load_memory(args.out, "recur"), load_memory(args.out, "torch")
    memory = Table(["size (B,T,I,H)", "module", "recur MiB", "PyTorch MiB", "recur/PyTorch", "target", "met"],
                   [False, False, True, True, True, True, False])
    steps, resets = set(), set()
    for kind in ("lstm", "gru", "rnn"):
        if kind not in mem_recur or kind not in mem_torch:
            continue
        r, p = mem_recur[kind], mem_torch[kind]
        steps |= {r["steps"], p["steps"]}
        resets |= {r["peak_reset"], p["peak_reset"]}
        rm, pm = r["growth_kib"] / 1024, p["growth_kib"] / 1024
        total += 1
        met += rm <= pm
        memory.add(size_label(r["size"]), kind.upper(), f"{rm:.1f}", f"{pm:.1f}", f"{rm / pm:.2f}", "<= 1",
                   yes_no(rm <= pm))
    reset_note = ("the peak reset to the RSS just before the first step (/proc/self/clear_refs)" if resets == {True}
                  else "the kernel refused to reset the peak: figures are upper bounds")
    sections.append(("Peak memory of the training step at M", memory, [
        f"MiB: peak RSS (VmHWM) over {'/'.join(map(str, sorted(steps)))} training steps minus the RSS before the "
        f"first, each case in a fresh process after one step of a tiny module (code paged in); {reset_note}.",
        "recur: benchmarks/step_memory; PyTorch: benchmarks/torch_layers.py --memory.",
    ]))

    summary = f"Targets met: {met} of {total}."
    text = [f"{line}" for line in args.header] + [""]
    md = [f"{line}  " for line in args.header] + [""]
    for title, table, notes in sections:
        text += [title, "", table.text(), ""] + notes + [""]
        md += [f"**{title}**", "", table.markdown(), ""] + [n + "  " for n in notes] + [""]
    text.append(summary)
    md.append(f"**{summary}**")
    print("\n".join(text))
    if args.md:
        with open(args.md, "w") as f:
            f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
