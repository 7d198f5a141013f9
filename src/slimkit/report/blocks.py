"""The building blocks of a report: what `report_sections` returns and the renderers lay out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Note:
    """A sentence; ``kind`` ``"warning"`` for what a reader must not miss."""

    text: str
    kind: str = "info"


@dataclass(frozen=True)
class Facts:
    """Labelled values (a short key/value list)."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Table:
    """A table of text cells. ``align`` has one ``"l"``/``"r"`` per column; ``row_classes`` tags
    rows (``"discarded"``, ``"final"``, ``"not-run"``) for styling."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str
    caption: str = ""
    row_classes: tuple[str, ...] = ()
    mono: tuple[int, ...] = ()
    """Columns shown in a fixed-width font (file names, hashes)."""


@dataclass(frozen=True)
class Code:
    """A block of text shown verbatim (the recipe)."""

    text: str
    language: str = ""


@dataclass(frozen=True)
class Figure:
    """A plot, rendered only by renderers that show images (``render`` returns PNG bytes)."""

    key: str
    title: str
    data: str
    """What data the figure's values come from (which split)."""
    render: Callable[[], bytes] = field(repr=False, compare=False)
    wide: bool = False


Block = Note | Facts | Table | Code | Figure


@dataclass(frozen=True)
class Section:
    """A titled part of the report; ``key`` is its anchor in HTML."""

    key: str
    title: str
    blocks: tuple[Block, ...]
