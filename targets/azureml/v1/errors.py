"""Whatever azureml-core raises, translated into a BackendError carrying Azure's own message, or naming what
went wrong on the way to Azure (../network_errors.py)."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from deployments.backends.base import BackendError

from ..network_errors import http_error, network_error, retry_after_seconds

# The SDK sometimes rewraps a network failure in its own exception, keeping only the words.
_NETWORK_WORDS = re.compile(r"timed out|Error connecting to|Connection aborted|Max retries exceeded", re.I)


def _azure_message(body: Any) -> str:
    """Azure's own words from an ARM, RP or MMS error body (the three envelopes differ)."""
    if not isinstance(body, dict):
        return str(body)
    if "error_details" in body:
        return _azure_message(body["error_details"])
    inner = body.get("error")
    error = inner if isinstance(inner, dict) else body
    code, message = error.get("code", ""), error.get("message") or ""
    details = [d.get("message", "") for d in error.get("details") or [] if isinstance(d, dict)]
    text = f"{code}: {message}" if code and code not in message else message
    extra = "; ".join(d for d in details if d and d not in text)
    return f"{text} ({extra})" if extra else text


def _parse_sdk_error(exc: BaseException) -> tuple[int | None, str]:
    """(HTTP status, Azure's message) from the SDK's exceptions, which embed the response as text."""
    text = getattr(exc, "message", None) or getattr(exc, "error_msg", None) or str(exc)
    text = str(text)
    status_match = re.search(r"Response Code: (\d{3})", text) or re.search(r'"status_code": (\d{3})', text)
    status = int(status_match.group(1)) if status_match else getattr(exc, "status_code", None)
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    body: Any = None
    content = re.search(r"Content: (b?(['\"]).*\2)\s*$", text, re.DOTALL)
    try:
        if content:
            raw = ast.literal_eval(content.group(1))
            body = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        elif text.lstrip().startswith("{"):
            body = json.loads(text)
    except (ValueError, SyntaxError):
        body = None
    message = _azure_message(body) if body else text.split("\nTrace ID:")[0].strip()
    return (status if isinstance(status, int) else None), message


def _status(exc: BaseException, parsed: int | None) -> int | None:
    """The HTTP status of Azure's answer: from the SDK's words, else from the response it kept."""
    if parsed is not None:
        return parsed
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _to_backend_error(exc: BaseException, action: str) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, ValueError) and "authority configuration" in str(exc):
        return BackendError(f"{action}: Azure AD does not know this tenant ID. {exc}", transient=False)
    parsed, message = _parse_sdk_error(exc)
    status = _status(exc, parsed)
    # Before the sign-in check: azure-identity reports a DNS failure as ClientAuthenticationError too.
    if status is None and (failure := network_error(exc, action)) is not None:
        return failure
    if exc.__class__.__name__ == "AuthenticationError":
        return BackendError(f"{action}: Azure AD refused the service principal. {message}", transient=False)
    if status is None and _NETWORK_WORDS.search(message):
        # Words of a network failure the SDK rewrapped in a way network_error does not know: keep them.
        return BackendError(f"{action}: {message}", transient=True)
    return http_error(action=action, status=status, message=message, retry_after=retry_after_seconds(exc))


@contextmanager
def _azure(action: str) -> Iterator[None]:
    """Translate whatever the SDK raises into a BackendError carrying Azure's message."""
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:  # the SDK raises many unrelated types (see _to_backend_error)
        raise _to_backend_error(exc, action) from exc


def _not_found(exc: BaseException) -> bool:
    text = str(exc)
    return "ComputeTargetNotFound" in text or "WebserviceNotFound" in text


def _format_error(error: Any) -> str:
    if not error:
        return ""
    return _azure_message(error) if isinstance(error, dict) else str(error)


def _format_errors(errors: Any) -> tuple[str, ...]:
    return tuple(_format_error(e.get("error", e) if isinstance(e, dict) else e) for e in errors or [])
