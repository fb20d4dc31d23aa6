"""The house rules of ``lmk_eval/`` that no linter states: every file is written by the one atomic
writer, and the library pieces that replaced hand-written ones do what they replaced. (Imports
running one way: the import-linter contract in pyproject.toml, run by ``make test``; size: ruff's
complexity rules.)"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lmk_eval"


WRITES = (
    "write_text",
    "write_bytes",
    "savefig",
    "umask",
    "mkstemp",
    "mkdtemp",
    "NamedTemporaryFile",
)


def test_every_file_is_written_by_the_atomic_writer():
    """Outside files.py nothing writes, creates temporary files or reads the umask by itself."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in WRITES
            ):
                if node.func.attr == "savefig" and not isinstance(node.args[0], ast.Name):
                    continue
                found.append(f"{path.name} {node.func.attr}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "open"
                and any(
                    isinstance(a, ast.Constant) and str(a.value)[:1] in "wax" for a in node.args[1:]
                )
            ):
                found.append(f"{path.name} open")
    assert sorted(found) == [
        "executors.py open",  # Ray's own log while joining a cluster: appended to by its C++ core
        "plots.py savefig",  # into an in-memory buffer, which the atomic writer then writes
    ]


def test_the_atomic_writer_honours_the_umask_and_leaves_no_temporary_file(tmp_path):
    import os

    from lmk_eval.common.files import atomic_write_bytes, staging_dir

    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        folder = staging_dir(tmp_path, "stage-")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
    assert folder.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.bin", folder.name])


def test_parameters_are_counted_from_safetensors_headers_whatever_the_dtype(tiny, tmp_path):
    import torch
    from transformers import AutoModel

    from lmk_eval.model.loading import parameter_count

    dirs, _ = tiny
    model = AutoModel.from_pretrained(dirs["modernbert"])
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    files = sorted((tmp_path / "bf16").glob("*.safetensors"))
    assert parameter_count(files) == sum(p.numel() for p in model.parameters())
    # what file bytes / 4 said
    assert parameter_count(files) > sum(f.stat().st_size for f in files) // 4


def test_an_out_of_memory_batch_is_retried_with_a_smaller_token_budget(monkeypatch):
    """On CUDA the estimated budget is only a start: accelerate lowers it until a group fits."""
    from lmk_eval.model.encoding import TextEncoder

    encoder = TextEncoder(None, token_budget=10_000)
    encoder.device = "cuda"  # the retry path; no GPU is touched
    tried = []

    def encode_at(budget, texts, groups, prompt):
        tried.append(budget)
        if budget > 8_500:
            raise RuntimeError("CUDA out of memory.")
        return budget

    monkeypatch.setattr(encoder, "_encode_at", encode_at)
    assert encoder._encode_groups(["a text"], [], "") == 8_100
    assert tried == [10_000, 9_000, 8_100]


def test_only_the_strategy_table_names_a_strategy():
    """Adding a context strategy is one entry in reading/strategies.py: no other module compares
    with, or defaults to, a strategy's name."""
    from lmk_eval.reading.strategies import STRATEGIES

    naming = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in STRATEGIES:
                naming.add(str(path.relative_to(PACKAGE)))
    assert naming == {
        "reading/strategies.py",
        "run/identities.py",  # "window": SelfExtend's neighbour window, a key of stored identities
    }
