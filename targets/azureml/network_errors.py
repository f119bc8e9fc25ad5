"""Why a call to Azure got no answer, or a refusal, in plain words, and whether trying again can help.

The SDKs hand a network failure over wrapped three or four deep (azure-core's ServiceRequestError around
urllib3's NameResolutionError around socket.gaierror; requests' ConnectionError around urllib3's
MaxRetryError around NewConnectionError around ConnectionRefusedError), and azureml-core and azure-identity
often rewrap it keeping only its words ("Error, request to … timed out.", "Authentication failed: …").
`network_error` walks that chain, finds the innermost cause and names it with the host it was trying to
reach. Only what another try can fix is transient: a timeout, a refused or reset connection, a DNS server
that did not answer; not a name that does not exist (NXDOMAIN) nor a certificate that is not trusted, which
fail the same way every time. `http_error` does the same for an answer Azure did give (429, 5xx, 4xx).

Library exceptions are recognised by class name, not imported: this module is shared by v1 and v2 and
imports neither SDK (azureml-core also carries vendored copies of some of these classes).
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from deployments.backends.base import BackendError

# Where each library keeps the exception it wraps.
_LINKS = ("__cause__", "__context__", "inner_exception", "exc_value", "reason", "_reason", "original_error")
_MAX_CHAIN = 32

_DNS_WORDS = re.compile(
    r"Failed to resolve|Name or service not known|nodename nor servname|getaddrinfo failed|"
    r"Temporary failure in name resolution|No address associated with hostname",
    re.I,
)
_AGAIN = re.compile(r"Temporary failure in name resolution", re.I)
_REFUSED_WORDS = re.compile(r"Connection refused|actively refused", re.I)
# Specific phrasings only: "Connection to container has timed out" is a replica's failure, not the network's.
_TIMEOUT_WORDS = re.compile(
    r"Read timed out|Connection to \S+ timed out|request to .* timed out|handshake operation timed out|"
    r"timed out\. \((?:read|connect) timeout=",
    re.I,
)
_RESET_WORDS = re.compile(r"Connection aborted|Connection reset|RemoteDisconnected|Connection broken", re.I)
_UNREACHABLE_WORDS = re.compile(r"Network is unreachable|No route to host", re.I)
_GENERIC_WORDS = re.compile(
    r"Max retries exceeded|Error connecting to|Failed to establish a new connection", re.I
)
_TUNNEL_REFUSED = re.compile(r"Tunnel connection failed: (\d{3})\s*([^'\")]*)")
_TIMEOUT_SECONDS = re.compile(r"timeout=(\d+(?:\.\d+)?)")
_HOST_IN_TEXT = re.compile(
    r"host='([^']+)'(?:, port=(\d+))?|Failed to resolve '([^']+)'|https?://([^/:\s'\"]+)"
)
_VERIFY_REASON = re.compile(r"certificate verify failed: ([^(]+?)\s*(?:\(_ssl|$)")
_RETRY_AFTER_HEADERS = (("retry-after-ms", True), ("x-ms-retry-after-ms", True), ("retry-after", False))
_RETRY_AFTER_IN_TEXT = re.compile(r"['\"](?:x-ms-)?retry-after(-ms)?['\"]\s*:\s*['\"]([^'\"]+)['\"]", re.I)

_NETWORK_CLASSES = frozenset(
    {
        "ConnectionError",  # requests' and the builtin
        "ServiceRequestError",
        "ServiceResponseError",
        "ClientRequestError",  # msrest, under azureml-core's REST clients
        "NewConnectionError",
        "MaxRetryError",
        "ProtocolError",
    }
)
# A standard port is not worth naming.
_DEFAULT_PORTS = frozenset({80, 443})


@dataclass(frozen=True)
class _Link:
    exc: BaseException
    parent: _Link | None

    def lineage(self) -> Iterator[BaseException]:
        """This exception, then each one that wrapped it, outwards."""
        link: _Link | None = self
        while link is not None:
            yield link.exc
            link = link.parent


def _chain(exc: BaseException) -> list[_Link]:
    """Every exception reachable from `exc`, outermost first, each knowing what wrapped it."""
    found = [_Link(exc, None)]
    seen = {id(exc)}
    index = 0
    while index < len(found) and len(found) < _MAX_CHAIN:
        link = found[index]
        index += 1
        inner = [getattr(link.exc, name, None) for name in _LINKS] + list(link.exc.args)
        for candidate in inner:
            if isinstance(candidate, BaseException) and id(candidate) not in seen:
                seen.add(id(candidate))
                found.append(_Link(candidate, link))
    return found


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _where(exc: BaseException) -> tuple[str, int | None] | None:
    """(host, port) that `exc` itself names: urllib3's connection or pool, a request's URL, or its words."""
    # `conn` first: urllib3 2 deprecates NewConnectionError.pool with a warning.
    for holder in (getattr(exc, "conn", None), vars(exc).get("pool")):
        host = getattr(holder, "host", None)
        if isinstance(host, str) and host:
            port = getattr(holder, "port", None)
            return host, port if isinstance(port, int) else None
    url = getattr(getattr(exc, "request", None), "url", None)
    if isinstance(url, str) and (parts := urlsplit(url)).hostname:
        return parts.hostname or "", parts.port
    if match := _HOST_IN_TEXT.search(str(exc)):
        host = match.group(1) or match.group(3) or match.group(4)
        port = int(match.group(2)) if match.group(2) else None
        return host, port
    return None


def _host(link: _Link, *, with_port: bool = False) -> str:
    """The host the failing connection was made to: named by the failure itself or the nearest wrapper."""
    for exc in link.lineage():
        if where := _where(exc):
            host, port = where
            return f"{host}:{port}" if with_port and port and port not in _DEFAULT_PORTS else host
    return "Azure"


def _through_proxy(link: _Link) -> bool:
    return any("ProxyError" in _class_names(exc) for exc in link.lineage())


def _timeout_seconds(links: list[_Link]) -> str:
    for link in links:
        if match := _TIMEOUT_SECONDS.search(str(link.exc)):
            return f" after {float(match.group(1)):g} s"
    return ""


def _first(links: list[_Link], test: Callable[[BaseException], bool]) -> _Link | None:
    """The innermost link that passes `test` (the cause, rather than a wrapper repeating its words)."""
    for link in reversed(links):
        if test(link.exc):
            return link
    return None


def _is_dns(exc: BaseException) -> bool:
    return (
        isinstance(exc, socket.gaierror)
        or "NameResolutionError" in _class_names(exc)
        or bool(_DNS_WORDS.search(str(exc)))
    )


def _is_refused(exc: BaseException) -> bool:
    refused = isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED
    return refused or bool(_REFUSED_WORDS.search(str(exc)))


def _is_timeout(exc: BaseException) -> bool:
    named = any("Timeout" in name for name in _class_names(exc))
    return isinstance(exc, TimeoutError) or named or bool(_TIMEOUT_WORDS.search(str(exc)))


def _is_reset(exc: BaseException) -> bool:
    closed = isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError)
    return closed or bool(_RESET_WORDS.search(str(exc)))


def _is_unreachable(exc: BaseException) -> bool:
    down = getattr(exc, "errno", None) in (errno.ENETUNREACH, errno.EHOSTUNREACH)
    return down or bool(_UNREACHABLE_WORDS.search(str(exc)))


def _verify_reason(exc: BaseException) -> str:
    reason = getattr(exc, "verify_message", None)
    if not (isinstance(reason, str) and reason):
        match = _VERIFY_REASON.search(str(exc))
        reason = match.group(1) if match else "certificate verify failed"
    return reason.strip().rstrip(".")


def _describe(links: list[_Link]) -> tuple[str, bool] | None:
    """(what happened, transient) for a chain that is a network failure; None when it is not one."""
    if link := _first(
        links, lambda e: isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e)
    ):
        return (
            f"The TLS certificate of {_host(link)} is not trusted: {_verify_reason(link.exc)}. If a proxy "
            "inspects TLS on this network, add its CA certificate to the bundle in REQUESTS_CA_BUNDLE.",
            False,
        )
    if link := _first(links, _is_dns):
        host, proxy = _host(link), _through_proxy(link)
        again = any(getattr(lk.exc, "errno", None) == socket.EAI_AGAIN for lk in links)
        if again or _AGAIN.search(str(link.exc)):
            # The resolver could not be asked (no DNS server answered): that can pass, an unknown name cannot.
            return f"Cannot resolve {host} right now: no DNS server answered; check the machine's DNS.", True
        if proxy:
            return f"Cannot resolve the HTTPS proxy {host}: check HTTPS_PROXY and the machine's DNS.", False
        return f"Cannot resolve {host}: check the machine's DNS or the workspace's cloud.", False
    if link := _first(links, _is_refused):
        where = _host(link, with_port=True)
        if _through_proxy(link):
            return f"The HTTPS proxy {where} refused the connection: check HTTPS_PROXY.", True
        return f"{where} refused the connection.", True
    if link := _first(links, _is_timeout):
        return f"{_host(link)} did not answer: timed out{_timeout_seconds(links)}.", True
    if link := _first(links, lambda e: isinstance(e, ssl.SSLError) or "SSLError" in _class_names(e)):
        reason = getattr(link.exc, "reason", None) or str(link.exc)
        if "WRONG_VERSION_NUMBER" in str(reason).upper():
            # TLS spoken to a plain-HTTP port: a proxy or endpoint address that is wrong, every time.
            return (
                f"{_host(link, with_port=True)} does not speak TLS ({reason}): check HTTPS_PROXY and the "
                "cloud's endpoints.",
                False,
            )
        return f"The TLS connection to {_host(link)} failed ({reason}).", True
    if (link := _first(links, lambda e: bool(_TUNNEL_REFUSED.search(str(e))))) and (
        tunnel := _TUNNEL_REFUSED.search(str(link.exc))
    ):
        status, reason = int(tunnel.group(1)), tunnel.group(2).strip()
        return (
            f"The HTTPS proxy would not connect to {_host(link)} (it answered {status} {reason}): check "
            "HTTPS_PROXY and the proxy's rules.",
            status_is_transient(status),
        )
    if link := _first(links, _is_reset):
        why = getattr(link.exc, "strerror", None) or link.exc
        return f"{_host(link)} closed the connection before answering ({why}).", True
    if link := _first(links, _is_unreachable):
        return f"No route to {_host(link)}: the network is unreachable.", True
    if link := _first(
        links, lambda e: bool(_NETWORK_CLASSES & _class_names(e)) or bool(_GENERIC_WORDS.search(str(e)))
    ):
        return f"Could not reach Azure at {_host(link)} ({type(link.exc).__name__}: {link.exc}).", True
    return None


def network_error(exc: BaseException, action: str) -> BackendError | None:
    """`exc` as a BackendError naming what went wrong on the way to Azure, or None when `exc` is not a
    network failure. Only for exceptions without an HTTP status: an answer's body may use the same words."""
    described = _describe(_chain(exc))
    if described is None:
        return None
    message, transient = described
    return BackendError(f"{action}: {message}", transient=transient)


def _headers(exc: BaseException) -> Iterator[Mapping[str, Any]]:
    for link in _chain(exc):
        headers = getattr(getattr(link.exc, "response", None), "headers", None)
        if isinstance(headers, Mapping):
            yield headers


def _seconds(value: str, *, milliseconds: bool) -> float | None:
    try:
        number = float(value)
    except ValueError:
        try:  # Retry-After may also be an HTTP date
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return number / 1000 if milliseconds else number


def retry_after_seconds(exc: BaseException) -> float | None:
    """How long Azure asked callers to wait (Retry-After, retry-after-ms), from the response or its words."""
    for headers in _headers(exc):
        lowered = {str(name).lower(): str(value) for name, value in headers.items()}
        for name, milliseconds in _RETRY_AFTER_HEADERS:
            seconds = _seconds(lowered[name], milliseconds=milliseconds) if name in lowered else None
            if seconds is not None:
                return seconds
    for link in _chain(exc):
        if match := _RETRY_AFTER_IN_TEXT.search(str(link.exc)):
            return _seconds(match.group(2), milliseconds=bool(match.group(1)))
    return None


def status_is_transient(status: int | None) -> bool:
    """Worth another try: a timeout (408), throttling (429), a server error, except those no retry changes."""
    if status is None:
        return False
    return status in (408, 429) or (500 <= status <= 599 and status not in (501, 505))


def http_error(*, action: str, status: int | None, message: str, retry_after: float | None) -> BackendError:
    """Azure's answer as a BackendError: its own words and the status, throttling named as such."""
    wait = f"; Azure asked to wait {round(retry_after, 1):g} s" if retry_after else ""
    if status == 429:
        words = f" {message}" if message else ""
        throttled = f"{action}: Azure is throttling requests (HTTP 429{wait}).{words}"
        return BackendError(throttled, transient=True)
    suffix = f" (HTTP {status}{wait})" if status else ""
    return BackendError(f"{action}: {message}{suffix}", transient=status_is_transient(status))
