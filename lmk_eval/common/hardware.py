"""What the machine offers: the device, which dtypes it computes natively, how much fits.

``auto`` never guesses from a dtype's name: a CPU computes bf16 natively only with AVX512-BF16 or
AMX (x86) or the BF16 extension (Arm); without them torch emulates it, 4x slower than float32 on
the Xeon this was written on (57 vs 224 GFLOP/s for a 2048^2 matmul).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from lmk_eval.common.errors import LmkEvalError

DTYPE_NAMES = ("float32", "bfloat16", "float16")
DTYPE_CHOICES = (*DTYPE_NAMES, "auto")
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX512-BF16 / AMX, Arm BF16

log = logging.getLogger("lmk_eval")


def torch_dtype(name: str):
    """The torch dtype of a name in DTYPE_NAMES (torch is imported here, not with the module:
    the CLI's help and checks never need it)."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (x86 'flags', Arm 'Features'); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_description() -> str:
    """The CPU model, threads and bf16 features, to name beside every measured figure."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "CPU")
    bf16 = sorted(f for f in cpu_flags() if "bf16" in f or "amx" in f)
    import torch

    return f"{name}, {torch.get_num_threads()} threads, bf16 features: {', '.join(bf16) or 'none'}"


def machine_description(device: str) -> str:
    """Where a cell was computed, for its timing: the accelerator's name, or the CPU's."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} ({device})"
    if device.startswith("mps"):
        return "Apple GPU (mps)"
    return cpu_description()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str, device: str) -> tuple[str, str]:
    """(the dtype that will run, why): ``auto`` becomes the fastest dtype the device computes
    natively; an explicit dtype is kept, even where it is slow (the reason says so)."""
    if name not in DTYPE_CHOICES:
        raise LmkEvalError(f"dtype {name!r} is not one of {', '.join(DTYPE_CHOICES)}")
    on_cuda = device.startswith("cuda")
    if name == "auto":
        if on_cuda:
            import torch

            if torch.cuda.is_bf16_supported():
                return "bfloat16", "the GPU has bf16 tensor cores"
            return "float16", "the GPU has no bf16 support; float16 is its native half precision"
        native = sorted(cpu_flags() & NATIVE_BF16_FLAGS)
        if native:
            return "bfloat16", f"this CPU computes bf16 natively ({', '.join(native)})"
        return "float32", "this CPU has no native bf16 (no avx512_bf16, amx_bf16 or bf16 flag)"
    if not on_cuda and name == "float16":
        return name, "float16 on a CPU is emulated and very slow"
    if not on_cuda and name == "bfloat16" and not cpu_flags() & NATIVE_BF16_FLAGS:
        return name, "this CPU has no native bf16: expect it to be slower than float32"
    return name, "as asked"


def check_device(device: str) -> None:
    """An explicitly requested accelerator that is not there is an error, never a silent CPU run."""
    if device != "cpu" and not (
        device == "cuda" or device.startswith("cuda:") and device[5:].isdigit()
    ):
        raise LmkEvalError(f"device {device!r} is not 'cpu', 'cuda' or 'cuda:N'")
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise LmkEvalError(
            f"device {device!r} was asked for but torch sees no CUDA GPU (torch {torch.__version__});"
            " run on a GPU machine or use --device cpu"
        )


CPU_TOKEN_BUDGET = 8192  # padded tokens per batch: bounds attention memory for 512-token windows
MAX_TOKEN_BUDGET = 1 << 20


def bytes_per_token(config, dtype: str, length: int, all_layers: bool = False) -> int:
    """Peak activation bytes per padded token of one inference forward pass (one layer is alive
    at a time): hidden in/out, Q/K/V and attention output, the feed-forward expansion in the
    model's dtype, and eager attention's float32 score row per head (an upper bound for SDPA)."""
    width = {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]
    h = config.hidden_size
    inner = getattr(config, "intermediate_size", 4 * h)
    heads = getattr(config, "num_attention_heads", 1)
    total = width * (8 * h + 2 * inner) + 4 * heads * length
    if all_layers:  # layer_mean keeps every layer's states
        total += width * h * getattr(config, "num_hidden_layers", 1)
    return total


def token_budget_for(free_bytes: int, per_token: int, share: float = 0.5) -> int:
    """Padded tokens per batch that use ``share`` of the free memory, within [CPU budget, 2^20]."""
    return max(
        CPU_TOKEN_BUDGET, min(MAX_TOKEN_BUDGET, int(free_bytes * share) // max(per_token, 1))
    )


def default_token_budget(device: str, config, dtype: str, length: int) -> tuple[int, str]:
    """(budget, why): on CUDA sized from the device's free memory, on a CPU the fixed 8,192."""
    if not device.startswith("cuda"):
        return CPU_TOKEN_BUDGET, "CPU default"
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    per = bytes_per_token(config, dtype, length)
    budget = token_budget_for(free, per)
    return (
        budget,
        f"half of {free / 2**30:.1f} GiB free on {device} at ~{per / 1024:.0f} KiB per token",
    )


def flops_per_token(config, length: int) -> float:
    """Forward FLOPs per token: 2 x the layers' weights (attention 4h^2, MLP 2hi, 3hi when gated)
    plus attention over ``length`` positions (4 x length x h per layer)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    inner = getattr(config, "intermediate_size", 4 * h)
    gated = getattr(config, "model_type", "") in {
        "modernbert",
        "qwen2",
        "llama",
        "mistral",
        "qwen3",
    }
    weights = layers * (4 * h * h + (3 if gated else 2) * h * inner)
    return 2 * weights + 4 * layers * length * h


ACCELERATORS = {  # `lmk-eval plan --on`: name and dense bf16 peak FLOP/s (vendor datasheets, no sparsity)
    "h100": ("NVIDIA H100 SXM", 989e12),
    "h200": ("NVIDIA H200", 989e12),
    "a100": ("NVIDIA A100 SXM", 312e12),
    "l4": ("NVIDIA L4", 121e12),
    "a10g": ("NVIDIA A10G", 125e12),
}
