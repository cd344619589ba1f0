#!/usr/bin/env python3
"""Turns starkv_bench's Google Benchmark JSON into the rows of docs/perf/cpu.md.

    python3 bench/perf_table.py docs/perf/bench-0.1.0.json 0.1.0

For each kernel: bytes it must read, the memory floor (bytes / measured
bandwidth), the compute floor (FLOPs / measured FMA peak), the measured time
and the ratio time / max(floors). Two columns of each, because the machine is
shared: "wall" uses wall-clock medians (what a user sees, contention
included); "cpu" uses the benchmark thread's own CPU time, which on this
oversubscribed VM (load 15+ from concurrent builds, no hypervisor steal) is the
better estimate of the uncontended cost. CPU time only counts the main thread,
so the cpu column is left out for 2-thread rows.
"""
import json
import sys


def load(path):
    rows = {}
    for b in json.load(open(path))["benchmarks"]:
        if b.get("aggregate_name", "median") != "median":
            continue
        name = b["run_name"] if "run_name" in b else b["name"]
        rows[name] = b
    return rows


def to_s(b, key):
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
    return b[key] * unit


def main():
    path, version = sys.argv[1], sys.argv[2]
    r = load(path)

    def find(prefix):
        for k, v in r.items():
            if k.startswith(prefix):
                return v
        raise KeyError(prefix)

    dram = find("BM_MemRead/MiB:256/threads:1/")
    dram_bytes = 256 * 2**20
    bw_cpu = dram_bytes / to_s(dram, "cpu_time")
    bw_wall = max(find("BM_MemRead/MiB:256/threads:1/")["bytes_per_second"],
                  find("BM_MemRead/MiB:256/threads:2/")["bytes_per_second"])
    l3 = find("BM_MemRead/MiB:16/threads:1/")
    l3_cpu = 16 * 2**20 / to_s(l3, "cpu_time")
    l3_wall = l3["bytes_per_second"]
    fma = find("BM_FmaPeak")
    peak1 = fma["FLOP/s"]  # per core, from CPU time

    print(f"Ceilings ({version}): DRAM read {bw_cpu/1e9:.1f} GB/s (cpu time, 1 thread), "
          f"{bw_wall/1e9:.1f} GB/s (wall, best of 1-2 threads); L3-resident read {l3_cpu/1e9:.1f} GB/s (cpu) / "
          f"{l3_wall/1e9:.1f} GB/s (wall); FMA peak {peak1/1e9:.1f} GFLOP/s per core (cpu time).")
    print()
    print("| version | kernel | threads | MiB read | floor wall (ms) | measured wall (ms) | wall/floor "
          "| floor cpu (ms) | measured cpu (ms) | cpu/floor | bound |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, b in r.items():
        if not (name.startswith("BM_Matvec") or name.startswith("BM_MatmulBatched") or
                name.startswith("BM_AttentionDecode")):
            continue
        args = dict(kv.split(":") for kv in name.split("/")[1:] if ":" in kv)
        thr = int(args.get("thr", 1))
        hot = args.get("cold") == "0"
        wall = to_s(b, "real_time")
        cpu = to_s(b, "cpu_time")
        nbytes = b["bytes_per_second"] * wall
        flops = b["FLOP/s"] * wall
        bw_w, bw_c = (l3_wall, l3_cpu) if hot else (bw_wall, bw_cpu)
        mem_w, mem_c = nbytes / bw_w, nbytes / bw_c
        comp = flops / (peak1 * thr)
        floor_w, floor_c = max(mem_w, comp), max(mem_c, comp)
        bound = "compute" if comp > mem_c else ("L3" if hot else "DRAM")
        short = name.split("/real_time")[0].replace("BM_", "")
        cpu_cols = (f"{floor_c*1e3:.3f} | {cpu*1e3:.3f} | {cpu/floor_c:.1f}" if thr == 1 else "- | - | -")
        print(f"| {version} | {short} | {thr} | {nbytes/2**20:.1f} | {floor_w*1e3:.3f} | {wall*1e3:.3f} | "
              f"{wall/floor_w:.1f} | {cpu_cols} | {bound} |")
    print()
    print("| version | end to end | threads | wall tok/s | cpu-time tok/s (1 thread) |")
    print("|---|---|---|---|---|")
    for name, b in r.items():
        if "Decode" in name or "Prompt" in name:
            if name.startswith("BM_AttentionDecode"):
                continue
            if "error_occurred" in b and b["error_occurred"]:
                continue
            args = dict(kv.split(":") for kv in name.split("/")[1:] if ":" in kv)
            thr = int(args.get("thr", 1))
            wall, cpu = to_s(b, "real_time"), to_s(b, "cpu_time")
            per_iter_tokens = b["tok/s"] * wall
            cpu_rate = f"{per_iter_tokens / cpu:.1f}" if thr == 1 else "-"
            print(f"| {version} | {name.split('/real_time')[0].replace('BM_', '')} | {thr} | {b['tok/s']:.1f} | {cpu_rate} |")


if __name__ == "__main__":
    main()
