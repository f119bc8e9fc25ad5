"""The HTTP side: one `requests` session, the bearer token, errors turned into exit codes, pagination."""

from __future__ import annotations

import email.utils
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from cli import __version__
from cli.config import Config
from cli.errors import CliError, ExitCode, exit_code_for_status
from cli.output import warn

API_PREFIX = "/api/v1"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# (connect, read): a read waits on one answer; long work is an operation, so two minutes is generous.
TIMEOUT = (10.0, 120.0)
# The most we sleep on one Retry-After; a longer one is reported as the 429 it is.
MAX_RETRY_AFTER = 120.0
PAGE_SIZE = 200  # within the API's 1-500


def error_detail(response: requests.Response) -> str:
    """The server's own words: `detail`, and for bad input each `field: message`, on one line."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return f"{response.status_code} {response.reason or 'error'} from {response.url}"
    detail = data.get("detail")
    parts: list[str] = []
    if isinstance(detail, list):
        # django-ninja's own validation answer, should a route not go through Lynx's handler.
        for item in detail:
            if isinstance(item, dict):
                loc = [str(p) for p in item.get("loc", []) if p not in ("body", "query", "path", "form")]
                parts.append(f"{'.'.join(loc)}: {item.get('msg')}" if loc else str(item.get("msg")))
    field_errors: list[str] = []
    messages: set[str] = set()
    errors = data.get("errors")
    if isinstance(errors, dict):
        for field, listed in errors.items():
            for message in listed if isinstance(listed, list) else [listed]:
                messages.add(str(message))
                field_errors.append(str(message) if field == "__all__" else f"{field}: {message}")
    # Lynx's detail repeats the first field error (with or without its field): say it once, with the field.
    if isinstance(detail, str) and detail and detail not in messages and detail not in field_errors:
        parts.append(detail)
    parts += field_errors
    if not parts:
        parts.append(f"{response.status_code} {response.reason or 'error'}")
    # Line breaks inside a message would break the one-line contract that scripts grep.
    return "; ".join(" ".join(part.split()) for part in parts)


def _retry_after_seconds(value: str | None) -> float:
    if not value:
        return 1.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 1.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Client:
    """Lynx's API at `config.url`. Every failure leaves as a CliError carrying its exit code."""

    def __init__(self, config: Config, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"lynx-cli/{__version__}"
        self.session.headers["Accept"] = "application/json"
        self._warned_plain_http = False

    def _warn_plain_http(self) -> None:
        """The token would cross the network readable by anyone on the way: say so, once (a loopback address
        stays on this machine, and a team may run Lynx behind plain HTTP on purpose)."""
        parts = urlsplit(self.config.url)
        if self._warned_plain_http or parts.scheme != "http" or parts.hostname in LOOPBACK:
            return
        self._warned_plain_http = True
        warn(f"sending your token to {parts.hostname} over plain HTTP: use an https:// LYNX_URL")

    def url(self, path: str) -> str:
        """The absolute URL of an API path (`/deployments`), or of a server path (`/api/v1/…`) as given."""
        if path.startswith(("http://", "https://")):
            return path
        if not path.startswith(API_PREFIX):
            path = API_PREFIX + path
        return self.config.url + path

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        starts_operation: bool = False,
        stream: bool = False,
    ) -> requests.Response:
        """One call; a 429 is retried once after its Retry-After. `starts_operation` sends an Idempotency-Key,
        the same on the retry, so a retried long action never starts twice."""
        token = self.config.token
        if not token:
            raise CliError("not signed in: run `lynx login` or set LYNX_TOKEN", ExitCode.NOT_SIGNED_IN)
        self._warn_plain_http()
        sent = {"Authorization": f"Bearer {token}", **(headers or {})}
        if starts_operation:
            sent["Idempotency-Key"] = uuid.uuid4().hex
        query = {key: value for key, value in (params or {}).items() if value is not None}
        for attempt in (1, 2):
            if attempt == 2 and hasattr(data, "seek"):
                data.seek(0)  # a streamed body is sent again from its first byte
            response = self._send(method, path, query, json, data, sent, stream)
            if response.status_code != 429 or attempt == 2:
                break
            wait = _retry_after_seconds(response.headers.get("Retry-After"))
            if wait > MAX_RETRY_AFTER:
                break
            print(f"lynx: rate limited; retrying in {wait:.0f} s", file=sys.stderr)
            response.close()
            self.sleep(wait)
        if 300 <= response.status_code < 400:
            raise CliError(
                f"Lynx at {self.config.url} redirects to {response.headers.get('Location')}: "
                "point LYNX_URL (or `lynx login --url`) at that address",
                ExitCode.REFUSED,
            )
        if response.status_code >= 400:
            code = exit_code_for_status(response.status_code)
            raise CliError(error_detail(response), code)
        return response

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any],
        json: Any,
        data: Any,
        headers: Mapping[str, str],
        stream: bool,
    ) -> requests.Response:
        try:
            return self.session.request(
                method,
                self.url(path),
                params=params,
                json=json,
                data=data,
                headers=dict(headers),
                timeout=TIMEOUT,
                stream=stream,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise CliError(
                f"Lynx at {self.config.url} did not answer within {TIMEOUT[1]:.0f} s", ExitCode.UNREACHABLE
            ) from None
        except requests.ConnectionError as exc:
            raise CliError(
                f"cannot reach Lynx at {self.config.url}: {_reason(exc)}", ExitCode.UNREACHABLE
            ) from None
        except requests.RequestException as exc:
            # Only the kind of failure: requests' own message may quote a header, the token included.
            raise CliError(
                f"the request to Lynx at {self.config.url} failed ({type(exc).__name__})",
                ExitCode.UNREACHABLE,
            ) from None

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return _json(self.request("GET", path, params=params))

    def send(self, method: str, path: str, body: Any = None, *, starts_operation: bool = False) -> Any:
        return _json(self.request(method, path, json=body, starts_operation=starts_operation))

    def pages(
        self, path: str, params: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Each page of a list, following `next_cursor`, and never past `limit` items in all."""
        query = dict(params or {})
        remaining = limit
        while True:
            query["limit"] = min(PAGE_SIZE, remaining) if remaining is not None else PAGE_SIZE
            page = self.get(path, query)
            if isinstance(page, list):  # a plain list: everything at once
                page = {"items": page, "next_cursor": None}
            items = list(page.get("items") or [])
            if remaining is not None:
                items = items[:remaining]
                remaining -= len(items)
            page = {**page, "items": items}
            yield page
            cursor = page.get("next_cursor")
            if not cursor or not items or remaining == 0:
                return
            query["cursor"] = cursor

    def collect(
        self, path: str, params: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """The whole list as one API-shaped answer: `{"items": [...], "next_cursor": where we stopped}`."""
        items: list[Any] = []
        cursor: Any = None
        for page in self.pages(path, params, limit):
            items.extend(page["items"])
            cursor = page.get("next_cursor")
        return {"items": items, "next_cursor": cursor}


def _json(response: requests.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        raise CliError(
            f"Lynx answered {response.status_code} with something that is not JSON ({response.url}); "
            "is LYNX_URL the dashboard's address?",
            ExitCode.UNREACHABLE,
        ) from None


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if known in text:
            return known.lower()
    return text if len(text) < 120 else text[:117] + "..."
