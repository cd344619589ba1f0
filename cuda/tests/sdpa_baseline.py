"""PyTorch SDPA decode attention on the FULL bf16 KV cache: the baseline for
bench_latent_attention (same shapes: batch 16 or argv[2], one query token, head_dim 128;
Llama-2-7B 32/32 heads, Llama-3-8B 32 query / 8 KV heads). CUDA events, median.
LATENT_FLUSH_L2=1: 128 MB written before every timed call (outside the events), as the benchmark does."""
import os
import sys

import torch
import torch.nn.functional as F


FLUSH = None


def median_ms(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        if FLUSH is not None:
            FLUSH.fill_(len(ts) & 0xFF)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    dev = torch.device("cuda")
    global FLUSH
    x = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    bw = 2 * x.numel() / (median_ms(lambda: y.copy_(x), 10) * 1e-3) / 1e9
    if os.environ.get("LATENT_FLUSH_L2") == "1":
        FLUSH = torch.empty(128 << 20, dtype=torch.uint8, device=dev)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, copy {bw:.0f} GB/s (read + write), batch {batch}{'; L2 flushed before each call' if FLUSH is not None else ''}")
    print(f"{'model':10s} {'ctx':>6s} {'MB read':>9s} {'floor':>8s} {'sdpa ms':>8s} {'floor%':>7s}")
    for name, hq, hkv in (("llama2-7b", 32, 32), ("llama3-8b", 32, 8)):
        for ctx in (4096, 8192, 16384, 32768):
            g = torch.Generator(device=dev).manual_seed(ctx + hkv)
            q = torch.randn(batch, hq, 1, 128, device=dev, dtype=torch.bfloat16, generator=g)
            k = torch.randn(batch, hkv, ctx, 128, device=dev, dtype=torch.bfloat16, generator=g)
            v = torch.randn(batch, hkv, ctx, 128, device=dev, dtype=torch.bfloat16, generator=g)
            gqa = hq != hkv
            ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa), reps)
            mb = (k.numel() + v.numel()) * 2 / 1e6
            floor = mb * 1e6 / (bw * 1e9) * 1e3
            print(f"{name:10s} {ctx:6d} {mb:9.1f} {floor:8.3f} {ms:8.3f} {100 * floor / ms:6.0f}%", flush=True)
            del q, k, v


if __name__ == "__main__":
    main()
