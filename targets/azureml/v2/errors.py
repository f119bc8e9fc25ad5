"""What azure-ai-ml and azure-core raise, translated into a BackendError carrying Azure's own message, or
naming what went wrong on the way to Azure (../network_errors.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from deployments.backends.base import BackendError

from ..network_errors import http_error, network_error, retry_after_seconds
from ..v1.errors import _to_backend_error


def to_backend_error(exc: BaseException, action: str) -> BackendError:
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, BackendError):
        return exc
    status = getattr(exc, "status_code", None)
    # azure-identity reports a sign-in that never reached Azure AD as a ClientAuthenticationError (an
    # HttpResponseError without a status): name the network failure, not a refused service principal.
    if status is None and (failure := network_error(exc, action)) is not None:
        return failure
    if isinstance(exc, HttpResponseError) and not isinstance(
        exc, (ServiceRequestError, ServiceResponseError)
    ):
        error = getattr(exc, "error", None)
        text = "; ".join(_messages(error)) or (exc.message or str(exc)).split("\n")[0]
        retry_after = retry_after_seconds(exc)
        return http_error(action=action, status=status, message=text.strip(), retry_after=retry_after)
    if exc.__class__.__name__ == "ClientAuthenticationError":
        return BackendError(f"{action}: Azure AD refused the service principal. {exc}", transient=False)
    return _to_backend_error(exc, action)


def _messages(error: object, depth: int = 0) -> list[str]:
    """Azure's words from an ARM error and its details (where Azure puts the reason: "The request is
    invalid" outside, "Not enough quota available for …" inside)."""
    if error is None or depth > 3:
        return []
    code, message = getattr(error, "code", "") or "", getattr(error, "message", "") or ""
    own = [f"({code}) {message}" if code else message] if message else []
    for detail in getattr(error, "details", None) or []:
        own += [m for m in _messages(detail, depth + 1) if m not in own]
    return own


def not_found(exc: BaseException) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(exc, ResourceNotFoundError) or getattr(exc, "status_code", None) == 404


@contextmanager
def azure_v2(action: str) -> Iterator[None]:
    """Translate whatever the SDK raises into a BackendError carrying Azure's message."""
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:  # the SDK raises many unrelated types (see to_backend_error)
        raise to_backend_error(exc, action) from exc
