"""The end-to-end benchmark's report names the commit it measured, not a temporary folder."""

import subprocess
from pathlib import Path

from benchmarks.end_to_end import commit_of

ROOT = Path(__file__).resolve().parents[1]


def test_a_checkout_is_named_by_its_commit():
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert commit_of(ROOT) == head


def test_a_folder_outside_git_says_so(tmp_path):
    assert commit_of(tmp_path).startswith("unknown")
