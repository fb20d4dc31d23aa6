"""A sweep from the command line: `lmk-eval run`'s flags merged with a sweep file (or the shipped
quick sweep) into one raw sweep, checked once by the schema in ``sweep.py``, with errors naming
the flags the user typed."""

from __future__ import annotations

import re
from typing import Any

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.common.provenance import digest
from lmk_eval.config.sweep import NAME_LIMIT, SHORTHAND, pooling_tables, read_sweep_file
from lmk_eval.config.variants import inapplicable_options
from lmk_eval.reading.strategies import takes_self_extend
from lmk_eval.run.sweeps import sweep_from_dict

DEFAULT_CONFIG = "quick"  # what `lmk-eval run` runs with no sweep-shaping flag
FLAG_POOLINGS = ["cls", "mean", "lmk"]  # --pooling's default for a sweep built from flags
FLAG_TASKS = ["scifact-quick"]
POOLING_OPTIONS = ("granularity", "interval", "intervals", "seed", "layers", "placement")
ENCODING_FLAGS = (
    "query_prompt",
    "document_prompt",
    "landmark_token",
    "attn_implementation",
    "dtype",
    "device",
    "token_budget",
    "baseline",
)


def _flags_name(tasks: list[str], poolings: list[str]) -> str:
    """A readable name from the first task and the poolings; a long one is cut and ends in a
    hash of the whole, so two long flag sets never share a folder."""
    first = tasks[0].rstrip("/").split("/")[-1].split(":")[0]
    name = (
        re.sub(r"[^A-Za-z0-9._+-]", "_", "-".join([first, "+".join(poolings)])).lstrip("._+-")
        or "sweep"
    )
    if len(name) <= NAME_LIMIT:
        return name
    return f"{name[: NAME_LIMIT - 9].rstrip('._+-')}-{digest(name, 8)}"


def sweep_dict_from_args(args) -> tuple[dict, str, str]:
    """The sweep the command line asks for as one raw dict (--config, else the flags, else the
    shipped quick sweep) with every flag merged in, its default name and how errors name it."""
    shaping = {
        "poolings": args.pooling,
        "tasks": args.tasks,
        "max_length": args.max_length,
        "strategy": args.strategy,
        "attention_scale": args.attention_scale,
        "se_group": args.se_group,
        "se_window": args.se_window,
    }
    _refuse_contradictions(args, shaping)
    if args.config or (all(v is None for v in shaping.values()) and args.model is None):
        data, name, where = read_sweep_file(args.config or DEFAULT_CONFIG)
        if args.pooling:
            data = {**data, "poolings": args.pooling}
    else:
        shaping["poolings"] = shaping["poolings"] or FLAG_POOLINGS
        shaping["tasks"] = shaping["tasks"] or FLAG_TASKS
        name = args.name or _flags_name(shaping["tasks"], shaping["poolings"])
        data = {"name": name, **{k: v for k, v in shaping.items() if v is not None}}
        where = "flags"
    return _with_encoding_flags(args, _with_pooling_flags(args, data, where)), name, where


def _refuse_contradictions(args, shaping: dict[str, Any]) -> None:
    """Flags that list nothing, SelfExtend values without self-extend, grid flags beside --config."""
    for flag in ("pooling", "tasks", "max_length", "strategy", "attention_scale"):
        if getattr(args, flag) == []:
            raise LmkEvalError(f"--{flag.replace('_', '-')} lists nothing; give at least one value")
    if (args.se_group is not None or args.se_window is not None) and not takes_self_extend(
        args.strategy or []
    ):
        raise LmkEvalError(
            "--se-group and --se-window set how --strategy self-extend reads; add"
            " --strategy self-extend or drop them"
        )
    if args.config and any(v is not None for k, v in shaping.items() if k != "poolings"):
        raise LmkEvalError(
            "--tasks, --max-length, --strategy, --attention-scale and --se-* build a sweep from flags;"
            " with --config, change its [[grid]] blocks (a copy of the file) instead"
        )


def _with_pooling_flags(args, data: dict, where: str) -> dict:
    """Pooling option flags (--interval, --exclude-prompt, ...) merged into the pooling tables."""
    options = {k: getattr(args, k) for k in POOLING_OPTIONS if getattr(args, k) is not None}
    if args.exclude_prompt:
        options["include_prompt"] = False
    if options and isinstance(data.get("poolings"), list):
        try:
            tables = pooling_tables(data["poolings"])
        except ValueError as exc:
            raise LmkEvalError(f"{where}: poolings: {exc}") from None
        data["poolings"] = _with_flag_options(tables, options)
    return data


def _with_encoding_flags(args, data: dict) -> dict:
    """--model and how every model is loaded and fed (prompts, dtype, remote code)."""
    if args.model:
        data["models"] = [args.model]
    data |= {k: getattr(args, k) for k in ENCODING_FLAGS if getattr(args, k) is not None}
    if args.trust_remote_code:
        data["trust_remote_code"] = True
    return data


def _with_flag_options(
    tables: list[dict[str, Any]], options: dict[str, Any]
) -> list[dict[str, Any]]:
    """Pooling flags (--interval 64) set on every pooling they apply to; one that applies to none
    of them is refused, as a sweep file's ``interval = 64`` on ``cls`` is."""
    out, used = [], set()
    for table in tables:
        merged = {**table, **options}
        extra = set(inapplicable_options(merged)) - set(table)
        used |= set(options) - extra
        out.append({k: v for k, v in merged.items() if k not in extra})
    unused = [k for k in options if k not in used]
    if unused:
        flags = ", ".join(
            "--exclude-prompt" if k == "include_prompt" else "--" + k.replace("_", "-")
            for k in unused
        )
        names = ", ".join(t.get("pooling", "lmk") for t in tables)
        raise LmkEvalError(
            f"{flags} applies to none of the poolings ({names}); drop it or add a pooling it changes"
        )
    return out


def flag_names(args) -> dict[str, str]:
    """Schema fields -> the flags that set them, so an error names what the user typed."""
    flags = {k: k for k in (*ENCODING_FLAGS, *SHORTHAND)} | {
        "models": "model",
        "poolings": "pooling",
    }
    names = {
        k: "--" + flag.replace("_", "-")
        for k, flag in flags.items()
        if getattr(args, flag, None) is not None
    }
    return names | {f"grid.0.{k}": names.pop(k) for k in SHORTHAND if k in names}


def sweep_from_args(args):
    """The sweep of a `run` command line, validated once (see ``sweep_dict_from_args``)."""
    return sweep_from_dict(*sweep_dict_from_args(args), names=flag_names(args))
