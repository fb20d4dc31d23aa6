"""Where checkpoints trained before lmk-eval 0.1's subpackages find their modules.

sentence-transformers names a saved model's modules by import path in ``modules.json``
(``lmk_eval.st_modules.LandmarkTransformer``); the classes now live in
``lmk_eval.model.st_modules``, and this name keeps those checkpoints loading.
"""

from lmk_eval.model.st_modules import HarnessPooling, LandmarkTransformer

__all__ = ["HarnessPooling", "LandmarkTransformer"]
