"""The managed online endpoint's data plane: `https://<endpoint>.<region>.inference.ml.azure.com/score`.

Reached through the CONNECT proxy (TLS always, the emulator's certificate names `*.<region>.inference.ml.
azure.com`). Key auth (`Bearer <primary or secondary key>`) or AML tokens from `…/token`. The request goes to
one deployment: the one `azureml-model-deployment` names (at any traffic, even 0 %), else one drawn by the
endpoint's traffic split; the answer names it in the same header. No deployment with traffic → Azure's 404
"No valid deployments to route to". Admission as Azure's front end does it: at most instances ×
maxConcurrentRequestsPerInstance in flight, 429 once a request has waited out maxQueueWait; 408 after
requestTimeout; a non-200 from the user's container → 424 with its status and reason.
"""

from __future__ import annotations

import random
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from ..hosts import FrontEnd, ScoringHost
from ..http import Request, Response
from .resources import OnlineDeployment, OnlineEndpoint
from .rollout import DEFAULT_REQUEST_SETTINGS, seconds_of

if TYPE_CHECKING:
    from ..emulator import AzureEmulator

DEPLOYMENT_HEADER = "azureml-model-deployment"
NO_DEPLOYMENTS = (
    "No valid deployments to route to. Please check that the endpoint has at least one deployment with "
    "positive "
    "weight values or use a deployment specific header to route. "
    "[https://docs.microsoft.com/azure/machine-learning/how-to-safely-rollout-managed-endpoints#deploy-a-new-"
    "model-but-dont-send-it-traffic-yet]\nPlease check this guide to understand why this error code might "
    "have "
    "been returned \n[https://docs.microsoft.com/azure/machine-learning/how-to-troubleshoot-online-endpoints#http-"
    "status-codes]\n"
)
MAX_QUEUE_WAIT_SECONDS = 0.5
_rng = random.Random()


def endpoint_of_host(emu: AzureEmulator, host: str) -> OnlineEndpoint | None:
    suffix = f".{emu.location}.inference.ml.azure.com"
    if not host.endswith(suffix):
        return None
    name = host.removesuffix(suffix)
    return next(
        (ep for n, ep in emu.v2.endpoints.items() if n.lower() == name and not ep.is_kubernetes), None
    )


def _authorized(ep: OnlineEndpoint, req: Request) -> bool:
    if ep.auth_mode.lower() == "key":
        return bool(req.bearer) and req.bearer in (ep.primary_key, ep.secondary_key)
    expiry = ep.tokens.get(req.bearer)
    return expiry is not None and expiry > time.time()


def choose(emu: AzureEmulator, ep: OnlineEndpoint, pinned: str) -> OnlineDeployment | str:
    """The deployment that serves this request, or why none does (a status-text for the 404)."""
    deployments = emu.v2.deployments_of(ep.name)
    if pinned:
        found = deployments.get(pinned)
        if found is None:
            return f"Deployment {pinned} not found in endpoint {ep.name}."
        return found
    weighted = [(name, share) for name, share in ep.traffic.items() if share > 0 and name in deployments]
    if not weighted:
        return NO_DEPLOYMENTS
    names, shares = zip(*weighted, strict=True)
    return deployments[_rng.choices(names, weights=shares)[0]]


def error(status: int, text: str, deployment: str = "") -> Response:
    headers = {DEPLOYMENT_HEADER: deployment} if deployment else {}
    return Response(status, text.encode(), headers=headers, content_type="text/plain; charset=utf-8")


def score(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    ep = endpoint_of_host(emu, req.host)
    if ep is None:
        return error(404, f"Endpoint {req.host.split('.')[0]} not found.")
    return serve(emu, req, ep)


def serve(emu: AzureEmulator, req: Request, ep: OnlineEndpoint) -> Response:
    """One scoring request to an endpoint, managed or Kubernetes (azureml-fe routes the same way)."""
    if ep.provisioning_state in ("Creating", "Deleting"):
        return error(404, f"Endpoint {ep.name} not found.")
    if not _authorized(ep, req):
        return error(
            401, "Unauthorized: the key or token is invalid or missing (Authorization: Bearer <key>)."
        )
    chosen = choose(emu, ep, req.headers.get(DEPLOYMENT_HEADER, "").strip())
    if isinstance(chosen, str):
        return error(404, chosen)
    host: ScoringHost | None = chosen.host
    if host is None or host.exited or not host.ready:
        return error(502, f"Deployment {chosen.name} has no ready instance.", chosen.name)
    chosen.requests_served += 1
    settings = {**DEFAULT_REQUEST_SETTINGS, **(chosen.properties.get("requestSettings") or {})}
    timeout = seconds_of(settings.get("requestTimeout"), 5.0)
    capacity = chosen.instance_count * max(1, int(settings.get("maxConcurrentRequestsPerInstance") or 1))
    front_end: FrontEnd = chosen.front_end
    path = "/score" + (f"?{urlencode(req.query)}" if req.query else "")
    name = chosen.name

    def proxied() -> Response:
        # Runs after the emulator's lock is released: only this request waits for the container.
        if not front_end.admit(capacity, MAX_QUEUE_WAIT_SECONDS):
            return error(429, "Too many pending requests: the deployment's instances are all busy.", name)
        try:
            status, headers, body = host.forward(req.method, path, req.headers, req.body, timeout)
        except TimeoutError:
            return error(408, f"Request timed out after {int(timeout * 1000)} ms (requestTimeout).", name)
        except OSError as exc:
            return error(502, f"The deployment's container closed the connection ({exc}).", name)
        finally:
            front_end.release()
        content_type = headers.pop("Content-Type", None) or headers.pop("content-type", None) or ""
        headers[DEPLOYMENT_HEADER] = name
        if status != 200:
            headers["ms-azureml-model-error-statuscode"] = str(status)
            headers["ms-azureml-model-error-reason"] = "model_error"
            status = 424
        return Response(
            status, body, headers=headers, content_type=content_type or "application/octet-stream"
        )

    return Response(202, deferred=proxied)


def swagger(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    ep = endpoint_of_host(emu, req.host)
    if ep is None:
        return error(404, "Endpoint not found.")
    return swagger_of(ep)


def swagger_of(ep: OnlineEndpoint) -> Response:
    return Response(
        200,
        {
            "swagger": "2.0",
            "info": {"title": ep.name, "version": "1.0"},
            "paths": {"/score": {"post": {"responses": {"200": {"description": "scores"}}}}},
        },
    )
