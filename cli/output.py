"""What a person reads: aligned tables and `key  value` blocks; `--json` prints the API's JSON instead."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO


def print_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def text(value: Any) -> str:
    """One cell: `-` for nothing, yes/no, short floats, a named object by its name, JSON for the rest."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, dict):
        for key in ("name", "username", "label"):
            name = value.get(key)
            if isinstance(name, str):
                return name
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            return ", ".join(text(item) for item in value) or "-"
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # A newline in a cell (an error message) would break the table's rows.
    return " ".join(str(value).split()) if "\n" in str(value) else str(value)


def when(value: Any) -> str:
    """An API timestamp (ISO 8601) as `YYYY-MM-DD HH:MM:SS` in UTC, as the pages show it."""
    if not isinstance(value, str):
        return text(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def size(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return text(value)
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return text(value)


def count(value: Any) -> str:
    return str(len(value)) if isinstance(value, list | dict) else text(value)


def usd(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"${value:,.4f}".rstrip("0").rstrip(".") if value < 1 else f"${value:,.2f}"
    return text(value)


@dataclass(frozen=True)
class Column:
    """A table column: the first of `keys` an item has is its value (the API may name a field either way)."""

    header: str
    keys: tuple[str, ...]
    show: Callable[[Any], str] = text
    always: bool = False  # shown even when no item has it

    def value(self, item: dict[str, Any]) -> Any:
        for key in self.keys:
            found: Any = item
            for step in key.split("."):
                found = found.get(step) if isinstance(found, dict) else None
            if found is not None:
                return found
        return None

    def present(self, item: dict[str, Any]) -> bool:
        for key in self.keys:
            found: Any = item
            for step in key.split("."):
                if not isinstance(found, dict) or step not in found:
                    break
                found = found[step]
            else:
                return True
        return False


def print_table(
    items: Sequence[dict[str, Any]], columns: Sequence[Column], out: TextIO | None = None, empty: str = ""
) -> None:
    """Columns no item has are left out; an item-less list prints `empty` (if any) instead of a header."""
    out = out or sys.stdout
    if not items:
        if empty:
            out.write(empty + "\n")
        return
    shown = [c for c in columns if c.always or any(c.present(item) for item in items)]
    if not shown:  # the API names nothing we expected: show its scalar fields as they come
        keys = [k for k, v in items[0].items() if not isinstance(v, dict | list)]
        shown = [Column(k.upper().replace("_", " "), (k,)) for k in keys]
    rows = [[c.header for c in shown]] + [[c.show(c.value(item)) for c in shown] for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(shown))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")


def print_fields(
    data: dict[str, Any], order: Sequence[str] = (), skip: Sequence[str] = (), out: TextIO | None = None
) -> None:
    """`key  value` lines, `order` first, then the rest as they came; after them, lists of objects as
    indented tables and text of several lines (an entry script) as indented blocks."""
    out = out or sys.stdout
    keys = [k for k in order if k in data] + [k for k in data if k not in order and k not in skip]
    blocks = [k for k in keys if _is_object_list(data[k]) or (isinstance(data[k], str) and "\n" in data[k])]
    scalars = [k for k in keys if k not in blocks]
    width = max((len(k) for k in scalars), default=0)
    for key in scalars:
        out.write(f"{key.ljust(width)}  {text(data[key])}\n")
    for key in blocks:
        out.write(f"\n{key}:\n")
        if isinstance(data[key], str):
            body = data[key]
        else:
            rows = data[key]
            columns = [Column(k.upper().replace("_", " "), (k,)) for k in _keys_of(rows)]
            buffer = io.StringIO()
            print_table(rows, columns, out=buffer)
            body = buffer.getvalue()
        indented = ("  " + line if line.strip() else line for line in body.splitlines(keepends=True))
        out.write("".join(indented).rstrip("\n") + "\n")


def _is_object_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _keys_of(rows: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if not isinstance(value, dict | list):
                keys.setdefault(key)
    return list(keys)


def warn(message: str) -> None:
    print(f"lynx: warning: {message}", file=sys.stderr)
