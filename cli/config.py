"""Where the command finds Lynx and its token: LYNX_URL / LYNX_TOKEN, else the file `lynx login` wrote."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cli.errors import CliError, ExitCode

DEFAULT_URL = "http://127.0.0.1:8000"
TOKEN_SHAPE = re.compile(r"lynx_[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Config:
    url: str
    token: str | None
    # Where each value came from ("env", "file", "default"), for `whoami` and for error messages.
    url_source: str = "default"
    token_source: str | None = None


def config_path() -> Path:
    """`$XDG_CONFIG_HOME/lynx/config.json`, or `~/.config/lynx/config.json` when XDG_CONFIG_HOME is unset."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "lynx" / "config.json"


def config_file_read(path: Path | None = None) -> dict[str, str]:
    """The saved url and token ({} when there is none); a file that is not ours is an error, not ignored."""
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", ExitCode.NOT_SIGNED_IN) from None
    try:
        data = json.loads(text)
    except ValueError:
        raise CliError(f"{path} is not JSON: run `lynx login` again", ExitCode.NOT_SIGNED_IN) from None
    if not isinstance(data, dict):
        raise CliError(f"{path} is not a lynx config: run `lynx login` again", ExitCode.NOT_SIGNED_IN)
    return {key: value for key, value in data.items() if key in ("url", "token") and isinstance(value, str)}


def config_load() -> Config:
    """The environment wins over the file, value by value (LYNX_URL alone points a saved token elsewhere)."""
    saved = config_file_read()
    env_url, env_token = os.environ.get("LYNX_URL"), os.environ.get("LYNX_TOKEN")
    if env_url:
        url, url_source = env_url, "env"
    elif saved.get("url"):
        url, url_source = saved["url"], "file"
    else:
        url, url_source = DEFAULT_URL, "default"
    token: str | None = None
    token_source: str | None = None
    if env_token:
        token, token_source = env_token, "env"
    elif saved.get("token"):
        token, token_source = saved["token"], "file"
    if token is not None:
        # A token read with `$(cat file)` from a CRLF file, or pasted, keeps a stray \r or space: one such
        # character made requests raise with the whole header, secret included, in the traceback.
        token = token.strip()
        if not TOKEN_SHAPE.fullmatch(token):
            where = "LYNX_TOKEN" if token_source == "env" else str(config_path())
            raise CliError(
                f"the token in {where} is not a Lynx API token (lynx_ then letters, digits, - and _); "
                "make one on your Tokens page",
                ExitCode.NOT_SIGNED_IN,
            )
    url_check(url, "LYNX_URL" if url_source == "env" else str(config_path()))
    return Config(url=url.rstrip("/"), token=token, url_source=url_source, token_source=token_source)


def url_check(url: str, where: str) -> None:
    """Lynx's address must be http(s)://host[:port]: anything else is said plainly, not as a traceback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"{where} is not an http:// or https:// address: {url!r}", ExitCode.USAGE)


def config_save(*, url: str, token: str, path: Path | None = None) -> Path:
    """Write the file with mode 0600 from its first byte: a temporary file made 0600, then renamed over."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".config-", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"url": url.rstrip("/"), "token": token}, handle, indent=2)
            handle.write("\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def config_delete(path: Path | None = None) -> Path | None:
    """Remove the saved token; the path removed, or None when there was none."""
    path = path or config_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path
