"""Keys (masked, revealed, regenerated), replica logs and test scoring."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import Schema

from api.auth import require_deployer
from api.errors import InvalidInput
from api.routes.clusters import IdempotencyKey
from api.routes.deployments.common import (
    MAX_LOG_LINES,
    begin,
    deployment_by_ref,
    router,
)
from api.schemas import REFUSALS, OperationStarted, started
from deployments.backends import target_traits
from deployments.crypto import decrypt, mask
from deployments.forms import (
    KeyForm,
)
from deployments.models import (
    OperationKind,
)
from deployments.services import Refused
from deployments.services.deployments import (
    deployment_key_regenerate,
    deployment_key_reveal,
    deployment_logs,
)
from deployments.services.scoring_runs import MAX_IMAGE_BYTES, ImageRefused, scoring_run_create
from deployments.states import ServiceState


class KeysOut(Schema):
    primary: str  # masked: enough to tell the keys apart, never enough to use one
    secondary: str


class KeyIn(Schema):
    key: str  # primary | secondary


class KeyRevealed(Schema):
    key: str
    secret: str


def _key_form(payload: KeyIn, key: str = "") -> KeyForm:
    form = KeyForm({"key": payload.key.strip().capitalize(), "idempotency_key": key})
    if not form.is_valid():
        raise InvalidInput({"key": ["Choose the primary or the secondary key."]})
    return form


@router.get("/{ref}/keys", response={200: KeysOut, **REFUSALS}, summary="Its scoring keys, masked")
def key_list(request: HttpRequest, ref: str) -> dict:
    deployment = deployment_by_ref(ref)
    return {
        "primary": mask(decrypt(deployment.primary_key_encrypted)),
        "secondary": mask(decrypt(deployment.secondary_key_encrypted)),
    }


@router.post(
    "/{ref}/keys/reveal", response={200: KeyRevealed, **REFUSALS}, summary="One scoring key in full (audited)"
)
def key_reveal(request: HttpRequest, response: HttpResponse, ref: str, payload: KeyIn) -> dict:
    user = require_deployer(request)
    deployment = deployment_by_ref(ref)
    name = _key_form(payload).cleaned_data["key"]
    secret = deployment_key_reveal(user=user, deployment=deployment, key=name)
    response["Cache-Control"] = "no-store"  # a secret: not kept by any cache on the way
    return {"key": name, "secret": secret}


@router.post(
    "/{ref}/keys/regenerate",
    response={202: OperationStarted, **REFUSALS},
    summary="Replace a scoring key (202); the old one stops working once the operation has succeeded",
)
def key_regenerate(
    request: HttpRequest,
    response: HttpResponse,
    ref: str,
    payload: KeyIn,
    idempotency_key: IdempotencyKey = None,
) -> tuple[int, dict]:
    user, deployment, key, replay = begin(request, ref, idempotency_key, OperationKind.SERVICE_KEY_REGENERATE)
    if replay is not None:
        return started(response, replay)
    form = _key_form(payload, key)
    operation = deployment_key_regenerate(
        user=user, deployment=deployment, key=form.cleaned_data["key"], idempotency_key=key
    )
    return started(response, operation)


class LogsOut(Schema):
    replicas: dict[str, str]  # replica → its last lines


@router.get("/{ref}/logs", response={200: LogsOut, **REFUSALS}, summary="Each replica's last log lines")
def log_list(request: HttpRequest, ref: str, lines: int = 100) -> dict:
    if not 1 <= lines <= MAX_LOG_LINES:
        raise InvalidInput({"lines": [f"lines is 1 to {MAX_LOG_LINES}."]})
    deployment = deployment_by_ref(ref)
    logs = deployment_logs(deployment, lines=lines)
    if logs is None:
        # As the page says it: gone with the deployment, or kept by the cloud and fetched on request.
        if deployment.state == ServiceState.DELETED:
            raise Refused(f"{deployment.name} is deleted; its replicas and their logs are gone.")
        label = target_traits(deployment.cluster.backend).label
        raise Refused(
            f"{label} keeps {deployment.name}'s replica logs: they are fetched from there on request, from "
            f"the deployment's page ({reverse('deployment_detail', args=[deployment.pk])}), not read here."
        )
    return {"replicas": logs}


# --- test scoring ------------------------------------------------------------------------------------------


class ScoreOut(Schema):
    label: str
    score: float


class ScoringRunOut(Schema):
    id: int
    status: str  # ok: scores read | error: the endpoint failed or answered no scores (see error)
    http_status: int | None  # what the scoring endpoint answered; null when it could not be reached
    latency_ms: float | None
    top_classes: list[ScoreOut]
    error: str
    image_name: str
    image_format: str
    created_at: datetime


IMAGE_BODY = {"type": "string", "format": "binary"}


@router.post(
    "/{ref}/score",
    response={200: ScoringRunOut, **REFUSALS},
    summary="Score one image (the raw body) against a Healthy deployment, as its test page does",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": f"The image's bytes: JPEG or PNG, up to {MAX_IMAGE_BYTES // 2**20} MB.",
            "content": {"image/jpeg": {"schema": IMAGE_BODY}, "image/png": {"schema": IMAGE_BODY}},
        }
    },
)
def deployment_score(request: HttpRequest, ref: str, image_name: str = "") -> dict:
    user = require_deployer(request)  # before a byte of the body is read, as the page
    deployment = deployment_by_ref(ref)
    content_type = request.content_type or ""
    if not (content_type.startswith("image/") or content_type == "application/octet-stream"):
        raise InvalidInput(
            {"image": ["Send the image itself as the body, with Content-Type image/jpeg or image/png."]}
        )
    too_large = InvalidInput(
        {"image": [f"The image is over {MAX_IMAGE_BYTES // 2**20} MB; nothing was sent."]}  # the page's words
    )
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
        raise too_large  # said before a byte is read
    # Read from the stream, not request.body: that refuses anything over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB).
    image = request.read(MAX_IMAGE_BYTES + 1)
    if len(image) > MAX_IMAGE_BYTES:
        raise too_large
    try:
        run = scoring_run_create(user=user, deployment=deployment, image=image, image_name=image_name)
    except ImageRefused as exc:
        raise InvalidInput({"image": [str(exc)]}) from None
    return {
        "id": run.pk,
        "status": "error" if run.error else "ok",
        "http_status": run.status_code,
        "latency_ms": run.latency_ms,
        "top_classes": [{"label": top["label"], "score": top["probability"]} for top in run.top_classes],
        "error": run.error,
        "image_name": run.image_name,
        "image_format": run.image_format,
        "created_at": run.created_at,
    }
