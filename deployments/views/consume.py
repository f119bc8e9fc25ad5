"""The Consume section's endpoints: copying a scoring key (the audited reveal, answered as JSON for the copy
button), and the deployment's own API description, swagger.json, rendered as interactive docs.

Lynx fetches the swagger document itself, server-side, from the deployment's swagger URI with its key: the
browser could not (the key stays out of the page, and scoring endpoints send no CORS headers). Only that one
URI is ever fetched, with a deadline, a size limit and no redirects, and only a JSON object that is a Swagger
or OpenAPI document is passed on.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import AuthedRequest, deployer_required
from deployments.backends.base import BackendError
from deployments.crypto import decrypt
from deployments.forms import KeyForm
from deployments.models import Deployment
from deployments.services import Refused
from deployments.services.deployments import deployment_key_reveal
from deployments.services.specs import backend_for, service_spec
from deployments.states import ServiceState

# The inference server's generated document is a few KB; a deployer's own swagger2.json with large schemas
# may be a few hundred. Anything bigger is not an API description worth a browser's memory.
SWAGGER_MAX_BYTES = 2 * 2**20
# The fetch ends by this deadline, checked between reads, each of which waits at most SWAGGER_READ_TIMEOUT_S:
# a page is waiting on it, and a trickling answer must not hold a web thread.
SWAGGER_TIMEOUT_S = 10.0
SWAGGER_READ_TIMEOUT_S = 5.0
_CHUNK = 64 * 1024


class SwaggerUnavailable(Exception):
    """Why the swagger document cannot be shown, in plain words, with the HTTP status Lynx answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _credential(deployment: Deployment) -> str:
    """The primary key, or for a token-auth deployment a fresh token from its target (keys do not work
    there). The swagger route needs it on the local target; sending it elsewhere does no harm, as test
    scoring sends it to the scoring URI."""
    if not deployment.token_auth_enabled:
        return decrypt(deployment.primary_key_encrypted)
    try:
        token, _refresh_after = backend_for(deployment.cluster).service_access_token(service_spec(deployment))
    except BackendError as exc:
        raise SwaggerUnavailable(502, f"Could not get a token for {deployment.name}: {exc.message}") from exc
    return token


def _read_limited(response: requests.Response, uri: str, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > SWAGGER_MAX_BYTES:
        raise SwaggerUnavailable(502, _too_big(uri))
    body = bytearray()
    # read1: one read from the socket at most, so the deadline is checked as the bytes arrive. Counted after
    # decompression: a small gzip body cannot unpack past the limit.
    while chunk := response.raw.read1(_CHUNK, decode_content=True):
        body += chunk
        if len(body) > SWAGGER_MAX_BYTES:
            raise SwaggerUnavailable(502, _too_big(uri))
        if time.monotonic() > deadline:
            raise SwaggerUnavailable(504, _too_slow(uri))
    return bytes(body)


def _too_big(uri: str) -> str:
    return (
        f"The swagger document at {uri} is over {SWAGGER_MAX_BYTES // 2**20} MiB; Lynx shows API "
        "descriptions up to that size."
    )


def _too_slow(uri: str) -> str:
    return f"No complete answer from {uri} within {SWAGGER_TIMEOUT_S:g} s; try again in a moment."


def _with_its_address(spec: dict[str, Any], uri: str) -> dict[str, Any]:
    """The inference server's document names no host (its schemes say https, which the local target is
    not): say where the endpoint is, so the docs show its address rather than Lynx's."""
    parts = urlsplit(uri)
    if "swagger" in spec and not spec.get("host"):
        spec = {**spec, "host": parts.netloc, "schemes": [parts.scheme]}
    elif "openapi" in spec and not spec.get("servers"):
        spec = {**spec, "servers": [{"url": f"{parts.scheme}://{parts.netloc}"}]}
    return spec


def swagger_fetch(deployment: Deployment) -> dict[str, Any]:
    """The deployment's swagger.json, read from its swagger URI with its key. Raises SwaggerUnavailable."""
    uri = deployment.swagger_uri
    if deployment.state in (ServiceState.DELETED, ServiceState.DELETING) or not uri:
        raise SwaggerUnavailable(
            404, f"{deployment.name} has no swagger URI; it appears once the deployment is Healthy."
        )
    if urlsplit(uri).scheme not in ("http", "https"):
        raise SwaggerUnavailable(502, f"The swagger URI {uri} is not an http or https address.")
    headers = {"Accept": "application/json"}
    if credential := _credential(deployment):
        headers["Authorization"] = f"Bearer {credential}"
    deadline = time.monotonic() + SWAGGER_TIMEOUT_S
    try:
        # No redirects: the endpoint's code could point Lynx, with the key, at any address it reaches.
        with requests.get(
            uri, headers=headers, timeout=SWAGGER_READ_TIMEOUT_S, stream=True, allow_redirects=False
        ) as response:
            if response.is_redirect:
                raise SwaggerUnavailable(
                    502, f"{uri} answered with a redirect ({response.status_code}); Lynx does not follow it."
                )
            if response.status_code != 200:
                raise SwaggerUnavailable(
                    502, f"{uri} answered {response.status_code} {response.reason}, not the swagger document."
                )
            body = _read_limited(response, uri, deadline)
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError) as exc:
        raise SwaggerUnavailable(504, _too_slow(uri)) from exc
    except requests.ConnectionError as exc:
        refused = "refused" in str(exc).lower()
        reason = "nothing is listening there (are the replicas down?)" if refused else "the connection failed"
        raise SwaggerUnavailable(502, f"Could not connect to {uri}: {reason}.") from exc
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:  # the latter: reading the body
        raise SwaggerUnavailable(502, f"Reading {uri} failed: {type(exc).__name__}.") from exc
    try:
        spec = json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise SwaggerUnavailable(
            502, f"{uri} answered with something that is not JSON, so not a swagger document."
        ) from exc
    if not isinstance(spec, dict) or not ("swagger" in spec or "openapi" in spec):
        raise SwaggerUnavailable(
            502,
            f"{uri} answered with JSON that is not a Swagger or OpenAPI document "
            "(no swagger or openapi field).",
        )
    return _with_its_address(spec, uri)


@require_GET
def deployment_swagger(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment.objects.select_related("cluster"), pk=pk)
    try:
        spec = swagger_fetch(deployment)
    except SwaggerUnavailable as exc:
        response = JsonResponse({"message": exc.message}, status=exc.status)
    else:
        response = JsonResponse(spec)
    response["Cache-Control"] = "private, no-store"
    return response


@require_GET
def deployment_api_docs(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment.objects.select_related("cluster"), pk=pk)
    return render(
        request,
        "deployments/deployment_api_docs.html",
        {"deployment": deployment, "spec_url": reverse("deployment_swagger", args=[pk])},
    )


@require_POST
@deployer_required
def deployment_key_copy(request: AuthedRequest, pk: int) -> HttpResponse:
    """The key reveal for the Copy button: the same service and audit event as the reveal page, as JSON."""
    deployment = get_object_or_404(Deployment.objects.select_related("cluster"), pk=pk)
    form = KeyForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"message": "Choose the Primary or the Secondary key"}, status=400)
    try:
        secret = deployment_key_reveal(user=request.user, deployment=deployment, key=form.cleaned_data["key"])
    except Refused as exc:
        return JsonResponse({"message": str(exc).rstrip(".")}, status=409)
    response = JsonResponse({"key": secret})
    response["Cache-Control"] = "no-store"
    return response
