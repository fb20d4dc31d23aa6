"""Every package under lmk_eval/ is found, plus the top-level tasks/ folder as lmk_eval.tasks.

Everything else about the distribution is in pyproject.toml; a [tool.setuptools.packages.find]
table finds only folders below the package, not a folder mapped from elsewhere, hence this file.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["lmk_eval", "lmk_eval.*"]), "lmk_eval.tasks"])
