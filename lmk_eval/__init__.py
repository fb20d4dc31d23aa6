"""lmk-eval: which pooling should a text encoder use, on short and on long context?"""

from lmk_eval.config.variants import (
    GRANULARITIES,
    POOLINGS,
    STRATEGIES,
    LmkEvalError,
    Variant,
    make_variant,
)

__version__ = "0.1.0"

__all__ = [
    "GRANULARITIES",
    "POOLINGS",
    "STRATEGIES",
    "LmkEvalError",
    "Variant",
    "encoder",
    "make_variant",
]


def encoder(model=None, pooling="lmk", **options):
    """An mteb encoder (see ``lmk_eval.retrieval.mteb_adapter.encoder``); imports mteb only when called."""
    from lmk_eval.retrieval.mteb_adapter import encoder as _encoder

    return _encoder(model, pooling, **options)
