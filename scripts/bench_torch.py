#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the host benchmark shapes, single-threaded.

The anchor for BENCHMARKS.md's Host section: the same shapes (H, Lq, Lk, d) and masks as
benches/attention.rs, f32 (and bf16), one thread (torch.set_num_threads(1)). GFLOP/s counts
4*H*Lq*Lk*d per call; masked shapes also show the rate on the work the mask leaves. Prints a
markdown table.

Every shape runs PyTorch's CPU flash-attention kernel (the window as a dense boolean mask).
Each time is the best batch (about 50 ms of back-to-back calls) within the given seconds.

Usage: python3 scripts/bench_torch.py [seconds per shape, default 1]
When torch is not importable the script says so and exits 0 (installing torch is not part of
the project's test command).
"""

import os
import sys
import time
import warnings

# One thread from the start (torch.set_num_threads(1) below also sets it; this covers OpenMP
# and MKL pools created at import).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# A torch wheel without numpy warns about it on import; numpy is not used here.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("bench_torch.py: torch is not importable with this Python; no PyTorch comparison.")
    sys.exit(0)

# (name, H, Lq, Lk, d, mask): mask is None, "causal" (top-left aligned, Lq == Lk), "window"
# (causal sliding window of 128 keys) or "decode" (the last position: every key, no mask).
SHAPES = [
    ("1x128x128x64", 1, 128, 128, 64, None),
    ("8x128x128x64", 8, 128, 128, 64, None),
    ("1x1024x1024x64", 1, 1024, 1024, 64, None),
    ("1x1024x1024x64 causal", 1, 1024, 1024, 64, "causal"),
    ("8x1x512x64 decode", 8, 1, 512, 64, "decode"),
    ("1x64x64x16", 1, 64, 64, 16, None),
    ("1x1024x1024x64 window128", 1, 1024, 1024, 64, "window"),
]
WINDOW = 128


def visited(lq, lk, mask):
    """Keys visited per head under the mask."""
    if mask == "causal":
        return sum(min(i + 1, lk) for i in range(lq))
    if mask == "window":
        return sum(min(i + 1, WINDOW) for i in range(lq))
    return lq * lk


def time_call(fn, seconds):
    """Best mean time per call over batches (other processes can only slow a batch down)."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    per_batch = max(1, int(0.05 / once))
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == float("inf"):
        start = time.perf_counter()
        for _ in range(per_batch):
            fn()
        best = min(best, (time.perf_counter() - start) / per_batch)
    return best


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print()
    print("| shape (H×Lq×Lk×d) | f32 µs/call | f32 GFLOP/s | bf16 GFLOP/s |")
    print("|---|---|---|---|")
    for name, h, lq, lk, d, mask in SHAPES:
        rates = []
        micros = None
        for dtype in (torch.float32, torch.bfloat16):
            q = torch.rand(1, h, lq, d, dtype=dtype) * 2 - 1
            k = torch.rand(1, h, lk, d, dtype=dtype) * 2 - 1
            v = torch.rand(1, h, lk, d, dtype=dtype) * 2 - 1
            kwargs = {}
            if mask == "causal":
                kwargs["is_causal"] = True
            elif mask == "window":
                i = torch.arange(lq).unsqueeze(1)
                j = torch.arange(lk).unsqueeze(0)
                kwargs["attn_mask"] = (j <= i) & (j > i - WINDOW)
            with torch.inference_mode():
                try:
                    t = time_call(lambda: F.scaled_dot_product_attention(q, k, v, **kwargs), seconds)
                except RuntimeError as error:  # a dtype without a CPU kernel
                    rates.append(f"– ({error.__class__.__name__})")
                    continue
            nominal = 4 * h * lq * lk * d / t / 1e9
            done = 4 * h * visited(lq, lk, mask) * d / t / 1e9
            rate = f"{nominal:.1f}" + (f" ({done:.1f} on the work done)" if mask in ("causal", "window") else "")
            if mask == "decode":
                rate += f", {2 * h * lk * d * q.element_size() / t / 1e9:.1f} GB/s K+V"
            rates.append(rate)
            if dtype == torch.float32:
                micros = t * 1e6
        print(f"| {name} | {micros:.1f} | {rates[0]} | {rates[1]} |")


if __name__ == "__main__":
    main()
