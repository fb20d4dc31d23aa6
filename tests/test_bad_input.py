"""Every bad input: one `lmk-eval: error:` line, exit 2, no traceback, nothing written.

Each case builds its bad file (or names an impossible path) under tmp_path and runs the real CLI
entry point in-process; the test snapshots tmp_path before and after to prove nothing was left.
"""

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from lmk_eval.cli.commands import main
from lmk_eval.model.loading import packaged_model_path
from tests.conftest import write_beir

RUN = ["--no-report", "--no-progress"]
GOOD_DOCS = [
    {"id": "d1", "text": "The cat sat on the mat."},
    {"id": "d2", "text": "Rain in Spain."},
]
GOOD_QUERIES = [{"id": "q1", "text": "Where did the cat sit?"}]


def folder(tmp: Path, **overrides: bytes) -> Path:
    """A valid BEIR folder with some files replaced by the given bytes."""
    f = write_beir(tmp / "data", GOOD_DOCS, GOOD_QUERIES, [("q1", "d1", 1)])
    for name, content in overrides.items():
        path = f / name.replace("__", "/")
        if path.suffix == ".gz":
            path.with_suffix("").unlink()
        path.write_bytes(content)
    return f


def run_folder(tmp: Path, **overrides: bytes) -> list[str]:
    return [
        "run",
        "--tasks",
        str(folder(tmp, **overrides)),
        "--pooling",
        "mean",
        "--output",
        str(tmp / "out"),
        *RUN,
    ]


def config(tmp: Path, extra: str, base: bool = True) -> list[str]:
    head = 'name = "bad"\ntasks = ["needle-depth-quick:depth_000"]\n' if base else ""
    if base and "poolings" not in extra:
        head += 'poolings = ["mean"]\n'
    (tmp / "bad.toml").write_bytes((head + extra).encode("latin-1"))
    return ["run", "--config", str(tmp / "bad.toml"), "--output", str(tmp / "out"), *RUN]


def stored_run(tmp: Path, sweep_json: str = "{}", cell_json: str | None = None) -> Path:
    run = tmp / "run"
    (run / "cells" / "c1").mkdir(parents=True)
    (run / "sweep.json").write_text(sweep_json)
    if cell_json is not None:
        (run / "cells" / "c1" / "cell.json").write_text(cell_json)
    return run


def a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("I am a file")
    return tmp / "file"


def truncated_gzip() -> bytes:
    body = "".join(json.dumps({"_id": f"d{i}", "text": "word " * 50}) + "\n" for i in range(200))
    data = gzip.compress(body.encode())
    return data[: len(data) // 2]


def model_without_landmark(tmp: Path) -> Path:
    """The packaged MiniLM whose tokenizer has neither [SEP] nor an EOS token."""
    src, dst = packaged_model_path(), tmp / "no-landmark"
    dst.mkdir()
    for name in ("config.json", "tokenizer.json", "vocab.txt", "model.safetensors"):
        (dst / name).symlink_to(src / name)
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    (dst / "tokenizer_config.json").write_text(json.dumps({**cfg, "sep_token": None}))
    return dst


def strategy_run(tmp: Path, strategy: str) -> list[str]:
    """A 1,024-token passkey run of mean pooling under one context strategy."""
    return [
        "run",
        "--tasks",
        "passkey-quick:test_256",
        "--pooling",
        "mean",
        "--strategy",
        strategy,
        "--max-length",
        "1024",
        "--output",
        str(tmp / "out"),
        *RUN,
    ]


CASES = {
    "corpus not UTF-8": (
        lambda t: run_folder(t, **{"corpus.jsonl": b'{"_id": "d1", "text": "caf\xe9"}\n'}),
        "corpus.jsonl' is not UTF-8 text (near line 1)",
    ),
    "queries not UTF-8": (
        lambda t: run_folder(t, **{"queries.jsonl": b'{"_id": "q1", "text": "\xff"}\n'}),
        "queries.jsonl' is not UTF-8 text",
    ),
    "sweep file not UTF-8": (lambda t: config(t, 'description = "caf\xe9"\n'), "is not UTF-8 text"),
    "qrels score inf": (
        lambda t: run_folder(t, **{"qrels__test.tsv": b"q1\td1\tinf\n"}),
        "score 'inf' is not an integer relevance grade",
    ),
    "qrels score 0.5": (
        lambda t: run_folder(t, **{"qrels__test.tsv": b"q1\td1\t0.5\n"}),
        "score '0.5' is not an integer relevance grade",
    ),
    "corrupt .gz": (
        lambda t: run_folder(t, **{"corpus.jsonl.gz": b"this is not gzip"}),
        "is a corrupt or truncated .gz file",
    ),
    "truncated .gz": (
        lambda t: run_folder(t, **{"corpus.jsonl.gz": truncated_gzip()}),
        "is a corrupt or truncated .gz file",
    ),
    "poolings = [5]": (lambda t: config(t, "poolings = [5]\n"), "poolings: entry 0 is 5"),
    "token_budget = 'lots'": (
        lambda t: config(t, 'token_budget = "lots"\n'),
        "token_budget: Input should be a valid integer (got 'lots')",
    ),
    "train = 5": (lambda t: config(t, "train = 5\n"), "train: Input should be a valid dictionary"),
    "interval = true": (
        lambda t: config(t, 'poolings = [{pooling = "lmk", interval = true}]\n'),
        "interval: Input should be a valid integer (got True)",
    ),
    "max_length = ['x']": (
        lambda t: config(t, 'max_length = ["x"]\n'),
        "max_length.0: Input should be a valid integer",
    ),
    "name escapes results/": (
        lambda t: config(
            t, 'name = "../escape"\ntasks = ["needle"]\npoolings = ["mean"]\n', base=False
        ),
        "name '../escape' must be letters",
    ),
    "unknown baseline": (
        lambda t: config(t, 'baseline = "nope"\n'),
        "baseline 'nope' is not a pooling of this sweep; choose one of: mean",
    ),
    "unknown [train] key": (
        lambda t: config(t, "[train]\nstepz = 3\n"),
        "unknown key 'train.stepz'",
    ),
    "pooler option of another pooler": (
        lambda t: config(
            t, 'poolings = ["gem"]\n[train]\npoolings = ["gem"]\npooler = {latents = 8}\n'
        ),
        "pooler option(s) ['latents'] are not options of gem (it takes ['p'])",
    ),
    "empty --pooling": (
        lambda t: ["run", "--pooling", ",", "--output", str(t / "out"), *RUN],
        "--pooling lists nothing",
    ),
    "empty --tasks": (
        lambda t: ["run", "--tasks", ",", "--output", str(t / "out"), *RUN],
        "--tasks lists nothing",
    ),
    "truncate above the model's positions": (
        lambda t: strategy_run(t, "truncate"),
        "max_length 1024 exceeds the model's 512 positions; use --strategy window",
    ),
    "unknown strategy": (
        lambda t: ["run", "--strategy", "window,stretch", "--output", str(t / "out"), *RUN],
        "unknown context strategy 'stretch'",
    ),
    "rope strategy on an absolute-position model": (
        lambda t: strategy_run(t, "rope-ntk"),
        "scales rotary positions, and this model has none",
    ),
    "lmk on a model without a landmark token": (
        lambda t: [
            "run",
            "--model",
            str(model_without_landmark(t)),
            "--pooling",
            "cls,mean,lmk",
            "--tasks",
            "needle-depth-quick:depth_000",
            "--output",
            str(t / "out"),
            *RUN,
        ],
        "neither a sep_token nor an eos_token",
    ),
    "--device cuda without a GPU": (
        lambda t: ["run", "--device", "cuda", "--output", str(t / "out"), *RUN],
        "device 'cuda' was asked for but torch sees no CUDA GPU",
    ),
    "--device tpu": (
        lambda t: ["run", "--device", "tpu", "--output", str(t / "out"), *RUN],
        "device 'tpu' is not 'cpu', 'cuda' or 'cuda:N'",
    ),
    "--encoders without ray": (
        lambda t: ["run", "--encoders", "2", "--output", str(t / "out"), *RUN],
        "--ray-address, --ray-cpus, --ray-logs and --encoders need --executor ray",
    ),
    "--encoders 0": (
        lambda t: ["run", "--executor", "ray", "--encoders", "0", "--output", str(t / "out"), *RUN],
        "--encoders must be >= 1, got 0",
    ),
    "--output under a file": (
        lambda t: ["run", "--output", str(a_file(t) / "out"), *RUN],
        "lies under the file",
    ),
    "--output in /proc": (
        lambda t: ["run", "--output", "/proc/lmk-eval-test/out", *RUN],
        "is not writable",
    ),
    "--output in /sys": (
        lambda t: ["run", "--output", "/sys/lmk-eval-test", *RUN],
        "is not writable",
    ),
    "--output is a file": (
        lambda t: ["run", "--output", str(a_file(t)), *RUN],
        "is a file, not a folder",
    ),
    "report --output-dir under a file": (
        lambda t: ["report", str(stored_run(t)), "--output-dir", str(a_file(t) / "r")],
        "lies under the file",
    ),
    "baseline -o under a file": (
        lambda t: ["baseline", str(stored_run(t)), "-o", str(a_file(t) / "b.json")],
        "lies under the file",
    ),
    "baseline -o in /proc": (
        lambda t: ["baseline", str(stored_run(t)), "-o", "/proc/lmk-eval-b.json"],
        "is not writable",
    ),
    "corrupt sweep.json": (
        lambda t: ["report", str(stored_run(t, "{not json")), "--output-dir", str(t / "r")],
        "sweep.json' is unreadable or not valid JSON",
    ),
    "empty cell.json": (
        lambda t: ["report", str(stored_run(t, cell_json="")), "--output-dir", str(t / "r")],
        "cell.json' is unreadable: not valid JSON (truncated?)",
    ),
    "truncated cell.json": (
        lambda t: [
            "check",
            str(stored_run(t, cell_json='{"cell": {"mo')),
            "--baseline",
            str(write(t / "b.json", '{"scores": {"a": 0.5}}')),
        ],
        "cell.json' is unreadable",
    ),
    "baseline with a list of scores": (
        lambda t: [
            "check",
            str(t),
            "--baseline",
            str(write(t / "b.json", '{"scores": [1, 2, 3]}')),
        ],
        "is not a baseline file: scores: Input should be a valid dictionary",
    ),
    "baseline with NaN score": (
        lambda t: [
            "check",
            str(t),
            "--baseline",
            str(write(t / "b.json", '{"scores": {"a": NaN}}')),
        ],
        "scores.a",
    ),
    "check --tolerance nan": (
        lambda t: ["check", str(t), "--baseline", str(t), "--tolerance", "nan"],
        "tolerance must be a finite number >= 0, got nan",
    ),
    "--config with --tasks": (
        lambda t: [
            "run",
            "--config",
            "quick",
            "--tasks",
            "scifact",
            "--output",
            str(t / "out"),
            *RUN,
        ],
        "--tasks, --max-length, --strategy, --attention-scale and --se-* build a sweep from flags",
    ),
    "--attention-scale temperature:0": (
        lambda t: [
            "run",
            "--strategy",
            "grouped",
            "--max-length",
            "1024",
            "--attention-scale",
            "logn,temperature:0",
            "--output",
            str(t / "out"),
            *RUN,
        ],
        "attention scale 'temperature:0' is not one of none, logn, temperature:T",
    ),
    "self-extend on absolute positions": (
        lambda t: [
            "run",
            "--strategy",
            "self-extend",
            "--max-length",
            "1024",
            "--output",
            str(t / "out"),
            *RUN,
        ],
        "--strategy self-extend regroups rotary positions, and this model has none",
    ),
    "attention scale under flash attention": (
        lambda t: [
            "run",
            "--strategy",
            "grouped",
            "--max-length",
            "1024",
            "--attn-implementation",
            "flash_attention_2",
            "--output",
            str(t / "out"),
            *RUN,
        ],
        "attention scaling and self-extend run through sdpa or eager attention",
    ),
    "train late_chunking": (
        lambda t: ["train", "--pooling", "late_chunking", "--output", str(t / "c")],
        "late_chunking is evaluation-only",
    ),
    "--token-budget 1": (
        lambda t: ["run", "--token-budget", "1", "--output", str(t / "out"), *RUN],
        "--token-budget: Input should be greater than or equal to 16",
    ),
    "--token-budget 15 built from flags": (
        lambda t: ["run", *SMALL, "--token-budget", "15", "--output", str(t / "out"), *RUN],
        "flags: --token-budget: Input should be greater than or equal to 16",
    ),
    "--se-group without self-extend": (
        lambda t: ["run", *SMALL, "--se-group", "4", "--output", str(t / "out"), *RUN],
        "--se-group and --se-window set how --strategy self-extend reads",
    ),
    "--se-window without self-extend": (
        lambda t: [
            "run",
            *SMALL,
            "--strategy",
            "grouped",
            "--se-window",
            "64",
            "--output",
            str(t / "out"),
            *RUN,
        ],
        "add --strategy self-extend or drop them",
    ),
    "--se-group 1": (
        lambda t: [
            "run",
            *SMALL,
            "--strategy",
            "self-extend",
            "--se-group",
            "1",
            "--output",
            str(t / "out"),
            *RUN,
        ],
        "--se-group: a group of 1 groups nothing",
    ),
    "se_group without self-extend in a file": (
        lambda t: config(t, "se_group = 4\n"),
        "grid.0: se_group set how self-extend reads",
    ),
    "an option that does not apply to its pooling": (
        lambda t: config(t, 'poolings = [{pooling = "cls", interval = 64}]\n'),
        "bad.toml': poolings.0: interval does not apply to cls",
    ),
    "a length in a pooling table": (
        lambda t: config(t, 'poolings = [{pooling = "mean", max_length = 64}]\n'),
        "poolings.0: max_length is how a document is read, not a pooling option",
    ),
    "an unknown option in a pooling table": (
        lambda t: config(t, 'poolings = [{pooling = "lmk", intervall = 64}]\n'),
        "bad.toml': poolings.0: unknown option(s) intervall",
    ),
    "check on a missing results/ci": (
        lambda t: [
            "check",
            "results/ci",
            "--baseline",
            str(write(t / "b.json", '{"scores": {"a": 0.5}}')),
        ],
        "compute them first: `lmk-eval run --config ci --output results/ci` (or `make ci-gate`",
    ),
    "baseline of a missing results/demo": (
        lambda t: ["baseline", "results/demo", "-o", str(t / "b.json")],
        "compute them first: `make demo`",
    ),
    "--interval on poolings without one": (
        lambda t: ["run", *SMALL, "--interval", "64", "--output", str(t / "out"), *RUN],
        "--interval applies to none of the poolings (mean)",
    ),
    "--baseline not in the sweep": (
        lambda t: [
            "run",
            "--pooling",
            "mean,lmk",
            "--baseline",
            "cls",
            "--output",
            str(t / "out"),
            *RUN,
        ],
        "baseline 'cls' is not a pooling of this sweep; choose one of: lmk[fixed/32], mean",
    ),
    "--baseline ambiguous": (
        lambda t: [
            "run",
            "--config",
            str(
                write(
                    t / "two.toml",
                    'name = "two"\ntasks = ["needle"]\npoolings = ["lmk", {pooling = "lmk", granularity = "sentence"}]\n',
                )
            ),
            "--baseline",
            "lmk",
            "--output",
            str(t / "out"),
            *RUN,
        ],
        "baseline 'lmk' is ambiguous: say which of lmk[fixed/32], lmk[sentence]",
    ),
    "baseline keyed by labels": (
        lambda t: [
            "check",
            str(t),
            "--baseline",
            str(
                write(
                    t / "b.json",
                    '{"key": "model|task|pooling|max_length|strategy|split", "scores": {"a": 0.5}}',
                )
            ),
        ],
        "write it again with `lmk-eval baseline RUN -o FILE`",
    ),
    "train --steps 0": (
        lambda t: ["train", "--steps", "0", "--output", str(t / "c")],
        "steps: Input should be greater than or equal to 1",
    ),
    "train --lr inf": (
        lambda t: ["train", "--lr", "inf", "--output", str(t / "c")],
        "--lr: Input should be a finite number",
    ),
    # the second pass (issue 26): paths the filesystem cannot hold, found before any work
    "--output name over 255 bytes": (
        lambda t: ["run", "--output", str(t / ("o" * 300)), *SMALL, *RUN],
        "has a name of 300 bytes",
    ),
    "--report-dir name over 255 bytes": (
        lambda t: [
            "run",
            "--report-dir",
            str(t / ("r" * 300)),
            "--output",
            str(t / "out"),
            *SMALL,
            "--no-progress",
        ],
        "has a name of 300 bytes",
    ),
    "report file name over 255 bytes": (
        lambda t: [
            "run",
            "--report-dir",
            str(t / "r"),
            "--output",
            str(t / ("o" * 253)),
            *SMALL,
            "--no-progress",
        ],
        "has a name of 256 bytes",
    ),
    "--output a dangling link": (
        lambda t: ["run", "--output", str(link(t / "out", t / "gone")), *SMALL, *RUN],
        "is a link to",
    ),
    "set-aside is a file": (
        lambda t: [
            "run",
            "--output",
            str(write(t / "out" / "set-aside", "x").parent),
            *SMALL,
            *RUN,
        ],
        "is a file where output folder keeps a folder",
    ),
    "baseline -o name over 255 bytes": (
        lambda t: ["baseline", str(stored_run(t)), "-o", str(t / ("b" * 300))],
        "has a name of 300 bytes",
    ),
    "--name over 120 characters": (
        lambda t: ["run", "--name", "n" * 130, *SMALL, "--output", str(t / "out"), *RUN],
        "130 characters long; at most 120",
    ),
    "--max-length 1 with cls": (
        lambda t: [
            "run",
            "--pooling",
            "cls",
            "--max-length",
            "1",
            "--tasks",
            "scifact-quick",
            "--output",
            str(t / "out"),
            *RUN,
        ],
        "too small to hold the special tokens around one token of text",
    ),
    "empty corpus.jsonl.gz": (
        lambda t: run_folder(t, **{"corpus.jsonl.gz": gzip.compress(b"")}),
        "corpus.jsonl.gz' holds no records (empty, or an empty archive)",
    ),
    "zero-width-only document": (
        lambda t: run_folder(
            t,
            **{
                "corpus.jsonl": b'{"_id": "d1", "text": "\\u200b\\u2060 \\ufeff"}\n'
                b'{"_id": "d2", "text": "Rain."}\n'
            },
        ),
        "empty text for 'd1'",
    ),
    "qrels all grade 0": (
        lambda t: run_folder(t, **{"qrels__test.tsv": b"q1\td1\t0\nq1\td2\t0\n"}),
        "judges no document relevant (every grade is 0 or less)",
    ),
    "--ray-timeout 0": (
        lambda t: [
            "run",
            "--executor",
            "ray",
            "--ray-timeout",
            "0",
            "--output",
            str(t / "out"),
            *SMALL,
            *RUN,
        ],
        "--ray-timeout must be a number of seconds > 0",
    ),
}
SMALL = ["--tasks", "needle-depth-quick:depth_000", "--pooling", "mean"]


def link(path: Path, target: Path) -> Path:
    path.symlink_to(target)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a stray reports/ or results/ would show up in the snapshot
    build, message = CASES[case]
    args = build(tmp_path)
    before = snapshot(tmp_path)
    code = main(args)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("lmk-eval: error: "), captured.err
    assert message in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert snapshot(tmp_path) == before


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A folder that behaves as a read-only mount: creating anything under it fails with EROFS,
    as the kernel answers (no mount: tests leave the host alone)."""
    import errno

    folder = tmp_path / "ro"
    folder.mkdir()
    real_mkdir, real_open = os.mkdir, os.open

    def refused(path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(folder)

    def mkdir(path, *args, **kwargs):
        if refused(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if refused(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    return folder


def test_an_output_on_a_read_only_filesystem_is_one_line(read_only_dir, capsys):
    assert main(["run", "--output", str(read_only_dir / "out"), *RUN]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is not writable (Read-only file system)" in line
    assert not os.listdir(read_only_dir)


def test_a_model_without_landmark_is_refused_before_any_cell(tmp_path):
    """The cls and mean cells of that sweep could be computed, but nothing is: lmk is checked first."""
    out = tmp_path / "out"
    args = [
        "run",
        "--model",
        str(model_without_landmark(tmp_path)),
        "--pooling",
        "cls,mean,lmk",
        "--tasks",
        "needle-depth-quick:depth_000",
        "--output",
        str(out),
        *RUN,
    ]
    assert main(args) == 2
    assert not out.exists()
    shutil.rmtree(tmp_path / "no-landmark")


def test_a_self_extend_window_past_the_positions_is_refused(tiny, tmp_path, capsys):
    qwen2 = tiny[0]["qwen2"]  # 2,048 rotary positions
    args = [
        "plan",
        "--no-measure",
        "--model",
        str(qwen2),
        "--strategy",
        "self-extend",
        "--max-length",
        "4096",
        "--tasks",
        "passkey-quick:test_256",
        "--pooling",
        "mean",
    ]
    assert main([*args, "--se-window", "1024"]) == 0
    capsys.readouterr()
    assert main([*args, "--se-window", "2048"]) == 2
    assert "se_window 2048 is not below" in capsys.readouterr().err
