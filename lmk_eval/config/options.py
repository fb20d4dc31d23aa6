"""How every model of a sweep is loaded and fed: prompts, landmark token, remote code, attention,
dtype.

These change embeddings for every pooling, so they are part of each cell's identity and shown in
the report. Set them in a sweep file (top-level keys of the same names) or with the run flags.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


class EncodeOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    query_prompt: str | None = None  # None: the model's own; "": none
    document_prompt: str | None = None
    landmark_token: str | None = None  # None: [SEP], else </s>, else EOS
    trust_remote_code: bool = False
    attn_implementation: str | None = None  # None: transformers chooses
    dtype: str = "float32"  # weights and activations; pooling and scoring always run in float32

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        from lmk_eval.common.hardware import DTYPE_CHOICES

        if v not in DTYPE_CHOICES:
            raise ValueError(f"dtype {v!r} is not one of {', '.join(DTYPE_CHOICES)}")
        return v

    @field_validator("attn_implementation")
    @classmethod
    def _attention(cls, v: str | None) -> str | None:
        if v is not None and v not in ATTENTION:
            raise ValueError(f"attn_implementation {v!r} is not one of {', '.join(ATTENTION)}")
        return v

    def loading(self) -> dict[str, Any]:
        """Keyword arguments for transformers' from_pretrained."""
        out: dict[str, Any] = {}
        if self.trust_remote_code:
            out["trust_remote_code"] = True
        return out

    def identity(self) -> dict[str, Any]:
        return self.model_dump(exclude_defaults=True)


OPTION_KEYS = tuple(EncodeOptions.model_fields)
MIN_TOKEN_BUDGET = 16  # padded tokens per batch: below it no text with its special tokens fits


DEFAULT_OPTIONS = EncodeOptions()


class RayOptions(BaseModel):
    """Where and how a Ray run joins its cluster (``lmk-eval run --executor ray``); checked in one
    line each by ``lmk_eval.run.executors.check_ray`` before any work."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str | None = None  # None: start a local cluster on this machine
    cpus: int | None = None  # CPUs of that local cluster; None: all of them
    encoders: int | None = None  # split each corpus over this many model replicas (Ray actors)
    timeout: float = 60.0  # seconds to join a cluster before giving up (--ray-timeout)
    show_logs: bool = False  # Ray's own log lines in the terminal
