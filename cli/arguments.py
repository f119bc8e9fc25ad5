"""Argument types and option groups that several commands share."""

from __future__ import annotations

import argparse
from urllib.parse import quote


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not more than 0")
    return value


def percent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is not a percentage (0-100)")
    return value


def model_ref(text: str) -> tuple[str, int | None]:
    """`digits` or `digits:3`: a model name and, if given, its version."""
    name, sep, version = text.rpartition(":")
    if not sep:
        return text, None
    if not name or not version.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not MODEL or MODEL:VERSION (a version is a number)")
    return name, int(version)


def autoscale(text: str) -> tuple[int, int] | None:
    """`MIN:MAX` replicas, or `off`."""
    if text.lower() == "off":
        return None
    low, sep, high = text.partition(":")
    if not sep or not low.isdigit() or not high.isdigit() or not 1 <= int(low) <= int(high):
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:MAX replicas (1 <= MIN <= MAX) or off")
    return int(low), int(high)


def add_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's JSON (every page, as one list)")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="at most N items (default: all)")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's JSON as it comes")


def add_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="follow the operation to its end; exit 1 if it fails"
    )


def segment(value: str | int) -> str:
    """A name as one path segment: a `/` or `?` in it must not reach another endpoint."""
    return quote(str(value), safe="")
