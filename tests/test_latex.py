"""The LaTeX tables say what the markdown report says: the same numbers, bold and † in the same
cells, as booktabs tables."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from lmk_eval.cli.commands import main

QUICK = Path(__file__).parents[1] / "results" / "quick"


def _markdown_rows(md: str) -> dict[str, list[str]]:
    section = md[md.index("## Main scores") :]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "@" in line][:4]
    return {
        cells[0]: cells[3:]
        for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)
    }


def _latex_rows(tex: str) -> dict[str, list[str]]:
    first = tex[: tex.index(r"\end{table}")]
    rows = [line for line in first.splitlines() if "@" in line and line.endswith(r"\\")]
    out = {}
    for line in rows:
        cells = [c.strip() for c in line.removesuffix(r"\\").split("&")]
        plain = [
            re.sub(r"\\textbf\{(.*)\}", r"**\1**", c).replace(r"\textsuperscript{\dag}", "†")
            for c in cells[1:]
        ]
        out[cells[0]] = [re.sub(r"\*\*(.*?)†\*\*", r"**\1†**", c) for c in plain]
    return out


def test_latex_tables_match_the_markdown_report(tmp_path):
    run = tmp_path / "quick"
    shutil.copytree(QUICK, run)
    assert main(["report", str(run), "--output-dir", str(tmp_path / "reports"), "--latex"]) == 0
    tex = (tmp_path / "reports" / "quick.tex").read_text()
    md = (tmp_path / "reports" / "quick.md").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert _latex_rows(tex) == _markdown_rows(md) and len(_markdown_rows(md)) == 4
    assert tex.count(r"\begin{table}") == 1 + md.count("(score ×100 per document length in tokens)")
