"""A resolved task: what names it in the store, what fixes its data, and how to build it for mteb."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaskRef:
    """A resolvable task: its name in the results store, what fixes its data, how to build it."""

    name: str  # the name cells and reports use (folders that share a basename are told apart)
    source: str  # "bundled" | "mteb" | the folder path as given
    splits: tuple[str, ...]
    make: Callable[[TaskRef], object] = field(compare=False, repr=False)
    data_identity: Callable[[], dict] = field(compare=False, repr=False)
    base_name: str = ""  # the name before disambiguation, or mteb's name without its subsets
    subsets: tuple[str, ...] | None = None  # mteb's hf_subsets evaluated; None: all the task has
    # "short" | "long" from mteb's statistics of the documents; None: counted from the loaded ones
    context: str | None = None
    statistics: Callable[[], list[dict] | None] | None = field(
        default=None, compare=False, repr=False
    )
    # the mteb benchmarks the sweep named it by (BEIR, LongEmbed): the report averages over them
    benchmarks: tuple[str, ...] = field(default=(), compare=False)

    @property
    def spec_key(self) -> tuple:
        return (self.source, self.base_name or self.name, self.splits, self.subsets)

    def slot(self) -> dict:
        """What fixes this task's place in the store (its data is checked by content)."""
        out = {
            "name": self.base_name or self.name,
            "source": self.source,
            "splits": list(self.splits),
        }
        return out | ({"subsets": list(self.subsets)} if self.subsets is not None else {})

    def build(self):
        return self.make(self)
