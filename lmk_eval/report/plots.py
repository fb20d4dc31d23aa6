"""The length-extrapolation and depth figures (matplotlib)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from lmk_eval.common.files import atomic_write_bytes
from lmk_eval.report.frames import Names, Panel, reference_for


def plot(
    series: list[Panel],
    poolings: list[str],
    names: Names,
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    log2: bool,
    title: str,
) -> Path | None:
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False, layout="constrained"
    )
    markers = "osD^v<>ph*"
    styles = ["-", "--", ":", "-."]
    for ax, panel in zip(axes.flat, series, strict=False):
        table = panel.table
        if isinstance(table.columns, pd.MultiIndex):  # (pooling, reading): colour = reading
            strategies = list(dict.fromkeys(table.columns.get_level_values(1)))
            for pooling, strategy in table.columns:
                i = poolings.index(pooling) if pooling in poolings else 0
                ax.plot(
                    table.index,
                    table[(pooling, strategy)] * 100,
                    color=f"C{strategies.index(strategy)}",
                    linestyle=styles[i % len(styles)],
                    marker=markers[i % len(markers)],
                    markersize=4,
                    label=f"{names[pooling]} · {strategy}",
                )
        for i, p in enumerate(
            x
            for x in poolings
            if x in table.columns and not isinstance(table.columns, pd.MultiIndex)
        ):
            ax.plot(table.index, table[p] * 100, marker=markers[i % len(markers)], label=names[p])
        reference = reference_for(panel) if log2 else None
        if reference:
            xs = [x for x in table.index if int(x) in reference["scores"]]
            ax.plot(
                xs,
                [reference["scores"][int(x)] for x in xs],
                color="grey",
                linestyle="--",
                label="published (LongEmbed, MiniLM mean@256)",
            )
        if log2:
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(table.index))
            ax.set_xticklabels([f"{int(x)}" for x in table.index], rotation=45)
        ax.set_title(panel.label, fontsize=10)
        ax.set_xlabel(panel.xlabel or xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    _legend_below(fig, axes)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = io.BytesIO()
    try:
        # the whole legend, however wide
        fig.savefig(image, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, image.getvalue())
    return path


def _legend_below(fig, axes) -> None:
    """One legend for all panels, outside below them (constrained layout places it), so that no
    line is hidden behind it."""
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if not handles:
        return
    ncol = min(len(handles), 4)
    # constrained layout makes room but never grows the figure:
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + 0.22 * -(-len(handles) // ncol))  # a legend row is ~0.22 in
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncol=ncol,
        fontsize=8,
        frameon=False,
    )


def draw(data, assets: Path) -> dict[str, Path | None]:
    """The report's two figures (None where there is nothing to draw), into ``assets``."""
    return {
        "length": plot(
            data.panels,
            data.poolings,
            data.names,
            assets / "length.png",
            xlabel="document length (tokens)",
            ylabel="main score ×100",
            log2=True,
            title="Length extrapolation",
        ),
        "depth": plot(
            data.depths,
            data.poolings,
            data.names,
            assets / "depth.png",
            xlabel="needle depth (fraction of document)",
            ylabel="nDCG@1 ×100",
            log2=False,
            title="Evidence depth",
        ),
    }
