"""The one error type users see, and how schema validation failures become one readable line."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError


class LmkEvalError(ValueError):
    """A user-facing error: one line saying what was wrong and what to do."""


def first_line(text: object, width: int = 160) -> str:
    """The first line of a library's message, cut at a word (never mid-word) past ``width``."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    if len(line) <= width:
        return line
    cut = line[: width - 4]
    space = cut.rfind(" ")
    return (cut[:space] if space > width // 2 else cut).rstrip() + " ..."


def _shown(value: object) -> str:
    return first_line(repr(value), 60)


def _renamed(loc: str, names: Mapping[str, str]) -> str:
    """``loc`` with its longest named prefix (a field or a dotted path) replaced."""
    for key in sorted(names, key=len, reverse=True):
        if loc == key or loc.startswith(key + "."):
            return names[key] + loc[len(key) :]
    return loc


def schema_error(
    exc: ValidationError, where: str, names: Mapping[str, str] | None = None
) -> LmkEvalError:
    """``where: field.path: what is wrong (got X); ...`` from a pydantic ValidationError;
    ``names`` renames fields, or dotted paths, as the user typed them (``learning_rate`` -> ``--lr``)."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = _renamed(".".join(str(x) for x in err["loc"]), names or {})
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
            continue
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] != "value_error" and "input" in err:
            message += f" (got {_shown(err['input'])})"
        parts.append(f"{loc}: {message}" if loc else message)
    return LmkEvalError(f"{where}: {'; '.join(parts)}")
