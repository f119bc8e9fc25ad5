"""Figures measured over repeated runs, printed as "median (min-max)" in one table per section, and the
`ratio <name>: <value>` lines."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 100 or value == 0:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


@dataclass
class Figure:
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def text(self) -> str:
        if not self.values:
            return "-"
        if len(self.values) == 1 or min(self.values) == max(self.values):
            return fmt(self.values[0])
        return f"{fmt(self.median)} ({fmt(min(self.values))}-{fmt(max(self.values))})"


@dataclass
class Section:
    title: str
    columns: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, Figure]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


class Report:
    def __init__(self) -> None:
        self.sections: dict[str, Section] = {}
        self.ratios: dict[str, Figure] = {}
        self.ratio_units: dict[str, str] = {}
        self.notes: list[str] = []
        self.machine: dict[str, Any] = {}

    def add(self, section: str, row: str, column: str, value: float | None, note: str = "") -> None:
        """One more measurement of the figure at (row, column); None records the cell without a value."""
        part = self.sections.setdefault(section, Section(section))
        if column not in part.columns:
            part.columns.append(column)
        figure = part.rows.setdefault(row, {}).setdefault(column, Figure())
        if value is not None:
            figure.values.append(float(value))
        if note:
            part.notes[row] = note

    def ratio(self, name: str, value: float | None, unit: str = "") -> None:
        figure = self.ratios.setdefault(name, Figure())
        self.ratio_units[name] = unit
        if value is not None:
            figure.values.append(float(value))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def section_text(self, part: Section) -> str:
        header = ["", *part.columns, ""]
        lines = [header]
        for row, cells in part.rows.items():
            lines.append(
                [row, *(cells[c].text() if c in cells else "" for c in part.columns), part.notes.get(row, "")]
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = [f"== {part.title}"]
        for line in lines:
            cells = [f"{line[0]:<{widths[0]}}"] + [
                f"{cell:>{widths[i]}}" for i, cell in enumerate(line) if 0 < i < len(line) - 1
            ]
            out.append(("  ".join(cells) + "  " + line[-1]).rstrip())
        return "\n".join(out)

    def table(self) -> str:
        return "\n\n".join(self.section_text(part) for part in self.sections.values())

    def ratio_lines(self) -> list[str]:
        lines = []
        for name, figure in self.ratios.items():
            if figure.median is None:
                lines.append(f"ratio {name}: not measured")
                continue
            unit = f" {self.ratio_units[name]}" if self.ratio_units.get(name) else ""
            spread = ""
            if len(figure.values) > 1:
                low, high = fmt(min(figure.values)), fmt(max(figure.values))
                spread = f"  (min {low}, max {high}, {len(figure.values)} runs)"
            lines.append(f"ratio {name}: {figure.median:.3f}{unit}{spread}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "sections": {
                title: {
                    row: {column: f.values for column, f in cells.items()} for row, cells in part.rows.items()
                }
                for title, part in self.sections.items()
            },
            "ratios": {name: {"values": f.values, "median": f.median} for name, f in self.ratios.items()},
            "notes": self.notes,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
