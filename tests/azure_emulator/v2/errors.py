"""Azure ML v2's error shapes and words.

Verbatim where a public source has Azure's text (the OutOfQuota line, from deployments users posted; the
scoring front end's "No valid deployments to route to"); the other wordings are marked unverified.
"""

from __future__ import annotations

import json
from typing import Any

from ..http import Response

TSG = "Please see troubleshooting guide, available here: https://aka.ms/oe-tsg#error-"


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details or [], "additionalInfo": []}


def arm_error(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> Response:
    return Response(status, {"error": error_body(code, message, details)})


def inferencing_bad_request(field: str, message: str) -> Response:
    """What a managed deployment PUT answers when the inferencing service refuses it (e.g. OutOfQuota):
    a 400 BadRequest whose detail embeds the service's own validation problem (seen verbatim in the wild)."""
    detail = {
        "errors": {field: [message]},
        "type": "https://tools.ietf.org/html/rfc7231#section-6.5.1",
        "title": "One or more validation errors occurred.",
        "status": 400,
        "traceId": "00-3eb668e879d9273d87790a81c78c020f-ad804ab26cffa0ce-01",
    }
    return arm_error(
        400,
        "BadRequest",
        "The request is invalid.",
        [
            {
                "code": "InferencingClientCreateDeploymentFailed",
                "message": f"InferencingClient HttpRequest error, error detail: {json.dumps(detail)}",
            }
        ],
    )


def out_of_quota(sku: str, subscription: str, usage: int, limit: int, needed: int) -> Response:
    return inferencing_bad_request(
        "VmSize",
        f"Not enough quota available for {sku} in SubscriptionId {subscription}. Current usage/limit: "
        f"{usage}/{limit}. Additional needed: {needed} {TSG}outofquota",
    )


def unsupported_sku(sku: str, supported: list[str]) -> Response:
    # Unverified wording; the field and the envelope are the inferencing service's.
    return inferencing_bad_request(
        "VmSize",
        f"Not supported VmSize {sku} for managed online deployments. Supported VM sizes: "
        f"{', '.join(supported)}. See https://learn.microsoft.com/azure/machine-learning/"
        "reference-managed-online-endpoints-vm-sku-list",
    )


def retired_sku(sku: str, retired_on: str) -> Response:
    # Unverified wording: Azure refuses a retired size ("no longer available and can't be provisioned").
    return inferencing_bad_request(
        "VmSize",
        f"VmSize {sku} was retired on {retired_on} and can no longer be provisioned. Choose a current size "
        "from https://learn.microsoft.com/azure/machine-learning/reference-managed-online-endpoints-vm-sku-list",
    )


def conflict(kind: str, name: str, state: str) -> Response:
    # Unverified wording; Azure answers 409 while an operation on the same resource is in progress.
    return arm_error(
        409,
        "Conflict",
        f"There is already an operation in progress on {kind} '{name}' (provisioning state {state}). "
        "Wait for it to complete and try again.",
    )


def not_found(kind: str, name: str) -> Response:
    return arm_error(
        404,
        "UserError",
        f"Resource '{name}' of type {kind} was not found.",
        [{"code": "NotFound", "message": f"{kind} {name} does not exist."}],
    )


def image_build_failure(env_name: str, env_version: str, log_uri: str) -> dict[str, Any]:
    return error_body(
        "ImageBuildFailure",
        "Image build failed. Check Environment Build Log in Workspace or Workspace storage for potential "
        f"failures. Environment info: Name: {env_name}, Version: {env_version}, Build log may be available "
        "at "
        f"{log_uri} {TSG}imagebuildfailure",
    )


def container_crashed(reason: str) -> dict[str, Any]:
    """The scoring container exited, or the kubelet killed it: ResourceNotReady."""
    return error_body(
        "ResourceNotReady",
        f"User container has crashed or terminated: {reason}. {TSG}resourcenotready",
    )


def deployment_timeout(minutes: int) -> dict[str, Any]:
    # Unverified wording and code.
    return error_body(
        "DeploymentTimeout",
        f"The deployment did not become ready within {minutes} minutes: the container did not answer its "
        f"readiness probe. Check the logs of the inference-server container. {TSG}resourcenotready",
    )


def canceled() -> dict[str, Any]:
    return error_body("OperationCanceled", f"The operation was canceled. {TSG}operationcanceled")


def model_download_failed(uri: str) -> dict[str, Any]:
    return error_body(
        "BadArgument",
        f"Unable to download user model: no blob at {uri}. {TSG}badargument",
    )
