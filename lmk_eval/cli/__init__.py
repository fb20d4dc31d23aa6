"""The command line: ``lmk-eval`` (``python -m lmk_eval.cli``)."""

from lmk_eval.cli.commands import main

__all__ = ["main"]
