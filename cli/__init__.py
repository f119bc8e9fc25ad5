"""`lynx`: the command line for Lynx's REST API (/api/v1/). A plain HTTP client: it imports no Django and no
Lynx package, so it runs from any machine that has Python and `requests`."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("lynx")
except metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0.1.0"
