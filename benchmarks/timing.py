"""Timing pieces the benchmark scripts share: the device's bf16 (or any dtype's) matmul peak and
the raw forward over pre-built batches. Imports torch only, so the GPU check can use it."""

from __future__ import annotations

import time

import torch


def sync(device: str) -> None:
    """Wait for queued CUDA work, so a timer reads finished work (no-op on a CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(
    dtype: torch.dtype, device: str, sizes: tuple[int, ...] = (2048, 4096), repeats: int = 3
) -> float:
    """FLOP/s of the best of several square matmuls (what the hardware does at its best)."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, dtype=torch.float32, device=device).to(dtype)
        b = torch.randn(n, n, dtype=torch.float32, device=device).to(dtype)
        a @ b  # warm up kernels and caches
        for _ in range(repeats):
            sync(device)
            started = time.perf_counter()
            a @ b
            sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - started))
    return best


def forward_tokens_per_s(model, batches, device: str = "cpu") -> float:
    """Real tokens/s of ``model`` alone over (input_ids, attention_mask) batches."""
    real = sum(int(m.sum()) for _, m in batches)
    sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        for ids, mask in batches:
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
    sync(device)
    return real / (time.perf_counter() - started)
