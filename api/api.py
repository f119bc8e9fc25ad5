"""The API: one NinjaAPI at /api/v1/, its routers, and how every refusal is answered."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError

from api.auth import AUTH
from api.errors import InvalidInput, NotFound
from api.throttling import TokenRateThrottle
from api.tokens import TokenRefused
from deployments.services import Refused

log = logging.getLogger(__name__)

api = NinjaAPI(
    title="Lynx",
    version="1",
    description=(
        "Deploy deep-learning models as GPU scoring services, from a script. Authenticate with "
        "`Authorization: Bearer <token>` (make one on your Tokens page). Long actions answer 202 with an "
        "operation to follow at its `url`. Lists are pages: pass `next_cursor` back as `cursor`."
    ),
    urls_namespace="api",
    auth=AUTH,
    throttle=[TokenRateThrottle()],
    docs_url="/docs",
    openapi_url="/openapi.json",
)


def _error(request: HttpRequest, status: int, detail: str, **extra) -> HttpResponse:
    return api.create_response(request, {"detail": detail, **extra}, status=status)


@api.exception_handler(TokenRefused)
def _token_refused(request: HttpRequest, exc: TokenRefused) -> HttpResponse:
    response = _error(request, 401, str(exc))
    response["WWW-Authenticate"] = 'Bearer realm="lynx"'
    return response


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = _error(
        request, 401, "Sign in: send Authorization: Bearer <token> (make a token on your Tokens page)."
    )
    response["WWW-Authenticate"] = 'Bearer realm="lynx"'
    return response


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return _error(request, 403, str(exc) or "You may not do this.")


@api.exception_handler(Http404)
@api.exception_handler(NotFound)
def _not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return _error(request, 404, str(exc) or "Not found.")


@api.exception_handler(InvalidInput)
def _invalid(request: HttpRequest, exc: InvalidInput) -> HttpResponse:
    return _error(request, 400, str(exc), errors=exc.errors)


# Where pydantic says a value came from, which the caller does not need: "archive", not "file.archive".
LOCATIONS = ("body", "query", "path", "payload", "file", "form", "header")


@api.exception_handler(ValidationError)
def _schema_invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    # pydantic's errors, said per field as the forms say theirs: {"replicas": ["Input should be ..."]}.
    errors: dict[str, list[str]] = {}
    for error in exc.errors:
        location = [
            str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "payload")
        ]
        errors.setdefault(".".join(location) or "__all__", []).append(str(error.get("msg", "invalid")))
    first_field, messages = next(iter(errors.items()), ("__all__", ["Bad input."]))
    return _error(request, 400, f"{first_field}: {messages[0]}", errors=errors)


@api.exception_handler(Refused)
def _refused(request: HttpRequest, exc: Refused) -> HttpResponse:
    return _error(request, 409, str(exc))


@api.exception_handler(Throttled)
def _throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    wait = max(1, int(exc.wait or 1))
    response = _error(request, 429, f"Too many requests with this token: try again in {wait} s.")
    response["Retry-After"] = str(wait)
    return response


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _error(request, 413, f"The request body is over what Lynx reads ({exc}).")


@api.exception_handler(Exception)
def _failed(request: HttpRequest, exc: Exception) -> HttpResponse:
    # A bug: logged with its traceback for the operator; the caller gets JSON, never Django's HTML page.
    log.exception("API %s %s failed", request.method, request.path)
    return _error(request, 500, "Lynx failed on this request; the server's log has the details.")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _error(request, exc.status_code, str(exc))


def _register_routers() -> None:
    # Must be imported here: the routers import this package's schemas and auth, which import nothing back.
    from api.routes import audit, clusters, costs, deployments, me, models, operations, people, tokens

    for module, prefix, tag in (
        (me, "", "me"),
        (tokens, "/tokens", "tokens"),
        (clusters, "/clusters", "clusters"),
        (models, "/models", "models"),
        (deployments, "/deployments", "deployments"),
        (operations, "/operations", "operations"),
        (audit, "", "audit"),
        (costs, "/costs", "costs"),
        (people, "/people", "people"),
    ):
        api.add_router(prefix, module.router, tags=[tag])


_register_routers()
