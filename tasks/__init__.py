"""The shipped sweep files, installed as package data (``lmk_eval.tasks``) so that an installed
``lmk-eval run --config quick`` works from any directory; edit them here, in ``tasks/``."""
