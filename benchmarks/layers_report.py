#!/usr/bin/env python3
"""layers_report.py — the tables of benchmarks/compare_layers.sh (issue 5's and issue 9's targets).

Reads what compare_layers.sh collected in one directory:
  recur.ROUND.json                 bench_layers' Google Benchmark JSON (each repetition a sample)
  onednn.ROUND.json                onednn_layers' Google Benchmark JSON (f32)
  torch.ROUND.json                 torch_layers.py --json (each step a sample)
  memory.recur.LOOP.KIND.json      step_memory's line (LOOP natural or tuned)
  memory.torch.KIND.json           torch_layers.py --memory's line
and prints three tables: step times of recur's natural and tuned loops against oneDNN and
PyTorch, the L training steps' FLOP rate against a raw sgemm, and the peak memory of the M
training step; each row with its targets and whether they are met. --md PATH writes the same as
Markdown. Needs only the standard library.
"""
import argparse
import glob
import json
import os
import statistics

SIZES = {(1, 1000, 16, 16): "XS", (16, 200, 64, 64): "S", (64, 100, 256, 256): "M", (64, 50, 512, 512): "L"}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}

# Targets on the natural loop. Minimum ratio PyTorch time / recur time, per (mode, size, module):
TORCH_TARGETS = {
    ("train", "XS", "lstm"): 20, ("train", "XS", "gru"): 20,
    ("train", "S", "lstm"): 2.5, ("train", "S", "gru"): 2.5,
    ("train", "M", "lstm"): 1.2, ("train", "M", "gru"): 1.0,
    ("train", "L", "lstm"): 1.0, ("train", "L", "gru"): 1.0,
    ("infer", "M", "lstm"): 1.4, ("infer", "M", "gru"): 1.4,
}
ONEDNN_TARGET = 1.0  # oneDNN time / recur time, LSTM and GRU, every size, train and infer
NATURAL_TUNED_TARGET = 1.05  # natural time / tuned time, LSTM and GRU, every size, train and infer
XS_INFER_MS_TARGET = 0.35  # ms per XS inference forward (T = 1000 steps)
SGEMM_SHARE_TARGET = 90.0  # percent: the L training step's nominal FLOP rate over the sgemm rate
# bench_layers' sgemm references (64 x 2048) (2048 x 512): the faster one is the rate the target uses.
SGEMMS = {"BM_Sgemm/M:64/K:2048/N:512": "OpenBLAS cblas_sgemm",
          "BM_SgemmOneDNN/M:64/K:2048/N:512": "oneDNN dnnl_sgemm"}


def size_label(size):
    b, t, i, h = size
    return f"{SIZES.get(tuple(size), '?')} ({b},{t},{i},{h})"


def case_key(name):
    """'train/lstm/B:64/T:100/I:256/H:256' -> ('train', 'lstm', (64, 100, 256, 256))."""
    mode, kind, *dims = name.split("/")
    return mode, kind, tuple(int(d.split(":")[1]) for d in dims)


def load_gbench(out, prefix):
    """{(case name, loop): {"cpu": [ms], "wall": [ms]}} over all rounds of PREFIX.ROUND.json,
    loop "natural"/"tuned" for bench_layers, "" for onednn_layers; the sgemms under
    (their run name, "") with "gflops"."""
    samples = {}
    for path in sorted(glob.glob(os.path.join(out, f"{prefix}.*.json"))):
        with open(path) as f:
            runs = json.load(f)["benchmarks"]
        for r in runs:
            if r.get("run_type") != "iteration":
                continue
            scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[r["time_unit"]]
            if r["run_name"] in SGEMMS:
                samples.setdefault((r["run_name"], ""), {"gflops": []})["gflops"].append(r["FLOPS"] / 1e9)
                continue
            mode, kind, *rest = r["run_name"].split("/")  # BM_Train/lstm[/natural]/B:64/...
            if not mode.startswith("BM_") or mode[3:] not in ("Train", "Infer"):
                continue  # e.g. onednn_layers' bf16 cases
            loop = rest.pop(0) if rest and ":" not in rest[0] else ""
            d = samples.setdefault(("/".join([mode[3:].lower(), kind] + rest), loop), {"cpu": [], "wall": []})
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


def load_memory(out, pattern):
    rows = {}
    for path in sorted(glob.glob(os.path.join(out, pattern))):
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

    recur = load_gbench(args.out, "recur")
    onednn = load_gbench(args.out, "onednn")
    torch, torch_version = load_torch(args.out)
    met, total = 0, 0
    sections = []  # (title, Table, notes)

    def median(samples, name, loop):
        d = samples.get((name, loop))
        return statistics.median(d["cpu"]) if d else None

    def fmt(x, digits=3):
        return "-" if x is None else f"{x:.{digits}f}"

    # ---- 1. step times -------------------------------------------------------------------
    speed = Table(["size (B,T,I,H)", "cell", "mode", "recur natural ms", "recur tuned ms", "oneDNN f32 ms",
                   "PyTorch ms", "oneDNN/recur", "PyTorch/recur", "natural/tuned", "targets met",
                   "spread n/d/t %"],
                  [False, False, False, True, True, True, True, True, True, True, False, True])
    counts, wall_cpu = set(), []
    names = list(torch) + [n for (n, loop) in recur if loop == "natural" and n not in torch]
    for name in names:
        mode, kind, size = case_key(name)
        label = SIZES.get(size)
        natural, tuned = median(recur, name, "natural"), median(recur, name, "tuned")
        dnnl, pt = median(onednn, name, ""), (statistics.median(torch[name]["cpu"]) if name in torch else None)
        if natural is None:
            continue
        r_dnnl = dnnl / natural if dnnl is not None else None
        r_pt = pt / natural if pt is not None else None
        r_nt = natural / tuned if tuned is not None else None
        checks = []  # (description, ok)
        if kind in ("lstm", "gru"):
            if r_nt is not None:
                checks.append((f"natural/tuned <= {NATURAL_TUNED_TARGET:g}", r_nt <= NATURAL_TUNED_TARGET))
            if r_dnnl is not None:
                checks.append((f"oneDNN >= {ONEDNN_TARGET:g}", r_dnnl >= ONEDNN_TARGET))
            if mode == "infer" and label == "XS":
                checks.append((f"<= {XS_INFER_MS_TARGET:g} ms", natural <= XS_INFER_MS_TARGET))
        target = TORCH_TARGETS.get((mode, label, kind))
        if target is not None and r_pt is not None:
            checks.append((f"PyTorch >= {target:g}", r_pt >= target))
        total += len(checks)
        met += sum(ok for _, ok in checks)
        failed = [d for d, ok in checks if not ok]
        verdict = "-" if not checks else f"{len(checks) - len(failed)}/{len(checks)}" + (
            "" if not failed else " (no: " + ", ".join(failed) + ")")
        nat = recur[(name, "natural")]
        counts.add((len(nat["cpu"]), len(onednn[(name, "")]["cpu"]) if (name, "") in onednn else 0,
                    len(torch[name]["cpu"]) if name in torch else 0))
        wall_cpu.append(statistics.median(nat["wall"]) / natural)
        if pt is not None:
            wall_cpu.append(statistics.median(torch[name]["wall"]) / pt)
        spreads = [spread(nat["cpu"]),
                   spread(onednn[(name, "")]["cpu"]) if (name, "") in onednn else None,
                   spread(torch[name]["cpu"]) if name in torch else None]
        speed.add(size_label(size), kind.upper(), mode, fmt(natural), fmt(tuned), fmt(dnnl), fmt(pt),
                  fmt(r_dnnl, 2), fmt(r_pt, 2), fmt(r_nt, 2), verdict,
                  "/".join("-" if x is None else f"{x:.0f}" for x in spreads))
    n_of = lambda k: "/".join(sorted({str(c[k]) for c in counts if c[k]})) or "0"
    load = f"{min(wall_cpu):.2f} to {max(wall_cpu):.2f}" if wall_cpu else "-"
    sections.append((f"Step time, one core, float32 (oneDNN f32, PyTorch {torch_version})", speed, [
        "ms: median CPU time of one step over all rounds. Ratios: oneDNN ms / recur natural ms and PyTorch ms / "
        "recur natural ms (> 1: recur faster); natural/tuned = recur natural ms / recur tuned ms.",
        "natural: a fresh Tape<float> each step, default options, the input through tape.constant; tuned: one "
        "reused tape, retain_grads = false, tape.view (inference: a Tape({.record = false}), fresh or reused).",
        "train: zero grads, forward, loss = sum(output), backward through time; infer: forward without grad. "
        "oneDNN (onednn_layers): lstm / lbr_gru primitives, weights reordered from plain layout every training "
        "step, input gradient computed (it cannot be skipped); inference on weights reordered once.",
        f"targets (LSTM, GRU): natural/tuned <= {NATURAL_TUNED_TARGET:g}, oneDNN/recur >= {ONEDNN_TARGET:g}, "
        f"XS inference <= {XS_INFER_MS_TARGET:g} ms, PyTorch/recur as issue 5 (and inference at M >= 1.4).",
        f"samples per row: recur {n_of(0)}, oneDNN {n_of(1)} (repetitions of the Google Benchmark programs, each "
        f"the mean of >= 1 steps after a warm-up step), PyTorch {n_of(2)} (single steps after warm-up steps).",
        f"spread: (max - min) / median of the samples of recur natural / oneDNN / PyTorch. wall/cpu medians "
        f"{load} (1.0 on an idle core).",
    ]))

    # ---- 2. FLOP rate at L against the sgemm ---------------------------------------------
    sgemm_rates = {label: statistics.median(recur[(name, "")]["gflops"])
                   for name, label in SGEMMS.items() if (name, "") in recur}
    rate = Table(["size (B,T,I,H)", "module", "loop", "nominal GFLOP", "recur ms", "recur GFLOP/s", "% of sgemm",
                  "target", "met"], [False, False, False, True, True, True, True, True, False])
    sgemm_rate = max(sgemm_rates.values()) if sgemm_rates else None
    for (name, loop), r in recur.items():
        if name in SGEMMS or sgemm_rate is None:
            continue
        mode, kind, size = case_key(name)
        if mode != "train" or SIZES.get(size) != "L" or kind not in ("lstm", "gru"):
            continue
        b, t, i, h = size
        gflop = 6 * GATES[kind] * b * t * h * (i + h) / 1e9  # 24 (LSTM) or 18 (GRU) B T H (I + H)
        ms = statistics.median(r["cpu"])
        gflops = gflop / (ms / 1e3)
        share = 100 * gflops / sgemm_rate
        counted = loop == "natural"
        if counted:
            total += 1
            met += share >= SGEMM_SHARE_TARGET
        rate.add(size_label(size), kind.upper(), loop, f"{gflop:.2f}", f"{ms:.3f}", f"{gflops:.1f}", f"{share:.1f}",
                 f">= {SGEMM_SHARE_TARGET:g}" if counted else "-",
                 yes_no(share >= SGEMM_SHARE_TARGET) if counted else "-")
    sgemm_line = ("sgemm (M,K,N) = (64,2048,512), float, one thread, one direct call, median GFLOP/s: " +
                  ", ".join(f"{label} {rate:.1f}" for label, rate in sgemm_rates.items()) +
                  f"; % of sgemm is against the faster, {sgemm_rate:.1f}" if sgemm_rate else "sgemm: not measured")
    sections.append(("Training step at L against the raw sgemm rate", rate, [
        sgemm_line + ".",
        "nominal GFLOP per step: 24 B T H (I + H) for LSTM, 18 for GRU (forward, dW and dX GEMMs); "
        "recur GFLOP/s = nominal / median CPU time. The target is on the natural loop.",
    ]))

    # ---- 3. Peak memory of the M training step --------------------------------------------
    mem_natural = load_memory(args.out, "memory.recur.natural.*.json")
    mem_tuned = load_memory(args.out, "memory.recur.tuned.*.json")
    mem_torch = load_memory(args.out, "memory.torch.*.json")
    memory = Table(["size (B,T,I,H)", "module", "recur natural MiB", "recur tuned MiB", "PyTorch MiB",
                    "natural/PyTorch", "target", "met"], [False, False, True, True, True, True, True, False])
    steps, resets = set(), set()
    for kind in ("lstm", "gru", "rnn"):
        if kind not in mem_natural or kind not in mem_torch:
            continue
        r, p = mem_natural[kind], mem_torch[kind]
        tuned = mem_tuned.get(kind)
        steps |= {r["steps"], p["steps"]}
        resets |= {r["peak_reset"], p["peak_reset"]} | ({tuned["peak_reset"]} if tuned else set())
        rm, pm = r["growth_kib"] / 1024, p["growth_kib"] / 1024
        tm = tuned["growth_kib"] / 1024 if tuned else None
        total += 1
        met += rm <= pm
        memory.add(size_label(r["size"]), kind.upper(), f"{rm:.1f}", fmt(tm, 1), f"{pm:.1f}", f"{rm / pm:.2f}",
                   "<= 1", yes_no(rm <= pm))
    reset_note = ("the peak reset to the RSS just before the first step (/proc/self/clear_refs)" if resets == {True}
                  else "the kernel refused to reset the peak: figures are upper bounds")
    sections.append(("Peak memory of the training step at M", memory, [
        f"MiB: peak RSS (VmHWM) over {'/'.join(map(str, sorted(steps)))} training steps minus the RSS before the "
        f"first, each case in a fresh process after one step of a tiny module (code paged in); {reset_note}.",
        "recur: benchmarks/step_memory (natural and tuned loops); PyTorch: benchmarks/torch_layers.py --memory. "
        "The target is on the natural loop.",
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
