"""The plan of the shipped `paper` sweep, made on a machine without the Hugging Face hub.

Run with ``.venv/bin/python benchmarks/paper_plan.py`` (about ten minutes on 2 cores: it times the model on each task's texts); writes
``reports/paper-plan.md``. `lmk-eval plan --config paper --on h100` needs ModernBERT-base's
tokenizer and configuration and, for the time on this machine, a short forward of the model. With
no hub here, a stand-in hub on 127.0.0.1 (the test suite's) serves ``answerdotai/ModernBERT-base``
as a model of exactly ModernBERT-base's configuration (transformers' ModernBertConfig defaults:
22 layers, width 768, 8,192 positions) with random weights and MiniLM's WordPiece tokenizer, and
every dataset of the sweep at mteb's pinned revision (miniature copies: the plan asks the hub for
each dataset's commit, as the run does, and counts from mteb's statistics): speed does not depend
on the weights, and the hub tasks' token counts come from mteb's statistics, not from the
tokenizer or the files. With the hub reachable, run the command itself instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmk_eval.common.hardware import cpu_description  # noqa: E402
from tests.fake_hub import FakeHub, Repo, folder_files  # noqa: E402
from tests.hub_catalogue import paper_tasks, repos_for  # noqa: E402


def build_modernbert_base(folder: Path) -> Path:
    import torch
    from transformers import BertTokenizerFast, ModernBertConfig, ModernBertModel

    from lmk_eval.model.loading import packaged_model_path

    tokenizer = BertTokenizerFast.from_pretrained(str(packaged_model_path()))
    config = ModernBertConfig(
        pad_token_id=0, cls_token_id=101, sep_token_id=102, bos_token_id=101, eos_token_id=102
    )
    torch.manual_seed(0)
    ModernBertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="lmk-paper-plan-") as tmp:
        model = build_modernbert_base(Path(tmp) / "modernbert-base")
        repo = Repo("model", "answerdotai/ModernBERT-base", "8" * 40, folder_files(model))
        with FakeHub([repo, *repos_for(paper_tasks())]) as hub:
            env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
            env |= {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(Path(tmp) / "hf")}
            done = subprocess.run(
                [sys.executable, "-m", "lmk_eval.cli", "plan", "--config", "paper", "--on", "h100"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
    if done.returncode:
        sys.exit(f"lmk-eval plan failed:\n{done.stderr[-3000:]}")
    plan = done.stdout.strip()
    text = [
        "# Plan of the `paper` sweep",
        "",
        "`.venv/bin/python benchmarks/paper_plan.py`, i.e. `lmk-eval plan --config paper --on h100` with"
        " ModernBERT-base's exact configuration and random weights served by a stand-in hub (no hub"
        f" here; see the script). Time here measured on {cpu_description()}; the H100 column is"
        " computed, not measured.",
        "",
        plan,
        "",
    ]
    (ROOT / "reports" / "paper-plan.md").write_text("\n".join(text))
    print(plan)


if __name__ == "__main__":
    main()
